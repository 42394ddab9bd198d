"""The per-connection ICE seams: loopback-only host candidates and SO_RCVBUF on the ICE sockets, and
connect() returning once the check list completed."""

from __future__ import annotations

import asyncio
import socket

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from clasp_fast.ice import (
    LOOPBACK_ONLY,
    MAX_DATAGRAM,
    ice_sockets,
    install_gathering_policy,
    install_prompt_connect,
    is_loopback,
    receive_buffer_size,
)

ORIGINAL_GATHER = aioice.ice.Connection.gather_candidates
ORIGINAL_HOST_ADDRESSES = aioice.ice.get_host_addresses


def _rmem_max() -> int:
    with open("/proc/sys/net/core/rmem_max") as handle:
        return int(handle.read())


def _candidate_hosts(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def _gathered_pc(**policy) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("probe")
    offer = await pc.createOffer()
    install_gathering_policy(pc.sctp.transport.transport.iceGatherer._connection, **policy)
    await pc.setLocalDescription(offer)
    return pc


async def test_host_candidates_restricted_to_loopback() -> None:
    pc = await _gathered_pc(host_addresses=list(LOOPBACK_ONLY), udp_receive_buffer=None)
    try:
        hosts = _candidate_hosts(pc.localDescription.sdp)
        assert hosts == ["127.0.0.1"]
        for sock in ice_sockets(pc.sctp.transport.transport.iceGatherer._connection):
            assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        await pc.close()


async def test_receive_buffer_is_enlarged_and_reads_back() -> None:
    wanted = min(2 * 1024 * 1024, _rmem_max())
    pc = await _gathered_pc(host_addresses=["127.0.0.1"], udp_receive_buffer=wanted)
    try:
        sockets = ice_sockets(pc.sctp.transport.transport.iceGatherer._connection)
        assert sockets
        for sock in sockets:
            # Linux reports twice the granted size (the kernel's bookkeeping overhead).
            assert receive_buffer_size(sock) >= wanted
            assert sock.type == socket.SOCK_DGRAM
    finally:
        await pc.close()


async def test_no_receive_buffer_keeps_aioice_size() -> None:
    pc = await _gathered_pc(host_addresses=["127.0.0.1"], udp_receive_buffer=None)
    try:
        for sock in ice_sockets(pc.sctp.transport.transport.iceGatherer._connection):
            assert receive_buffer_size(sock) < 4 * 1024 * 1024
    finally:
        await pc.close()


async def test_ice_transports_read_into_64_kib_and_a_largest_datagram_arrives_whole() -> None:
    pc = await _gathered_pc(host_addresses=["127.0.0.1"], udp_receive_buffer=None)
    stock = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stock.createDataChannel("probe")
    await stock.setLocalDescription(await stock.createOffer())
    try:
        protocols = pc.sctp.transport.transport.iceGatherer._connection._protocols
        assert protocols
        for protocol in protocols:
            assert protocol.transport.max_size == MAX_DATAGRAM  # asyncio's own default: 256 KiB
        for protocol in stock.sctp.transport.transport.iceGatherer._connection._protocols:
            assert protocol.transport.max_size == 256 * 1024  # a connection without the policy: untouched

        # The largest UDP payload over IPv4 still arrives in one piece.
        protocol = protocols[0]
        seen: list[int] = []
        original = protocol.datagram_received
        protocol.datagram_received = lambda data, addr: seen.append(len(data))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sender.sendto(bytes(65_507), protocol.transport.get_extra_info("sockname"))
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.01)
        finally:
            sender.close()
            protocol.datagram_received = original
        assert seen == [65_507]
    finally:
        await pc.close()
        await stock.close()


async def test_policy_is_per_connection_and_patches_nothing_global() -> None:
    pc = await _gathered_pc(host_addresses=["127.0.0.1"], udp_receive_buffer=None)
    other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    other.createDataChannel("probe")
    try:
        assert aioice.ice.Connection.gather_candidates is ORIGINAL_GATHER
        assert aioice.ice.get_host_addresses is ORIGINAL_HOST_ADDRESSES
        untouched = other.sctp.transport.transport.iceGatherer._connection
        assert "gather_candidates" not in vars(untouched)
    finally:
        await pc.close()
        await other.close()


async def test_rejects_non_ip_addresses() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("probe")
    try:
        with pytest.raises(ValueError, match="eth0"):
            install_gathering_policy(
                pc.sctp.transport.transport.iceGatherer._connection, host_addresses=["eth0"], udp_receive_buffer=None
            )
    finally:
        await pc.close()


async def test_rejects_installation_after_gathering() -> None:
    pc = await _gathered_pc(host_addresses=["127.0.0.1"], udp_receive_buffer=None)
    try:
        with pytest.raises(RuntimeError, match="already started"):
            install_gathering_policy(
                pc.sctp.transport.transport.iceGatherer._connection, host_addresses=["127.0.0.1"],
                udp_receive_buffer=None,
            )
    finally:
        await pc.close()


@pytest.mark.parametrize(
    "host, expected",
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("192.0.2.1", False), ("x.local", False)],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


async def _connection_pair(*, prompt: bool):
    """Two aioice connections on 127.0.0.1 that know each other's credentials and candidates."""
    controlling = aioice.ice.Connection(ice_controlling=True, components=1)
    controlled = aioice.ice.Connection(ice_controlling=False, components=1)
    for connection in (controlling, controlled):
        install_gathering_policy(connection, host_addresses=["127.0.0.1"], udp_receive_buffer=None)
        if prompt:
            assert install_prompt_connect(connection)
    await asyncio.gather(controlling.gather_candidates(), controlled.gather_candidates())
    for connection, other in ((controlling, controlled), (controlled, controlling)):
        connection.remote_username = other.local_username
        connection.remote_password = other.local_password
        for candidate in other.local_candidates:
            await connection.add_remote_candidate(candidate)
        await connection.add_remote_candidate(None)  # end of candidates
    return controlling, controlled


def _count_pacing_ticks(connection) -> list[int]:
    """Counts aioice's calls of ``_check_periodic``: one per 20 ms pacing tick of its connect()."""
    ticks = [0]
    original = connection._check_periodic

    def counted() -> bool:
        ticks[0] += 1
        return original()

    connection._check_periodic = counted
    return ticks


async def test_prompt_connect_returns_at_the_first_tick_and_the_link_works() -> None:
    controlling, controlled = await _connection_pair(prompt=True)
    ticks = [_count_pacing_ticks(controlling), _count_pacing_ticks(controlled)]
    try:
        await asyncio.wait_for(asyncio.gather(controlling.connect(), controlled.connect()), 5)
        # Returned when the check list completed, inside the first pacing sleep (aioice alone
        # looks again 20 ms later), with the consent checks running as aioice would start them.
        assert ticks == [[1], [1]]
        for connection in (controlling, controlled):
            assert connection._nominated
            assert connection._query_consent_task is not None and not connection._query_consent_task.done()
        await controlling.send(b"ping")
        assert await asyncio.wait_for(controlled.recv(), 5) == b"ping"
        await asyncio.sleep(0.05)
        assert ticks == [[1], [1]]  # aioice's own connect() was stopped, not left to tick on
    finally:
        await asyncio.gather(controlling.close(), controlled.close())


async def test_without_the_seam_connect_waits_for_aioices_next_tick() -> None:
    controlling, controlled = await _connection_pair(prompt=False)
    ticks = [_count_pacing_ticks(controlling), _count_pacing_ticks(controlled)]
    try:
        await asyncio.wait_for(asyncio.gather(controlling.connect(), controlled.connect()), 5)
        assert ticks[0][0] >= 2 and ticks[1][0] >= 2
    finally:
        await asyncio.gather(controlling.close(), controlled.close())


async def test_a_close_right_after_a_prompt_connect_leaves_no_task_running() -> None:
    before = asyncio.all_tasks()
    controlling, controlled = await _connection_pair(prompt=True)
    await asyncio.wait_for(asyncio.gather(controlling.connect(), controlled.connect()), 5)
    await asyncio.gather(controlling.close(), controlled.close())
    await asyncio.sleep(0)
    assert {task for task in asyncio.all_tasks() - before if not task.done()} == set()


async def test_a_failed_connect_still_raises_from_a_prompt_connect() -> None:
    # No remote candidate and none to come: aioice's connect() fails, and so does the prompt one.
    connection = aioice.ice.Connection(ice_controlling=True, components=1)
    install_gathering_policy(connection, host_addresses=["127.0.0.1"], udp_receive_buffer=None)
    assert install_prompt_connect(connection)
    await connection.gather_candidates()
    connection.remote_username, connection.remote_password = "user", "password"
    await connection.add_remote_candidate(None)
    try:
        with pytest.raises(ConnectionError, match="ICE negotiation failed"):
            await asyncio.wait_for(connection.connect(), 5)
    finally:
        await connection.close()


async def test_prompt_connect_needs_its_seams() -> None:
    connection = aioice.ice.Connection(ice_controlling=True, components=1)
    del connection._query_consent_task  # (an aioice without this attribute)
    assert install_prompt_connect(connection) is False
    assert "connect" not in vars(connection)

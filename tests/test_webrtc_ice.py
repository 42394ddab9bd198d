"""The per-connection ICE gathering seam: loopback-only host candidates and SO_RCVBUF on the ICE sockets."""

from __future__ import annotations

import socket

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from clasp_fast.ice import (
    LOOPBACK_ONLY,
    ice_sockets,
    install_gathering_policy,
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

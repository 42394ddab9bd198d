"""clasp_fast.udp_batch on loopback: every send strategy with every receive strategy keeps order and
datagram boundaries; the fallbacks (no batch system calls, GSO refused by the kernel, truncation)
and the asyncio reader under a real datagram transport."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from clasp_fast import udp_batch
from clasp_fast.udp_batch import BatchReader, UdpBatchSocket, supported_strategies

SO_NO_CHECK = 11  # Linux: send UDP without checksums, which makes the kernel refuse GSO

# Runs of equal sizes (GSO groups), a shorter datagram ending a run, single bytes, the largest
# datagram a receive slot holds, and more than one sendmmsg chunk (256) in total.
SIZES = [1200] * 70 + [500] + [1200] * 3 + [1, 1, 2] + [2048, 2048, 100] + [1189] * 200 + [7]


def _datagrams(sizes=SIZES) -> list[bytes]:
    return [i.to_bytes(4, "big") * (size // 4) + bytes(size % 4) for i, size in enumerate(sizes)]


def _pair(family=socket.AF_INET, host="127.0.0.1"):
    sender = socket.socket(family, socket.SOCK_DGRAM)
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    for sock in (sender, receiver):
        sock.bind((host, 0))
        sock.setblocking(False)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    return sender, receiver


def _receive_all(batch_socket: UdpBatchSocket, count: int, *, sentinel: bytes | None = None) -> list:
    """Everything up to ``count`` datagrams (or the sentinel), bounded in time."""
    received = []
    poll_for = 2.0
    import select
    while len(received) < count:
        ready, _, _ = select.select([batch_socket.sock], [], [], poll_for)
        if not ready:
            break
        received += batch_socket.receive_batch()
        if sentinel is not None and received and received[-1][0] == sentinel:
            break
    return received


def _strategy_pairs():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send, receive = supported_strategies(probe)
    probe.close()
    return [(s, r) for s in send for r in receive]


@pytest.mark.parametrize("send, receive", _strategy_pairs())
def test_every_strategy_pair_keeps_order_and_boundaries(send, receive):
    sender, receiver = _pair()
    with sender, receiver:
        out = UdpBatchSocket(sender, send=send)
        into = UdpBatchSocket(receiver, receive=receive)
        assert (out.send_strategy, into.receive_strategy) == (send, receive)
        datagrams = _datagrams()
        assert out.send_batch(datagrams, receiver.getsockname()) == len(datagrams)
        received = _receive_all(into, len(datagrams))
        assert [data for data, _ in received] == datagrams
        assert {address for _, address in received} == {sender.getsockname()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="batch system calls are Linux-only")
def test_linux_offers_batching_and_auto_picks_the_best():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        send, receive = supported_strategies(sock)
        assert send[-2:] == ("sendmmsg", "sendto") and receive[-2:] == ("recvmmsg", "recvfrom")
        batch = UdpBatchSocket(sock)
        assert (batch.send_strategy, batch.receive_strategy) == (send[0], receive[0])


def test_without_batch_system_calls_auto_falls_back_to_one_call_per_datagram(monkeypatch):
    monkeypatch.setattr(udp_batch._udp, "HAVE_BATCH_SYSCALLS", False)
    sender, receiver = _pair()
    with sender, receiver:
        out, into = UdpBatchSocket(sender), UdpBatchSocket(receiver)
        assert (out.send_strategy, into.receive_strategy) == ("sendto", "recvfrom")
        with pytest.raises(OSError, match="not supported here"):
            UdpBatchSocket(sender, send="sendmmsg")
        datagrams = _datagrams([300, 1200, 1])
        assert out.send_batch(datagrams, receiver.getsockname()) == 3
        assert [data for data, _ in _receive_all(into, 3)] == datagrams


def test_unknown_strategy_is_a_clear_error():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, pytest.raises(ValueError, match="send strategy must be"):
        UdpBatchSocket(sock, send="carrier-pigeon")


@pytest.mark.skipif("gso" not in supported_strategies(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))[0],
                    reason="kernel without UDP GSO")
def test_gso_refused_by_the_kernel_falls_back_without_losing_datagrams():
    sender, receiver = _pair()
    with sender, receiver:
        sender.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        out = UdpBatchSocket(sender, send="gso")
        into = UdpBatchSocket(receiver, receive="recvmmsg")
        datagrams = _datagrams([1200] * 10 + [5] + [800] * 4)
        assert out.send_batch(datagrams, receiver.getsockname()) == len(datagrams)
        assert not out.gso_active
        assert [data for data, _ in _receive_all(into, len(datagrams))] == datagrams


@pytest.mark.skipif(not udp_batch._udp.HAVE_BATCH_SYSCALLS, reason="recvmmsg is Linux-only")
def test_a_datagram_longer_than_its_slot_is_dropped_counted_and_the_next_one_arrives():
    sender, receiver = _pair()
    with sender, receiver:
        out = UdpBatchSocket(sender, send="sendmmsg")
        into = UdpBatchSocket(receiver, receive="recvmmsg")
        sentinel = b"sentinel"
        out.send_batch([b"a" * 100, b"b" * 3000, sentinel], receiver.getsockname())
        received = [data for data, _ in _receive_all(into, 3, sentinel=sentinel)]
        assert received == [b"a" * 100, sentinel]
        assert into.truncated == 1


def test_ipv6_loopback():
    try:
        sender, receiver = _pair(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    with sender, receiver:
        out, into = UdpBatchSocket(sender), UdpBatchSocket(receiver)
        datagrams = _datagrams([1200] * 5 + [3])
        assert out.send_batch(datagrams, receiver.getsockname()) == len(datagrams)
        received = _receive_all(into, len(datagrams))
        assert [data for data, _ in received] == datagrams
        assert received[0][1][:2] == sender.getsockname()[:2]


async def test_batch_reader_under_an_asyncio_datagram_transport():
    loop = asyncio.get_running_loop()
    plain: list[bytes] = []

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            plain.append(data)

    transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    batches: list[list] = []
    done = asyncio.Event()
    datagrams = _datagrams([1200] * 150 + [9])

    def on_datagrams(batch):
        batches.append(batch)
        if batch[-1][0] == datagrams[-1]:
            done.set()

    reader = BatchReader(transport, on_datagrams)
    try:
        out = UdpBatchSocket(sender)
        assert out.send_batch(datagrams, sock.getsockname()) == len(datagrams)
        await asyncio.wait_for(done.wait(), 5)
        assert [data for batch in batches for data, _ in batch] == datagrams
        assert plain == []
        if reader.socket.receive_strategy != "recvfrom":
            assert len(batches) < len(datagrams)  # many datagrams per wake-up
    finally:
        reader.close()
    # Reading is the transport's again: a datagram reaches the protocol one at a time.
    sender.sendto(b"back to asyncio", sock.getsockname())
    for _ in range(100):
        if plain:
            break
        await asyncio.sleep(0.01)
    assert plain == [b"back to asyncio"]
    sender.close()
    transport.close()


async def test_batch_readers_under_aioice_keep_stun_answered_and_data_flowing():
    """The batch readers as the data plane uses them, hooked by the test: every ICE socket of two real aiortc peers
    is read in batches; DTLS goes to the ICE connection, everything else to aioice's STUN handling."""
    from tests.sctp_pair import close_pair, connect_pair

    offerer, answerer, (local,), (remote,) = await connect_pair(False, False, [{"label": "data"}])
    readers = []
    try:
        for pc in (offerer, answerer):
            connection = pc.sctp.transport.transport._connection
            for protocol in connection._protocols:
                def on_datagrams(batch, protocol=protocol, connection=connection):
                    component = protocol.local_candidate.component
                    for data, address in batch:
                        if 19 < data[0] < 64:
                            connection.data_received(data, component)
                        else:
                            protocol.datagram_received(data, address)

                readers.append(BatchReader(protocol.transport, on_datagrams))

        # A consent check (what aioice sends every few seconds), answered through the readers.
        for pc in (offerer, answerer):
            connection = pc.sctp.transport.transport._connection
            pair = connection._nominated[1]
            response, _ = await asyncio.wait_for(pair.protocol.request(
                connection.build_request(pair, nominate=False), pair.remote_addr,
                integrity_key=connection.remote_password.encode("utf8"), retransmissions=0), 5)
            assert response.message_class.name == "RESPONSE"

        messages = [bytes([i % 256]) * size for i, size in enumerate([10, 1200, 70_000, 3] * 10)]
        received: list = []
        done = asyncio.Event()

        @remote.on("message")
        def on_message(message) -> None:
            received.append(message)
            if len(received) == len(messages):
                done.set()

        for message in messages:
            local.send(message)
        await asyncio.wait_for(done.wait(), 20)
        assert received == messages
        batches = sum(reader.batches for reader in readers)
        datagrams = sum(reader.socket.datagrams_received for reader in readers)
        assert 0 < batches < datagrams  # several datagrams per wake-up
    finally:
        for reader in readers:
            reader.close()
        await close_pair(offerer, answerer)

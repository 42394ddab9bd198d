"""The data plane under the fast SCTP path (clasp_fast.fast_path.DataPlane) on real aiortc peers:
the compiled DTLS record layer taking the records over, batched UDP I/O, larger packets between
clasp_fast peers, faults below DTLS, replayed and wrong-epoch records, close_notify both ways, a
close in the middle of a transfer, and the fallbacks (OpenSSL's records, aiortc's SCTP)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiortc import RTCSctpTransport

from clasp_fast import dtls_records, fast_path, sctp
from clasp_fast.dtls_records import parse_records
from tests.sctp_pair import DatagramFaults, close_pair, connect_pair, nominated, wait_until
from tests.test_sctp_transport import Collector, numbered

CHANNELS = [{"label": "r"}]


def plane(pc) -> fast_path.DataPlane:
    assert pc.sctp.data_plane is not None
    return pc.sctp.data_plane


def loop_reads_in_batches() -> bool:
    """Whether the data plane reads the ICE sockets itself on the running loop: asyncio's can pause
    a datagram transport's reading; uvloop's cannot, so the loop keeps reading (tests/on_uvloop)."""
    return not type(asyncio.get_running_loop()).__module__.startswith("uvloop")


async def exchange(local, remote, messages: list[bytes], timeout: float = 30) -> None:
    """Send ``messages`` both ways at once; assert each side got all of them, in order."""
    at_remote, at_local = Collector(remote, len(messages)), Collector(local, len(messages))
    for message in messages:
        local.send(message)
        remote.send(message)
    try:
        await asyncio.wait_for(asyncio.gather(at_remote.done.wait(), at_local.done.wait()), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"{len(at_remote.messages)} and {len(at_local.messages)} of {len(messages)} "
                             "arrived") from None
    assert at_remote.messages == messages and at_local.messages == messages


async def test_two_clasp_fast_peers_take_the_records_over_and_send_large_packets_both_ways():
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    try:
        for pc in (o, a):
            await wait_until(lambda pc=pc: plane(pc).layer is not None, 5)
            assert plane(pc).takeover_refused is None
            assert pc.sctp.max_packet == sctp.LARGE_PACKET_LENGTH  # loopback carries 16 KiB records
            assert f"a={sctp.SDP_MAX_PACKET_ATTRIBUTE}:{sctp.LARGE_PACKET_LENGTH}" in pc.localDescription.sdp
        sizes = [1, 1200, 16_000, 60_000, 200_000, 7] * 5
        await exchange(local, remote, [bytes([i % 256]) * size for i, size in enumerate(sizes)])
        for pc in (o, a):
            stats = plane(pc).stats()
            assert stats["dtls"] == "compiled" and stats["records_received"] > 50
            assert stats["bad_mac"] == stats["replayed"] == stats["wrong_epoch"] == stats["malformed"] == 0
            # Many datagrams per system call, both ways (received: where the loop lets go of the sockets).
            assert stats["datagrams_sent"] > stats["send_calls"]
            assert plane(pc).reads_sockets == loop_reads_in_batches()
            if plane(pc).reads_sockets:
                assert stats["datagrams_received"] > stats["batches_received"]
            else:
                assert stats["datagrams_received"] == stats["batches_received"] == 0
            transport_stats = list(pc.sctp.transport._get_stats().values())[0]
            assert transport_stats.packetsReceived >= stats["records_received"]
    finally:
        await close_pair(o, a)


async def test_records_sealed_by_cryptography_when_evp_is_unusable(monkeypatch):
    # Packets are sealed in place only with the EVP backend; otherwise each is built, then protected.
    monkeypatch.setattr(dtls_records, "evp_status", lambda: (False, "switched off by the test"))
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    try:
        for pc in (o, a):
            await wait_until(lambda pc=pc: plane(pc).layer is not None, 5)
            assert plane(pc).stats()["backend"] == "python-aead"
        await exchange(local, remote, [bytes([i]) * size for i, size in enumerate([1, 1200, 60_000, 7] * 3)])
        for pc in (o, a):
            stats = plane(pc).stats()
            assert stats["records_sent"] > 12 and stats["bad_mac"] == 0
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast_answerer", [False, True], ids=["fast-to-stock", "fast-to-fast"])
async def test_reliable_data_survives_loss_duplication_and_reordering_below_dtls(fast_answerer):
    o, a, (local,), (remote,) = await connect_pair(True, fast_answerer, CHANNELS)
    faults = [DatagramFaults(o, seed=11, loss=0.03, duplicate=0.05, reorder=0.05, limit=3000),
              DatagramFaults(a, seed=12, loss=0.03, duplicate=0.05, reorder=0.05, limit=3000)]
    try:
        await exchange(local, remote, [numbered(i, 32 if i % 4 else 20_000) for i in range(600)], 60)
        assert all(f.dropped and f.duplicated and f.reordered for f in faults)
        # Duplicated datagrams never reach SCTP twice: the replay window of the records they carry
        # (compiled layer, or OpenSSL's for the stock peer) drops them.
        layer = plane(o).layer
        assert layer.stats()["replayed"] >= faults[1].duplicated
        if fast_answerer:
            assert plane(a).layer.stats()["replayed"] >= faults[0].duplicated
    finally:
        await close_pair(o, a)


async def test_stun_consent_checks_are_answered_while_the_data_plane_reads_the_sockets():
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    try:
        for pc in (o, a):
            assert plane(pc).reads_sockets == loop_reads_in_batches()
            connection, pair = pc.sctp.transport.transport._connection, nominated(pc)
            request = connection.build_request(pair, nominate=False)
            response, _ = await asyncio.wait_for(pair.protocol.request(
                request, pair.remote_addr, integrity_key=connection.remote_password.encode(),
                retransmissions=0), 5)
            assert response.message_class.name == "RESPONSE"
        await exchange(local, remote, [b"after the checks"])
    finally:
        await close_pair(o, a)


async def test_replayed_and_wrong_epoch_records_are_dropped_and_counted():
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    try:
        await wait_until(lambda: plane(o).layer is not None and plane(a).layer is not None, 5)
        sent: list[bytes] = []
        pair = nominated(o)

        async def recording(data: bytes, address) -> None:
            sent.append(data)
            pair.protocol.transport.sendto(data, address)

        pair.protocol.send_data = recording
        first = Collector(remote, 1)
        local.send(b"first")
        await asyncio.wait_for(first.done.wait(), 5)
        del pair.protocol.send_data
        application = [d for d in sent if parse_records(d)[0][0] == 23]
        assert application
        record = application[0]
        other_epoch = record[:3] + (2).to_bytes(2, "big") + record[5:]
        epoch_zero = record[:3] + (0).to_bytes(2, "big") + record[5:]
        before = plane(a).layer.stats()
        for datagram in (record, record, other_epoch, epoch_zero):  # straight onto the wire
            pair.protocol.transport.sendto(datagram, pair.remote_addr)
        sentinel = Collector(remote, 1)
        local.send(b"sentinel")
        await asyncio.wait_for(sentinel.done.wait(), 5)
        assert first.messages == [b"first", b"sentinel"]  # nothing replayed reached the channel
        after = plane(a).layer.stats()
        assert after["replayed"] - before["replayed"] == 2
        assert after["wrong_epoch"] - before["wrong_epoch"] == 2
        assert after["bad_mac"] == before["bad_mac"]
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("closer", ["offerer", "answerer"])
async def test_close_notify_from_the_layer_ends_the_peers_dtls_transport(closer):
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    try:
        await wait_until(lambda: plane(o).layer is not None and plane(a).layer is not None, 5)
        closing, other = (o, a) if closer == "offerer" else (a, o)
        other_layer = plane(other).layer
        await closing.close()
        await wait_until(lambda: other.sctp.transport.state == "closed", 5)
        assert plane(closing).layer.write_closed
        assert other_layer.peer_closed and other_layer.last_alert == (1, 0)  # warning, close_notify
        assert closing.sctp.transport.state == "closed"
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("closer", ["sender", "receiver"])
async def test_a_close_in_the_middle_of_a_bulk_transfer_ends_both_sides_cleanly(closer):
    loop = asyncio.get_running_loop()
    failures: list[dict] = []
    loop.set_exception_handler(lambda _, context: failures.append(context))
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    try:
        got = Collector(remote, 5)  # closes as soon as the fifth message is in (not after polling)
        for i in range(200):
            local.send(numbered(i, 60_000))
        await asyncio.wait_for(got.done.wait(), 10)
        closing, other = (o, a) if closer == "sender" else (a, o)
        await closing.close()
        await wait_until(lambda: other.sctp.transport.state == "closed" and other.sctp.state == "closed", 10)
        assert got.numbers() == list(range(len(got.messages)))  # in order, nothing invented
        assert len(got.messages) < 200
        assert plane(other).layer.peer_closed
        assert failures == []
    finally:
        loop.set_exception_handler(None)
        await close_pair(o, a)


@pytest.mark.parametrize("openssl_side", ["offerer", "answerer"])
async def test_a_peer_keeping_openssl_records_still_batches_and_gets_aiortc_sized_packets(openssl_side):
    off = {"fast_dtls": False} if openssl_side == "offerer" else {}
    ans = {"fast_dtls": False} if openssl_side == "answerer" else {}
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS, offerer_options=off, answerer_options=ans)
    try:
        keeping, taking = (o, a) if openssl_side == "offerer" else (a, o)
        await wait_until(lambda: plane(taking).layer is not None, 5)
        assert plane(keeping).layer is None and plane(keeping).takeover_refused == "fast_dtls is off"
        assert sctp.SDP_MAX_PACKET_ATTRIBUTE not in keeping.localDescription.sdp
        assert taking.sctp.max_packet == keeping.sctp.max_packet == sctp.MAX_PACKET_LENGTH
        await exchange(local, remote, [numbered(i, 30_000) for i in range(40)])
        assert plane(keeping).stats()["datagrams_sent"] > plane(keeping).stats()["send_calls"]
    finally:
        await close_pair(o, a)


async def test_without_udp_batching_the_records_still_take_the_short_path():
    options = {"udp_batching": False}
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS, offerer_options=options,
                                                   answerer_options=options)
    try:
        await wait_until(lambda: plane(o).layer is not None and plane(a).layer is not None, 5)
        messages = [numbered(i, 50_000) for i in range(30)]
        got = Collector(remote, len(messages))
        for message in messages:
            local.send(message)
        await asyncio.wait_for(got.done.wait(), 30)
        assert got.messages == messages
        assert plane(a).stats()["batches_received"] == 0 and plane(o).stats()["datagrams_sent"] > 0
    finally:
        await close_pair(o, a)


async def test_an_aiortc_without_a_seam_keeps_its_own_sctp_and_says_why(monkeypatch, caplog):
    # As aiortc 1.14 and 1.15 do (they lack the partial-reliability state of 1.16).
    monkeypatch.setattr(sctp, "_SCTP_STATE", sctp._SCTP_STATE + ("_state_this_aiortc_lacks",))
    monkeypatch.setattr(sctp, "_fallback_logged", set())
    with caplog.at_level(logging.WARNING, logger="clasp_fast.sctp"):
        pc = sctp.FastPeerConnection()
        try:
            pc.createDataChannel("x")
            assert type(pc.sctp) is RTCSctpTransport
        finally:
            await pc.close()
    assert "fast SCTP path is off" in caplog.text and "_state_this_aiortc_lacks" in caplog.text


def test_missing_data_plane_seams_are_named():
    class BareDtls:
        transport = None

    missing = fast_path.missing_seams(BareDtls())
    assert "_ssl" in missing and "_RTCDtlsTransport__tx_bytes" in missing
    assert any("aioice Connection" in name for name in missing)


async def test_the_record_layers_one_time_set_up_runs_before_any_takeover(monkeypatch):
    # Finding OpenSSL and the known-answer check (~7 ms once per process) run as soon as a peer
    # connection exists, while it waits for the network, not when its records are taken over.
    monkeypatch.setattr(dtls_records, "_evp_reason", None)
    pc = sctp.FastPeerConnection()
    try:
        assert dtls_records._evp_reason is None
        await asyncio.sleep(0)
        assert dtls_records._evp_reason is not None
    finally:
        await pc.close()

"""FastSctpTransport on loopback: interop with stock aiortc, faults, partial reliability, closing."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from clasp_fast import sctp
from clasp_fast.errors import TransportError
from clasp_fast.webrtc import WebRtcConfig

from tests.sctp_pair import FaultyLink, close_pair, connect_pair, wait_until

# (fast offerer, fast answerer): both fast, and each side against unmodified aiortc.
PAIRS = [(True, True), (True, False), (False, True)]
PAIR_IDS = ["fast-fast", "fast-stock", "stock-fast"]


def numbered(i: int, size: int = 32) -> bytes:
    return i.to_bytes(4, "big") + bytes(size - 4)


class Collector:
    def __init__(self, channel, expected: int) -> None:
        self.messages: list[bytes] = []
        self.expected = expected
        self.done = asyncio.Event()
        channel.on("message", self.on_message)

    def on_message(self, message) -> None:
        self.messages.append(message)
        if len(self.messages) >= self.expected:
            self.done.set()

    def numbers(self) -> list[int]:
        return [int.from_bytes(m[:4], "big") for m in self.messages]


@pytest.mark.parametrize("fast_offerer, fast_answerer", PAIRS, ids=PAIR_IDS)
async def test_interop_both_directions_in_order(fast_offerer, fast_answerer):
    o, a, (local,), (remote,) = await connect_pair(fast_offerer, fast_answerer, [dict(label="r")])
    try:
        forward, backward = Collector(remote, 3000), Collector(local, 3000)
        for i in range(3000):
            local.send(numbered(i))
            remote.send(numbered(i, 100))
        await asyncio.wait_for(asyncio.gather(forward.done.wait(), backward.done.wait()), 30)
        assert forward.numbers() == list(range(3000))
        assert backward.numbers() == list(range(3000))
        # Text and empty messages keep their data channel payload types.
        texts = Collector(remote, 3)
        for message in ("héllo", "", b""):
            local.send(message)
        await asyncio.wait_for(texts.done.wait(), 10)
        assert texts.messages == ["héllo", "", b""]
        fast = [pc.sctp for pc in (o, a) if isinstance(pc.sctp, sctp.FastSctpTransport)]
        for transport in fast:
            # Bundling: far fewer packets than chunks went out for small messages.
            assert transport.stats.packets_sent < transport.stats.data_chunks_sent + transport.stats.sacks_sent
            assert transport.stats.malformed_packets == 0
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast_offerer, fast_answerer", PAIRS, ids=PAIR_IDS)
async def test_large_messages_across_many_packets(fast_offerer, fast_answerer):
    o, a, (local,), (remote,) = await connect_pair(fast_offerer, fast_answerer, [dict(label="bulk")])
    try:
        sizes = [1159, 1160, 1161, 65536, 200_000, 7]
        payloads = [bytes([n % 251]) * n for n in sizes]
        got = Collector(remote, len(payloads))
        for payload in payloads:
            local.send(payload)
        await asyncio.wait_for(got.done.wait(), 30)
        assert got.messages == payloads
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("answerer_fast", [True, False], ids=["to-fast", "to-stock"])
async def test_bundled_packets_stay_within_the_packet_limit(answerer_fast):
    # Toward a clasp_fast peer on loopback (it advertises a=x-clasp-max-sctp-packet and the route
    # carries 64 KiB) packets grow to one DTLS record's plaintext; toward aiortc they keep its size.
    o, a, (local,), (remote,) = await connect_pair(True, answerer_fast, [dict(label="r")])
    limit = sctp.LARGE_PACKET_LENGTH if answerer_fast else sctp.MAX_PACKET_LENGTH
    await wait_until(lambda: o.sctp.max_packet == limit)
    sizes: list[int] = []
    dtls = o.sctp.transport
    send = dtls._send_data

    async def recording(data: bytes) -> None:
        sizes.append(len(data))
        await send(data)

    dtls._send_data = recording
    try:
        got = Collector(remote, 2000)
        for i in range(2000):
            local.send(numbered(i, 4 + i % 700))
        await asyncio.wait_for(got.done.wait(), 30)
        assert max(sizes) <= limit
        assert max(sizes) > limit - 720  # full packets: a chunk holds at most 704 bytes of user data here
        assert o.sctp.max_packet == limit
        assert len(sizes) < 2000 // 2  # several chunks per packet
    finally:
        await close_pair(o, a)


FAULTS = [
    dict(seed=1, loss=0.05),
    dict(seed=2, duplicate=0.1),
    dict(seed=3, reorder=0.1),
    dict(seed=4, loss=0.03, duplicate=0.03, reorder=0.05),
]


@pytest.mark.parametrize("fault", FAULTS, ids=["loss", "duplicate", "reorder", "mixed"])
@pytest.mark.parametrize("fast_offerer, fast_answerer", PAIRS, ids=PAIR_IDS)
async def test_reliable_channel_delivers_everything_in_order_despite_faults(fast_offerer, fast_answerer, fault):
    o, a, (local,), (remote,) = await connect_pair(fast_offerer, fast_answerer, [dict(label="r")])
    links = [FaultyLink(o, limit=600, **fault), FaultyLink(a, limit=600, **{**fault, "seed": fault["seed"] + 100})]
    try:
        count = 1500
        got = Collector(remote, count)
        for i in range(count):
            local.send(numbered(i, 32 if i % 3 else 2500))  # some messages span several packets
        await asyncio.wait_for(got.done.wait(), 40)
        assert got.numbers() == list(range(count))
        assert sum(link.dropped + link.duplicated + link.reordered for link in links) > 0
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize(
    "options",
    [dict(ordered=False, maxRetransmits=0), dict(ordered=True, maxRetransmits=0),
     dict(ordered=False, maxPacketLifeTime=50)],
    ids=["unordered-rexmit0", "ordered-rexmit0", "unordered-lifetime"],
)
@pytest.mark.parametrize("fast_offerer, fast_answerer", PAIRS, ids=PAIR_IDS)
async def test_unreliable_channel_never_stalls_under_loss(fast_offerer, fast_answerer, options):
    o, a, (local,), (remote,) = await connect_pair(fast_offerer, fast_answerer, [dict(label="u", **options)])
    # Loss on the sender only, for its first 400 packets, then a clean link.
    link = FaultyLink(o, seed=7, loss=0.2, reorder=0.05, limit=400)
    try:
        got = Collector(remote, 10**9)
        for round_ in range(4):
            for i in range(300):
                local.send(numbered(round_ * 300 + i, 600))
            await asyncio.sleep(0.05)
        # Once the link is clean, new messages get through promptly: nothing waits for lost data.
        assert link.seen > link.limit or link.dropped > 0
        link.limit = min(link.limit, link.seen)  # (large packets between fast peers: fewer than 400)
        marker = Collector(remote, 1)
        tail_start = len(got.messages)
        for i in range(20):
            local.send(numbered(10_000 + i, 600))
        await asyncio.wait_for(marker.done.wait(), 5)
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline and 10_019 not in got.numbers()[tail_start:]:
            await asyncio.sleep(0.01)
        numbers = got.numbers()
        assert 10_019 in numbers
        assert len(numbers) == len(set(numbers))  # no duplicates delivered
        if options["ordered"]:
            assert numbers == sorted(numbers)
        assert link.dropped > 0
        if isinstance(o.sctp, sctp.FastSctpTransport):
            # Abandoned chunks were skipped with FORWARD-TSN and the peer acknowledged them all.
            deadline = asyncio.get_running_loop().time() + 5
            while o.sctp._sent_queue and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            assert not o.sctp._sent_queue
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast_offerer, fast_answerer", PAIRS, ids=PAIR_IDS)
async def test_closing_a_channel_mid_transfer_delivers_what_was_sent(fast_offerer, fast_answerer):
    o, a, (local, other), (remote, remote_other) = await connect_pair(
        fast_offerer, fast_answerer, [dict(label="r"), dict(label="other")]
    )
    try:
        closed = asyncio.Event()
        remote.on("close", closed.set)
        got = Collector(remote, 500)
        for i in range(500):
            local.send(numbered(i, 2000))
        local.close()
        await asyncio.wait_for(asyncio.gather(got.done.wait(), closed.wait()), 30)
        assert got.numbers() == list(range(500))
        # The association goes on: the other channel still carries data.
        after = Collector(remote_other, 1)
        other.send(b"still here")
        await asyncio.wait_for(after.done.wait(), 10)
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast_offerer, fast_answerer", PAIRS, ids=PAIR_IDS)
async def test_closing_the_connection_mid_transfer(fast_offerer, fast_answerer):
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    o, a, (local,), (remote,) = await connect_pair(fast_offerer, fast_answerer, [dict(label="r")])
    try:
        closed = asyncio.Event()
        remote.on("close", closed.set)
        # Close once the transfer is under way (not after a fixed time: a fast path may have moved
        # all of it by then).
        got = Collector(remote, 100)
        for i in range(5000):
            local.send(numbered(i, 3000))
        await asyncio.wait_for(got.done.wait(), 15)
        await o.close()
        await asyncio.wait_for(closed.wait(), 15)
        numbers = got.numbers()
        assert numbers == list(range(len(numbers)))  # a prefix, in order
        assert 100 <= len(numbers) < 5000
        await asyncio.sleep(0.1)
        assert [e for e in errors if "clasp_fast" in str(e.get("message"))] == []
    finally:
        await close_pair(o, a)
        loop.set_exception_handler(previous)


async def test_switch_off_gives_stock_aiortc():
    assert sctp.peer_connection_class(False) is RTCPeerConnection
    assert sctp.peer_connection_class(True) is sctp.FastPeerConnection
    assert WebRtcConfig().fast_sctp is True
    assert WebRtcConfig(fast_sctp=False).fast_sctp is False


async def test_stock_connections_in_the_same_process_are_untouched():
    o, a, _, _ = await connect_pair(True, False, [dict(label="r")])
    try:
        plain = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            plain.createDataChannel("x")
            assert type(plain.sctp) is sctp.RTCSctpTransport
        finally:
            await plain.close()
    finally:
        await close_pair(o, a)


def test_untested_aiortc_versions_fail_loudly():
    sctp.check_aiortc_version(sctp.TESTED_AIORTC_VERSIONS[0])
    with pytest.raises(TransportError, match="aiortc 1.17.0 is installed.*fast_sctp=False") as info:
        sctp.check_aiortc_version("1.17.0")
    assert info.value.step == "sctp"


def test_adopt_refuses_a_started_transport():
    class Started:
        state = "connecting"
    with pytest.raises(TypeError):
        sctp.FastSctpTransport.adopt(Started())  # type: ignore[arg-type]


async def test_sacks_are_delayed_under_load_but_a_lone_message_is_acknowledged_promptly():
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        got = Collector(remote, 40)
        for i in range(40):
            local.send(numbered(i, 60_000))  # about 2,000 full packets
        await asyncio.wait_for(got.done.wait(), 30)
        receiver = a.sctp.stats
        full_packets = 40 * 60_000 // o.sctp.user_data_max  # 2,000 of aiortc's size, 150 large ones
        assert receiver.packets_received > 0.75 * full_packets
        assert receiver.sacks_sent < 0.7 * receiver.packets_received  # at most one SACK per two packets

        # A lone message: delivered and acknowledged without waiting for a second packet. Had its SACK
        # waited, only the sender's T3 timer (RTO at least 1 s) would end the wait, by retransmitting.
        lone = Collector(remote, 1)
        loop = asyncio.get_running_loop()
        retransmissions = o.sctp.stats.retransmissions
        sacks = receiver.sacks_sent
        local.send(b"lone")
        await asyncio.wait_for(lone.done.wait(), 5)
        deadline = loop.time() + 5
        while o.sctp._sent_queue and loop.time() < deadline:
            await asyncio.sleep(0.001)
        assert not o.sctp._sent_queue
        assert o.sctp.stats.retransmissions == retransmissions
        assert receiver.sacks_sent > sacks
    finally:
        await close_pair(o, a)


async def test_dtls_counters_still_count_datagrams_on_the_short_receive_path():
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        before = list(a.sctp.transport._get_stats().values())[0].packetsReceived
        packets_before = a.sctp.stats.packets_received
        got = Collector(remote, 200)
        for i in range(200):
            local.send(numbered(i, 1000))
        await asyncio.wait_for(got.done.wait(), 10)
        after = list(a.sctp.transport._get_stats().values())[0].packetsReceived
        packets = a.sctp.stats.packets_received - packets_before
        assert packets >= 200 * 1000 // sctp.LARGE_PACKET_LENGTH
        assert after - before >= packets  # one datagram per SCTP packet
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast", [True, False])
async def test_webrtc_transport_follows_the_switch(fast):
    from tests.test_webrtc import connected, loopback

    async with connected(loopback(fast_sctp=fast), loopback(fast_sctp=fast)) as (a, b, _, _):
        assert isinstance(a.peer_connection.sctp, sctp.FastSctpTransport) is fast
        assert isinstance(b.peer_connection.sctp, sctp.FastSctpTransport) is fast
        from clasp_fast.messages import Set

        for i in range(50):
            await a.sender.send(Set(address="/switch", value=i))
        received = []

        async def take_50() -> None:
            async for message in b.receiver:
                received.append(message.value)
                if len(received) == 50:
                    return

        await asyncio.wait_for(take_50(), 10)
        assert received == list(range(50))


async def test_malformed_packets_are_counted_and_dropped_and_the_association_goes_on():
    from clasp_fast import _sctp
    from google_crc32c import value as crc32c

    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        transport = a.sctp
        tag = transport._local_verification_tag
        header = (5000).to_bytes(2, "big") * 2 + tag.to_bytes(4, "big")
        overlong = header + bytes(4) + b"\x00\x03\x04\x00" + bytes(12)  # DATA chunk claiming 1,024 bytes
        overlong = overlong[:8] + crc32c(overlong).to_bytes(4, "little") + overlong[12:]
        bad_crc = _sctp.build_packet(5000, 5000, tag, b"", [_sctp.DataChunk(3, 1, 0, 0, 53, b"x")])[:-1] + b"\xff"
        for packet in (b"", b"\x00" * 11, overlong, bad_crc):
            await transport._handle_data(packet)
        assert transport.stats.malformed_packets == 4
        got = Collector(remote, 10)
        for i in range(10):
            local.send(numbered(i))
        await asyncio.wait_for(got.done.wait(), 10)
        assert got.numbers() == list(range(10))
    finally:
        await close_pair(o, a)

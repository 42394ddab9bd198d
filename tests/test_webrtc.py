"""WebRtcTransport over real aiortc peer connections on loopback, signaled in memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from aiortc import InvalidStateError, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from clasp_fast.codec import decode, decode_frame, encode
from clasp_fast.messages import (
    Ack,
    Announce,
    Bundle,
    Error,
    FederationSync,
    Get,
    Hello,
    Param,
    Ping,
    Pong,
    Publish,
    Query,
    Replay,
    Result,
    Set,
    SignalInfo,
    Snapshot,
    Subscribe,
    Sync,
    Unsubscribe,
    Welcome,
)
from clasp_fast.errors import DecodeError, SignalingError, TransportError
from clasp_fast.ice import install_gathering_policy, is_loopback
from clasp_fast.sctp import FastSctpTransport, missing_sctp_seams
from clasp_fast.signaling import InMemorySignaling, parse_signal
from clasp_fast.webrtc import (
    RELIABLE_LABEL,
    UNRELIABLE_LABEL,
    ChannelSpec,
    WebRtcConfig,
    WebRtcTransport,
    parse_candidate,
)

from tests.sctp_pair import wait_until


def loopback(**options) -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], **options)


def _other_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@contextlib.asynccontextmanager
async def connected(config_a: WebRtcConfig | None = None, config_b: WebRtcConfig | None = None):
    """Two transports connected through an in-memory signaling pair; closed (and checked) afterwards."""
    before = _other_tasks()
    sig_a, sig_b = InMemorySignaling.pair("peer-a", "peer-b")
    (send_a, _), (send_b, _) = await asyncio.wait_for(
        asyncio.gather(
            WebRtcTransport.connect(config_a or loopback(), sig_a, peer="peer-b"),
            WebRtcTransport.connect(config_b or loopback(), sig_b, role="answerer"),
        ),
        10,
    )
    a, b = send_a.transport, send_b.transport
    try:
        yield a, b, sig_a, sig_b
    finally:
        await a.close()
        await b.close()
        await asyncio.sleep(0)
        assert _other_tasks() - before == set()


async def _drain(receiver) -> list:
    return [m async for m in receiver]


async def _collect(receiver, count: int, timeout: float = 5.0) -> list:
    out = []

    async def run():
        async for message in receiver:
            out.append(message)
            if len(out) == count:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        pass
    return out


def every_message_type() -> list:
    info = SignalInfo(address="/ns/a", signal_type="param")
    return [
        Hello(name="peer"),
        Welcome(session="s-1", name="router", features=["param", "event"], time=12345),
        Announce(namespace="/ns", signals=[info]),
        FederationSync(op=1, patterns=["/ns/**"]),
        Subscribe(id=7, pattern="/ns/*"),
        Unsubscribe(id=7),
        Publish(address="/ns/e", signal="event", value={"k": [1, "two", None]}),
        Set(address="/ns/a", value=0.5, revision=3),
        Get(address="/ns/a"),
        Snapshot(params=[Param(address="/ns/a", value=1, revision=1)]),
        Replay(pattern="/ns/**", limit=10),
        Bundle(messages=[Set(address="/ns/b", value=True)]),
        Sync(t1=1000),
        Ping(),
        Pong(),
        Ack(address="/ns/a", revision=3),
        Error(code=404, message="not found", address="/ns/x"),
        Query(pattern="/ns/**"),
        Result(signals=[info]),
    ]


def _signals(sig: InMemorySignaling) -> list[dict]:
    return [decode(frame).value for frame in sig.sent_frames]


async def test_connects_on_loopback_with_both_channels_and_batching_negotiated() -> None:
    async with connected() as (a, b, sig_a, sig_b):
        for t in (a, b):
            channels = t.channels
            assert channels[UNRELIABLE_LABEL].readyState == "open"
            assert channels[RELIABLE_LABEL].readyState == "open"
            assert channels[UNRELIABLE_LABEL].ordered is False
            assert channels[UNRELIABLE_LABEL].maxRetransmits == 0
            assert channels[RELIABLE_LABEL].ordered is True
            assert channels[RELIABLE_LABEL].maxRetransmits is None
            assert t.batching
            assert t.state == "connected"
            sdp_hosts = [
                line.split()[4] for line in t.peer_connection.localDescription.sdp.splitlines()
                if line.startswith("a=candidate:")
            ]
            assert sdp_hosts and all(is_loopback(h) for h in sdp_hosts)
            pair = t.selected_candidate_pair()
            # The remote shows up as peer-reflexive when its checks beat its trickled candidate.
            assert pair is not None and pair.local_type == "host" and pair.remote_type in ("host", "prflx")
            assert is_loopback(pair.local_address[0]) and is_loopback(pair.remote_address[0])
        # Signals follow docs/protocol.md §10.3: the offer and answer carry features, candidates are JSON strings.
        sent_a, sent_b = _signals(sig_a), _signals(sig_b)
        offer = next(s for s in sent_a if s["type"] == "offer")
        answer = next(s for s in sent_b if s["type"] == "answer")
        assert set(offer) == {"type", "from", "sdp", "correlation_id", "features"}
        assert "batch" in offer["features"] and "batch" in answer["features"]
        assert answer["correlation_id"] == offer["correlation_id"] == a.correlation_id == b.correlation_id
        assert offer["correlation_id"].startswith("peer-a-peer-b-")
        assert "a=candidate" not in offer["sdp"]  # taken before gathering; candidates trickle
        candidates = [s for s in sent_a + sent_b if s["type"] == "ice_candidate"]
        assert candidates
        for signal in candidates:
            init = json.loads(signal["candidate"])
            assert list(init) == ["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"]
            assert is_loopback(parse_candidate(signal["candidate"]).ip)
        assert any(s["type"] == "connected" for s in sent_a) and any(s["type"] == "connected" for s in sent_b)


@pytest.mark.parametrize("direction", ["a_to_b", "b_to_a"])
async def test_every_message_type_crosses(direction: str) -> None:
    async with connected() as (a, b, _, _):
        src, dst = (a, b) if direction == "a_to_b" else (b, a)
        messages = every_message_type()
        for message in messages:
            await src.sender.send(message, reliable=True)
        received = await _collect(dst.receiver, len(messages))
        assert received == [decode(encode(m)) for m in messages]
        assert dst.stats().messages_received == len(messages)


async def test_qos_routing_fire_unreliable_confirm_commit_reliable() -> None:
    async with connected() as (a, _, _, _):
        assert a.channel_for(Publish(address="/s", signal="stream", samples=[1.0])) == UNRELIABLE_LABEL
        assert a.channel_for(Publish(address="/g", signal="gesture", id=1, phase="move")) == UNRELIABLE_LABEL
        assert a.channel_for(Set(address="/a", value=1)) == RELIABLE_LABEL
        assert a.channel_for(Publish(address="/e", signal="event", value=1)) == RELIABLE_LABEL
        assert a.channel_for(Bundle(messages=[])) == RELIABLE_LABEL
        assert a.channel_for(Set(address="/a", value=1), reliable=False) == UNRELIABLE_LABEL
        assert a.channel_for(Ping(), qos=2) == RELIABLE_LABEL
        assert a.channel_for(encode(Set(address="/a", value=1))) == RELIABLE_LABEL
        assert a.channel_for(encode(Set(address="/a", value=1), qos=0)) == UNRELIABLE_LABEL


async def test_fire_messages_arrive_over_the_unreliable_channel() -> None:
    async with connected() as (a, b, _, _):
        seen_labels = []
        b.channels[UNRELIABLE_LABEL].on("message", lambda data: seen_labels.append(UNRELIABLE_LABEL))
        message = Publish(address="/s/x", signal="stream", value=1.5)
        await a.sender.send(message)
        assert await _collect(b.receiver, 1) == [decode(encode(message))]
        assert seen_labels == [UNRELIABLE_LABEL]


async def test_order_kept_on_the_reliable_channel_and_frames_are_batched() -> None:
    async with connected() as (a, b, _, _):
        count = 3000
        for i in range(count):
            await a.sender.send(Set(address="/order", value=i))
        received = await _collect(b.receiver, count, timeout=10)
        assert [m.value for m in received] == list(range(count))
        stats = a.stats()
        assert stats.messages_sent == count
        assert stats.datachannel_messages_sent < count // 5  # many frames per DataChannel message
        assert b.stats().bytes_received == stats.bytes_sent


async def test_pre_encoded_frames_are_sent_as_is() -> None:
    async with connected() as (a, b, _, _):
        frame = encode(Set(address="/f", value="frame"), timestamp=77)
        await a.sender.send(frame)
        await a.sender.send(bytearray(frame))
        assert len(await _collect(b.receiver, 2)) == 2
        with pytest.raises(Exception, match="exactly one complete frame"):
            await a.sender.send(frame + b"\x00")


async def _send_with_drops(a: WebRtcTransport, b: WebRtcTransport, *, reliable: bool) -> list[int]:
    """Send 50 one-frame messages; the 10 in the middle lose their datagram once (sender side)."""
    pair = a.ice_connection()._nominated[1]
    protocol = pair.protocol
    original = protocol.send_data
    dropping = False

    def send_data(data, addr):
        # Only the DTLS application records (content type 23) carry DataChannel data.
        if dropping and data[:1] == b"\x17":
            return None
        return original(data, addr)

    protocol.send_data = send_data
    try:
        for i in range(50):
            dropping = 20 <= i < 30
            await a.sender.send(Publish(address="/drop", signal="stream", value=i), reliable=reliable)
            await asyncio.sleep(0.003)
        dropping = False
        got = await _collect(b.receiver, 50, timeout=3.0 if reliable else 1.0)
    finally:
        protocol.send_data = original
    return [m.value for m in got]


async def test_unreliable_channel_drops_rather_than_delays() -> None:
    # close_timeout: abandoned chunks wait for a FORWARD-TSN acknowledgement that close need not await.
    config = loopback(batching=False, close_timeout=0.3)
    async with connected(config, loopback(batching=False)) as (a, b, _, _):
        values = await _send_with_drops(a, b, reliable=False)
        lost = set(range(50)) - set(values)
        assert lost and lost <= set(range(20, 30))  # only what was dropped is missing
        assert set(range(30, 50)) <= set(values)  # later messages did not wait for the lost ones
        await asyncio.sleep(0.3)
        assert b.receiver._queue.qsize() == 0  # nothing lost came late


async def test_reliable_channel_retransmits_and_keeps_order_under_the_same_drops() -> None:
    async with connected(loopback(batching=False), loopback(batching=False)) as (a, b, _, _):
        assert await _send_with_drops(a, b, reliable=True) == list(range(50))


async def reference_answerer(signaling: InMemorySignaling, received: list[bytes], ready: asyncio.Event):
    """An answerer the way the Rust reference peer behaves: no features, one frame per message."""
    offer = None
    async for signal in signaling:
        if signal["type"] == "offer":
            offer = signal
            break
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels = {}

    @pc.on("datachannel")
    def on_datachannel(dc):
        channels[dc.label] = dc
        dc.on("message", received.append)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
    install_gathering_policy(pc.sctp.transport.transport.iceGatherer._connection, host_addresses=["127.0.0.1"],
                             udp_receive_buffer=None)
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    cid = offer["correlation_id"]
    await signaling.send_signal(offer["from"], {"type": "answer", "sdp": answer.sdp, "correlation_id": cid})
    for c in pc.sctp.transport.transport.iceGatherer.getLocalCandidates():
        line = json.dumps({"candidate": "candidate:" + __import__("aiortc").sdp.candidate_to_sdp(c), "sdpMid": "0",
                           "sdpMLineIndex": 0, "usernameFragment": None})
        await signaling.send_signal(offer["from"], {"type": "ice_candidate", "candidate": line, "correlation_id": cid})

    async def apply_candidates():
        async for signal in signaling:
            if signal["type"] == "ice_candidate":
                await pc.addIceCandidate(parse_candidate(signal["candidate"]))

    task = asyncio.ensure_future(apply_candidates())
    deadline = time.monotonic() + 10
    while RELIABLE_LABEL not in channels or channels[RELIABLE_LABEL].readyState != "open":
        if time.monotonic() > deadline:
            task.cancel()
            await pc.close()
            raise AssertionError("the reference answerer's reliable channel never opened")
        await asyncio.sleep(0.01)
    ready.set()
    return pc, channels, task


async def test_peer_without_features_gets_one_frame_per_message_and_may_send_them() -> None:
    sig_a, sig_b = InMemorySignaling.pair("peer-a", "peer-b")
    received: list[bytes] = []
    ready = asyncio.Event()
    ref_task = asyncio.ensure_future(reference_answerer(sig_b, received, ready))
    try:
        sender, receiver = await asyncio.wait_for(WebRtcTransport.connect(loopback(), sig_a, peer="peer-b"), 10)
    except BaseException:
        ref_task.cancel()
        await asyncio.gather(ref_task, return_exceptions=True)
        raise
    pc, channels, pump = await asyncio.wait_for(ref_task, 15)
    try:
        assert not sender.transport.batching
        messages = [Set(address="/ref", value=i) for i in range(200)]
        for message in messages:
            await sender.send(message)
        deadline = time.monotonic() + 5
        while len(received) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(received) == 200
        for data, message in zip(received, messages, strict=True):
            assert decode_frame(data).size == len(data)  # exactly one frame, nothing after it
            assert data == encode(message)
        for i in range(5):
            channels[RELIABLE_LABEL].send(encode(Set(address="/from-ref", value=i)))
        assert [m.value for m in await _collect(receiver, 5)] == list(range(5))
    finally:
        await sender.transport.close()
        pump.cancel()
        await pc.close()


async def test_flush_at_close_delivers_everything_pending() -> None:
    async with connected() as (a, b, _, _):
        count = 500
        for i in range(count):
            a.sender.send_nowait(Set(address="/close", value=i))
        assert a.stats().datachannel_messages_sent < count  # still pending in the batcher
        await a.close()
        received = await asyncio.wait_for(_drain(b.receiver), 10)  # ends when b sees the disconnect
        assert [m.value for m in received] == list(range(count))
        await b.wait_closed()
        assert b.close_reason == "User requested disconnect"


async def test_malformed_frame_inside_a_batch_is_reported_and_skipped() -> None:
    async with connected() as (a, b, _, _):
        errors = []
        b.receiver.on_error(errors.append)
        good1, good2 = encode(Set(address="/m", value=1)), encode(Set(address="/m", value=2))
        bad = bytearray(encode(Set(address="/m", value=9)))
        bad[4] = 0x7F  # intact header, unknown message type
        a.channels[RELIABLE_LABEL].send(good1 + bytes(bad) + good2)
        assert [m.value for m in await _collect(b.receiver, 2)] == [1, 2]
        assert len(errors) == 1 and isinstance(errors[0], DecodeError)
        # The offset is inside the DataChannel message: the bad frame's type byte.
        assert errors[0].offset == len(good1) + 4 and errors[0].field == "type"
        a.channels[RELIABLE_LABEL].send("text is not CLASP")
        await a.sender.send(Set(address="/m", value=3))
        assert [m.value for m in await _collect(b.receiver, 1)] == [3]  # the connection survives
        assert len(errors) == 2 and b.stats().decode_errors == 2
        assert b.state == "connected"


async def test_offer_never_answered_times_out_naming_peer_and_step() -> None:
    before = _other_tasks()
    sig_a, _silent = InMemorySignaling.pair("peer-a", "peer-b")
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        await WebRtcTransport.connect(loopback(connection_timeout=0.5), sig_a, peer="peer-b")
    assert time.monotonic() - started < 3
    assert info.value.peer == "peer-b" and info.value.step == "answer"
    assert "peer-b" in str(info.value) and "answer" in str(info.value)
    await asyncio.sleep(0)
    assert _other_tasks() - before == set()


async def test_an_offer_without_a_data_channel_section_is_refused() -> None:
    """An offer for audio only (no SCTP): TransportError at the offer step, nothing left running."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    offer = await pc.createOffer()  # no setLocalDescription: nothing is gathered
    await pc.close()
    sig_a, sig_b = InMemorySignaling.pair("peer-a", "peer-b")
    signal = {"type": "offer", "sdp": offer.sdp, "correlation_id": "peer-a-peer-b-audio", "from": "peer-a"}
    before = _other_tasks()
    with pytest.raises(TransportError, match="no data channel section") as info:
        await WebRtcTransport.connect(loopback(connection_timeout=5), sig_b, "peer-a", role="answerer", offer=signal)
    assert info.value.peer == "peer-a" and info.value.step == "offer"
    await asyncio.sleep(0)
    assert _other_tasks() - before == set()


async def test_offer_to_unknown_session_fails_at_the_signal_step() -> None:
    sig_a, _ = InMemorySignaling.pair("peer-a", "peer-b")
    with pytest.raises(SignalingError) as info:
        await WebRtcTransport.connect(loopback(connection_timeout=2), sig_a, peer="nobody")
    assert info.value.peer == "nobody" and info.value.step == "signal"


async def test_signals_with_wrong_correlation_id_are_ignored() -> None:
    sig_a, sig_b = InMemorySignaling.pair("peer-a", "peer-b")
    offerer = asyncio.ensure_future(WebRtcTransport.connect(loopback(), sig_a, peer="peer-b"))
    offer = parse_signal(await asyncio.wait_for(sig_b.recv_signal(), 5))
    assert offer is not None and offer["type"] == "offer"
    # An answer and a candidate from the right peer but for another connection: both must be ignored.
    await sig_b.send_signal("peer-a", {"type": "answer", "sdp": "v=0\r\nbroken",
                                       "correlation_id": "peer-a-peer-b-other"})
    await sig_b.send_signal(
        "peer-a", {"type": "ice_candidate", "candidate": '{"candidate":"garbage"}', "correlation_id": "wrong"}
    )
    await sig_b.send_signal("peer-a", {"type": "connected", "correlation_id": "wrong"})
    sender_b, receiver_b = await asyncio.wait_for(
        WebRtcTransport.connect(loopback(), sig_b, role="answerer", offer=offer), 10
    )
    sender_a, receiver_a = await asyncio.wait_for(offerer, 10)
    try:
        assert sender_a.transport.stats().ignored_signals >= 3
        await sender_a.send(Set(address="/cid", value=1))
        assert [m.value for m in await _collect(receiver_b, 1)] == [1]
        # "disconnected" is honoured whatever its correlation id (docs/protocol.md §10.4).
        await sig_b.send_signal("peer-a", {"type": "disconnected", "correlation_id": "any", "reason": "bye"})
        await asyncio.wait_for(sender_a.transport.wait_closed(), 5)
        assert sender_a.transport.close_reason == "bye"
    finally:
        await sender_a.transport.close()
        await sender_b.transport.close()


async def test_extra_channel_per_address_prefix() -> None:
    spec = ChannelSpec("clasp-stream", prefix="/stream", ordered=False, max_retransmits=2)
    async with connected(loopback(extra_channels=[spec])) as (a, b, _, _):
        dc = b.channels["clasp-stream"]
        assert dc.readyState == "open" and dc.ordered is False and dc.maxRetransmits == 2
        for t in (a, b):
            assert t.channel_for(Set(address="/stream/x", value=1)) == "clasp-stream"
            assert t.channel_for(Set(address="/stream", value=1)) == "clasp-stream"
            assert t.channel_for(Set(address="/streamer", value=1)) == RELIABLE_LABEL
        arrived = []
        b.channels["clasp-stream"].on("message", arrived.append)
        await a.sender.send(Set(address="/stream/x", value=5))
        assert [m.value for m in await _collect(b.receiver, 1)] == [5]
        assert len(arrived) == 1
        await b.sender.send(Set(address="/stream/y", value=6))
        assert [m.value for m in await _collect(a.receiver, 1)] == [6]


async def test_messages_sent_counts_every_channel_and_every_way_of_sending() -> None:
    spec = ChannelSpec("clasp-stream", prefix="/stream")
    async with connected(loopback(extra_channels=[spec])) as (a, b, _, _):
        await a.sender.send(Set(address="/count", value=1), reliable=True)
        await a.sender.send(Publish(address="/count", signal="stream", value=2.0))  # the unreliable channel
        await a.sender.send(Set(address="/stream/x", value=3))
        a.sender.send_nowait(encode(Set(address="/count", value=4)), reliable=True)
        assert await a.sender.send_many([Set(address="/count", value=i) for i in range(5)], reliable=False) == 5
        assert a.stats().messages_sent == 9
        assert len(await _collect(b.receiver, 9)) == 9
        sent, received = a.stats(), b.stats()
        assert received.messages_received == 9
        assert received.bytes_received == sent.bytes_sent > 9 * 4
        assert received.datachannel_messages_received == sent.datachannel_messages_sent
        # The peer opens a second channel under the extra channel's label: it takes the label's
        # place in the table, and what the first one sent still counts.
        replaced = a._channels["clasp-stream"]
        b._pc.createDataChannel("clasp-stream", protocol="/stream")
        await wait_until(lambda: a._channels["clasp-stream"] is not replaced, timeout=5)
        assert replaced.messages_sent == 1 and replaced.bytes_sent > 0
        after = a.stats()
        assert (after.messages_sent, after.bytes_sent, after.datachannel_messages_sent) == (
            9, sent.bytes_sent, sent.datachannel_messages_sent)


async def test_partially_reliable_channel_by_lifetime() -> None:
    spec = ChannelSpec("clasp-media", prefix="/media", max_packet_life_time=50)
    async with connected(loopback(extra_channels=[spec])) as (a, b, _, _):
        assert b.channels["clasp-media"].maxPacketLifeTime == 50
        await a.sender.send(Set(address="/media/v", value=1))
        assert [m.value for m in await _collect(b.receiver, 1)] == [1]


async def test_backpressure_fail_fast_above_high_water_mark() -> None:
    async with connected(loopback(high_water_mark=4096, backpressure="fail")) as (a, _, _, _):
        big = Set(address="/bp", value=b"z" * 1000)
        with pytest.raises(TransportError) as info:
            for _ in range(1000):
                await a.sender.send(big)  # never yields while there is room, so nothing drains
        assert info.value.step == "send" and "high-water" in str(info.value)


async def test_send_nowait_refuses_above_the_high_water_mark_and_keeps_what_it_took() -> None:
    async with connected(loopback(high_water_mark=4096)) as (a, b, _, _):
        taken = 0
        with pytest.raises(TransportError, match="above its high-water mark") as info:
            for i in range(1000):
                a.sender.send_nowait(Set(address="/bp", value=i.to_bytes(4, "big") + b"n" * 996), reliable=True)
                taken += 1  # never yields, so nothing drains
        assert info.value.step == "send" and 0 < taken < 10
        received = await _collect(b.receiver, taken)
        assert [int.from_bytes(m.value[:4], "big") for m in received] == list(range(taken))


async def test_backpressure_wait_keeps_memory_bounded() -> None:
    config = loopback(high_water_mark=8192, max_batch_size=4096)
    async with connected(config) as (a, b, _, _):
        count = 600
        peak = 0
        channel = a._channels[RELIABLE_LABEL]
        for i in range(count):
            await a.sender.send(Set(address="/bp", value=i.to_bytes(4, "big") + b"w" * 996))
            peak = max(peak, channel.buffered())
        assert peak <= 8192 + 4096 + 1100
        received = await _collect(b.receiver, count, timeout=15)
        assert len(received) == count


async def test_state_events_rtt_and_clean_close() -> None:
    states: list[str] = []
    config = loopback(keepalive_interval=0.05)
    async with connected(config, loopback(keepalive_interval=0.05)) as (a, b, _, _):
        a.add_state_listener(states.append)
        deadline = time.monotonic() + 3
        while a.stats().rtt is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        rtt = a.stats().rtt
        assert rtt is not None and 0 < rtt < 1
        await a.close()
        await asyncio.wait_for(b.wait_closed(), 5)
        assert b.close_reason == "User requested disconnect"
        assert await asyncio.wait_for(_drain(b.receiver), 5) == []
        with pytest.raises(TransportError):
            await a.sender.send(Set(address="/closed", value=1))
        with pytest.raises(TransportError, match="connection is closed"):
            await a.sender.send(Set(address="/closed", value=1), reliable=True)
    assert states == ["closing", "closed"]


async def test_callback_form_of_the_receiver() -> None:
    async with connected() as (a, b, _, _):
        got: list = []
        b.receiver.on_message(got.append)
        for i in range(10):
            await a.sender.send(Set(address="/cb", value=i))
        deadline = time.monotonic() + 5
        while len(got) < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert [m.value for m in got] == list(range(10))


def test_ice_servers_accept_urls_and_rtciceserver_maps() -> None:
    config = WebRtcConfig(
        ice_servers=["stun:stun.example.org:3478",
                     {"urls": ["turn:turn.example.org"], "username": "u", "credential": "p"}]
    )
    servers = config.rtc_configuration().iceServers
    assert servers[0].urls == "stun:stun.example.org:3478"
    assert servers[1].username == "u" and servers[1].credential == "p"
    assert WebRtcConfig().rtc_configuration().iceServers == []  # never aiortc's public STUN default
    with pytest.raises(ValueError):
        WebRtcConfig(ice_servers=[{"username": "x"}]).rtc_configuration()


def test_reset_delay_is_checked_against_close_timeout() -> None:
    assert WebRtcConfig(reset_delay=0).reset_delay == 0
    with pytest.raises(ValueError, match="reset_delay"):
        WebRtcConfig(reset_delay=-0.1)
    with pytest.raises(ValueError, match="reset_delay"):
        WebRtcConfig(reset_delay=2.0, close_timeout=2.0)


def test_parse_candidate_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_candidate("not json")
    with pytest.raises(ValueError):
        parse_candidate('{"sdpMid":"0"}')
    with pytest.raises(ValueError):
        parse_candidate('{"candidate":"candidate:1 1 udp"}')
    c = parse_candidate('{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",'
                        '"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}')
    assert (c.ip, c.port, c.type, c.sdpMid) == ("127.0.0.1", 50000, "host", "0")


async def test_close_during_set_up_ends_start_promptly() -> None:
    before = _other_tasks()
    sig_a, _silent = InMemorySignaling.pair("peer-a", "peer-b")
    # Promptly: well before the 60 s connection timeout (a generous bound for a busy machine).
    transport = WebRtcTransport(loopback(connection_timeout=60), sig_a, "peer-b")
    starting = asyncio.ensure_future(transport.start())
    await asyncio.sleep(0.2)
    await asyncio.wait_for(transport.close(), 10)
    with pytest.raises(TransportError) as info:
        await asyncio.wait_for(starting, 10)
    assert info.value.step == "answer" and "closed during set-up" in str(info.value)
    assert transport.state == "closed"
    await asyncio.sleep(0)
    assert _other_tasks() - before == set()


async def test_unreliable_batches_fit_one_sctp_packet() -> None:
    async with connected() as (a, b, _, _):
        sizes: list[int] = []
        b.channels[UNRELIABLE_LABEL].on("message", lambda data: sizes.append(len(data)))
        for i in range(400):
            a.sender.send_nowait(Publish(address="/fire", signal="stream", value=i))
        deadline = time.monotonic() + 3
        while b.receiver._queue.qsize() < 400 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        received = b.receiver._queue.qsize()
        assert received > 0 and sizes and max(sizes) <= 1160
        assert len(sizes) < received  # several frames per DataChannel message


async def _until_connected(transport: WebRtcTransport) -> None:
    while transport.state != "connected":
        await asyncio.sleep(0.01)


async def test_p2p_layer_style_dispatch_with_handle_signal() -> None:
    """A caller that reads the signaling channel itself feeds transports through handle_signal()."""
    sig_a, sig_b = InMemorySignaling.pair("peer-a", "peer-b")
    offerer = WebRtcTransport(loopback(), sig_a, "peer-b", pump_signals=False)
    states: list[str] = []
    offerer.add_state_listener(states.append)
    answerers: list[WebRtcTransport] = []

    async def dispatch(signaling, handle) -> None:
        async for signal in signaling:
            handle(signal)

    def on_b(signal) -> None:
        if signal["type"] == "offer":
            transport = WebRtcTransport(loopback(), sig_b, signal["from"], pump_signals=False)
            answerers.append(transport)
            asyncio.ensure_future(transport.start(signal))
        elif answerers:
            answerers[-1].handle_signal(signal)

    pumps = [asyncio.ensure_future(dispatch(sig_a, offerer.handle_signal)),
             asyncio.ensure_future(dispatch(sig_b, on_b))]
    try:
        await asyncio.wait_for(offerer.start(), 10)
        answerer = answerers[0]
        await asyncio.wait_for(_until_connected(answerer), 5)
        await offerer.sender.send(Set(address="/dispatch", value=1))
        assert [m.value for m in await _collect(answerer.receiver, 1)] == [1]
        assert set(offerer.timings) >= {"offer", "answer", "reliable_open", "connected"}
        assert 0 < offerer.timings["reliable_open"] <= offerer.timings["connected"]
        await offerer.close()
        await asyncio.wait_for(answerer.wait_closed(), 5)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await offerer.close()
        for transport in answerers:
            await transport.close()
    assert states == ["connecting", "connected", "closing", "closed"]


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"backpressure": "drop"}, "backpressure"),
        ({"unreliable_batch_size": 1161}, "unreliable_batch_size"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"connection_timeout": 0}, "connection_timeout"),
        ({"keepalive_interval": 2.0, "keepalive_timeout": 1.0}, "keepalive_timeout"),
    ],
)
def test_config_rejects_bad_options(options: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        WebRtcConfig(**options)


def test_channel_spec_checks() -> None:
    assert ChannelSpec("x").reliable and not ChannelSpec("y", max_retransmits=0).reliable
    with pytest.raises(ValueError, match="not both"):
        ChannelSpec("z", max_retransmits=1, max_packet_life_time=10)
    with pytest.raises(ValueError, match="prefix"):
        ChannelSpec("z", prefix="no-slash")


@pytest.mark.parametrize("fast_sctp", [True, False], ids=["fast", "stock"])
async def test_an_unbatched_send_on_a_closed_channel_raises_invalid_state(fast_sctp) -> None:
    spec = ChannelSpec("clasp-stream", prefix="/stream")
    config = loopback(extra_channels=[spec], batching=False, fast_sctp=fast_sctp)
    async with connected(config, loopback(extra_channels=[spec], fast_sctp=fast_sctp)) as (a, b, _, _):
        await a.sender.send(Set(address="/stream/x", value=1))
        assert [m.value for m in await _collect(b.receiver, 1)] == [1]
        dc = a.channels["clasp-stream"]
        dc.close()
        assert dc.readyState in ("closing", "closed")
        with pytest.raises(InvalidStateError):
            await a.sender.send(Set(address="/stream/x", value=2))
        assert dc.bufferedAmount == 0
        await a.sender.send(Set(address="/other", value=3))  # the other channels carry on
        assert [m.value for m in await _collect(b.receiver, 1)] == [3]


@pytest.mark.parametrize("fast_sctp", [True, False], ids=["fast", "stock"])
async def test_a_batch_on_an_idle_connection_leaves_at_once_and_later_sends_are_batched(fast_sctp) -> None:
    # Nagle's rule under the fast SCTP path: with nothing queued or unacknowledged, a send's batch goes
    # on the wire within the call; what is sent while it is in flight waits and goes as one batch.
    # aiortc's own SCTP (asked for, or where this aiortc lacks a seam) keeps the flush at the next
    # loop iteration.
    config = loopback(fast_sctp=fast_sctp)
    async with connected(config, loopback(fast_sctp=fast_sctp)) as (a, b, _, _):
        sctp = a.peer_connection.sctp
        fast = isinstance(sctp, FastSctpTransport)
        assert fast == (fast_sctp and not missing_sctp_seams())
        for i in range(3):  # the connection's first messages (DCEP, keepalive) are acknowledged
            await a.sender.send(Set(address="/warm", value=i))
        assert [m.value for m in await _collect(b.receiver, 3)] == [0, 1, 2]
        if fast:
            await wait_until(sctp.idle, 5)
        before = a.stats().datachannel_messages_sent
        await a.sender.send(Set(address="/n", value=0))
        assert a.stats().datachannel_messages_sent - before == (1 if fast else 0)
        for i in range(1, 51):
            await a.sender.send(Set(address="/n", value=i))  # never waits: all in this task step
        assert a.stats().datachannel_messages_sent - before == (1 if fast else 0)
        assert [m.value for m in await _collect(b.receiver, 51)] == list(range(51))
        assert a.stats().datachannel_messages_sent - before == (2 if fast else 1)

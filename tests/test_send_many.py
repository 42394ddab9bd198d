"""``WebRtcSender.send_many`` and ``Peer.send_many``: many messages in one call, on real connections.

Real WebRtcTransports on loopback, signaled in memory (``tests.test_webrtc.connected``).
"""

from __future__ import annotations

import pytest

from clasp_fast.codec import Batcher, encode
from clasp_fast.errors import EncodeError, TransportError
from clasp_fast.messages import Publish, Set
from clasp_fast.p2p import Peer, PeerInfo
from clasp_fast.webrtc import RELIABLE_LABEL, UNRELIABLE_LABEL, WebRtcConfig, current_delivery

from tests.sctp_pair import wait_until
from tests.test_webrtc import connected, loopback


def collect(transport) -> list[tuple[object, str, int]]:
    """(message, channel label, frames in its DataChannel message) of everything ``transport`` receives."""
    seen: list[tuple[object, str, int]] = []

    def on_message(message: object) -> None:
        delivery = current_delivery()
        assert delivery is not None
        seen.append((message, delivery.channel, delivery.frames))

    transport.receiver.on_message(on_message)
    return seen


async def test_every_item_arrives_in_order_on_the_channel_asked_for_batched_together():
    async with connected() as (a, b, _, _):
        seen = collect(b)
        items = [Set(address=f"/s/{i % 7}", value=i) if i % 3 else Publish(address="/e", signal="event", value=i)
                 for i in range(3_000)]
        before = a.stats()
        assert await a.sender.send_many(items, reliable=True) == 3_000
        await wait_until(lambda: len(seen) == 3_000, 20)
        assert [(type(m), m.address, m.value) for m, _, _ in seen] == [(type(m), m.address, m.value) for m in items]
        assert {label for _, label, _ in seen} == {RELIABLE_LABEL}
        assert max(frames for _, _, frames in seen) > 1  # packed into batches
        after = a.stats()
        assert after.messages_sent - before.messages_sent == 3_000
        assert after.datachannel_messages_sent - before.datachannel_messages_sent < 3_000


async def test_without_reliable_each_item_takes_the_channel_of_its_qos():
    async with connected() as (a, b, _, _):
        seen = collect(b)
        items = []
        for i in range(200):
            items.append(Set(address="/param", value=i))  # Confirm QoS: reliable
            items.append(Publish(address="/cam/x", signal="stream", value=float(i)))  # Fire QoS: unreliable
        assert await a.sender.send_many(iter(items)) == 400  # any iterable
        await wait_until(lambda: len(seen) >= 399, 20)  # the unreliable channel may drop on a bad day
        sets = [m.value for m, label, _ in seen if label == RELIABLE_LABEL]
        streams = [m for m, label, _ in seen if label == UNRELIABLE_LABEL]
        assert sets == list(range(200))
        assert all(type(m) is Publish and m.signal == "stream" for m in streams)
        assert len(streams) >= 199


async def test_unbatched_each_item_is_its_own_datachannel_message():
    async with connected(loopback(batching=False), loopback(batching=False)) as (a, b, _, _):
        seen = collect(b)
        before = a.stats()
        await a.sender.send_many([Set(address="/u", value=i) for i in range(100)], reliable=True)
        await wait_until(lambda: len(seen) == 100, 10)
        assert [m.value for m, _, _ in seen] == list(range(100))
        assert {frames for _, _, frames in seen} == {1}
        assert a.stats().datachannel_messages_sent - before.datachannel_messages_sent == 100


async def test_frames_and_messages_mix():
    async with connected() as (a, b, _, _):
        seen = collect(b)
        items: list[object] = []
        for i in range(50):
            items.append(encode(Set(address="/f", value=i)))
            items.append(Set(address="/m", value=i))
        await a.sender.send_many(items, channel=RELIABLE_LABEL)
        await wait_until(lambda: len(seen) == 100, 10)
        assert [(m.address, m.value) for m, _, _ in seen] == [
            (address, i) for i in range(50) for address in ("/f", "/m")]


async def test_a_small_high_water_mark_makes_it_wait_and_nothing_is_lost():
    config = loopback(high_water_mark=4_096)
    async with connected(config) as (a, b, _, _):
        seen = collect(b)
        items = [Set(address="/w", value=bytes(200) + i.to_bytes(4, "big")) for i in range(5_000)]
        assert await a.sender.send_many(items, reliable=True) == 5_000
        await wait_until(lambda: len(seen) == 5_000, 30)
        assert [int.from_bytes(m.value[-4:], "big") for m, _, _ in seen] == list(range(5_000))


async def test_an_item_that_cannot_be_encoded_is_named_and_the_ones_before_it_are_sent():
    async with connected() as (a, b, _, _):
        seen = collect(b)
        items = [Set(address="/ok", value=1), Set(address="/ok", value=2), 5, Set(address="/ok", value=3)]
        with pytest.raises(EncodeError, match=r"item 2 of send_many: not a CLASP message: int"):
            await a.sender.send_many(items, reliable=True)
        with pytest.raises(EncodeError, match=r"item 1 of send_many: a frame needs a 4-byte header"):
            await a.sender.send_many([Set(address="/ok", value=4), b"S\x00"], reliable=True)
        # Routed item by item (no reliable given), the index counts across channels.
        with pytest.raises(EncodeError, match=r"item 3 of send_many"):
            await a.sender.send_many([Set(address="/ok", value=5), Publish(address="/s", signal="stream", value=1.0),
                                      Set(address="/ok", value=6), Set(address="/bad", value=object())])
        await a.sender.send_many([Set(address="/ok", value=7)], reliable=True)
        await wait_until(lambda: len([m for m, label, _ in seen if label == RELIABLE_LABEL]) == 6, 10)
        assert [m.value for m, label, _ in seen if label == RELIABLE_LABEL] == [1, 2, 4, 5, 6, 7]
        assert a.stats().messages_sent == 7


async def test_a_conflating_channel_keeps_its_rules():
    config = WebRtcConfig(host_addresses=["127.0.0.1"], conflate=["/v/**"])
    async with connected(config) as (a, b, _, _):
        seen = collect(b)
        await a.sender.send_many([Set(address=f"/v/{i % 4}", value=i) for i in range(400)]
                                 + [Set(address="/done", value=True)], reliable=True)
        await wait_until(lambda: any(m.address == "/done" for m, _, _ in seen), 20)
        latest = {}
        for m, _, _ in seen:
            latest[m.address] = m.value
        # Conflation may drop superseded values, never the last one of an address.
        assert latest == {"/v/0": 396, "/v/1": 397, "/v/2": 398, "/v/3": 399, "/done": True}


async def test_after_close_it_raises_transport_error():
    async with connected() as (a, b, _, _):
        await a.close()
        with pytest.raises(TransportError):
            await a.sender.send_many([Set(address="/x", value=1)], reliable=True)
        with pytest.raises(TransportError):
            await a.sender.send_many([Set(address="/x", value=1)])


async def test_peer_send_many_holds_the_sets_it_sends():
    async with connected() as (a, b, _, _):
        peer = Peer(a, PeerInfo(session_id="peer-b"))
        seen = collect(b)
        assert await peer.send_many([Set(address="/p/a", value=1), Publish(address="/p/e", signal="event"),
                                     Set(address="/p/b", value=2)]) == 3
        await wait_until(lambda: len(seen) == 3, 10)
        assert peer.params["/p/a"] == 1 and peer.params["/p/b"] == 2


async def test_peer_holds_only_the_sets_that_were_sent():
    async with connected() as (a, b, _, _):
        peer = Peer(a, PeerInfo(session_id="peer-b"))
        seen = collect(b)
        items = [Set(address="/q/a", value=1), Set(address="/q/bad", value=object()), Set(address="/q/c", value=3)]
        with pytest.raises(EncodeError, match="item 1 of send_many") as error:
            await peer.send_many(items)
        assert error.value.item == 1
        with pytest.raises(EncodeError):
            await peer.set("/q/d", object())
        with pytest.raises(EncodeError):
            await peer.send(Set(address="/q/e", value=object()))
        await peer.set("/q/f", 6)
        await wait_until(lambda: len(seen) == 2, 10)
        assert [(m.address, m.value) for m, _, _ in seen] == [("/q/a", 1), ("/q/f", 6)]
        # What this side holds is what the peer was sent: nothing it could not be sent.
        assert peer.params == {"/q/a": 1, "/q/f": 6}


def test_batcher_add_many_stops_at_each_ready_message():
    batcher = Batcher(100)
    items = [Set(address="/a", value=i) for i in range(20)]
    frame = len(encode(items[0]))
    ready: list[bytes] = []
    index, chunks = 0, []
    while index < len(items):
        index = batcher.add_many(items, index, -1, ready)
        assert len(ready) <= 2
        chunks.extend(ready)
        ready.clear()
    per_message = 100 // frame
    assert [len(c) for c in chunks] == [per_message * frame] * (20 // per_message - (20 % per_message == 0))
    assert batcher.pending_frames == 20 - per_message * len(chunks)
    assert b"".join(chunks) + batcher.take() == b"".join(encode(m) for m in items)
    assert Batcher(0).add_many(items, 5, -1, ready) == 6 and ready == [encode(items[5])]
    assert Batcher(0).add_many(items, 20, -1, []) == 20  # nothing left to add
    with pytest.raises(IndexError, match="start must be >= 0"):
        Batcher(0).add_many(items, -1, -1, [])

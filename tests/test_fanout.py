"""clasp_fast.fanout: one hub, several viewers over real aiortc connections on loopback.

A slow viewer is made by pausing the reading of its ICE sockets: its SCTP stops acknowledging, the
hub's DataChannel to it backs up, exactly as with a peer whose event loop is too busy to read.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from clasp_fast.codec import decode, encode
from clasp_fast.conflation import ConflationPolicy
from clasp_fast.errors import TransportError
from clasp_fast.fanout import FanoutGroup
from clasp_fast.messages import Publish, Set
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport

CONFIG = dict(host_addresses=["127.0.0.1"], keepalive_timeout=15.0)


@contextlib.asynccontextmanager
async def star(viewers: int):
    """The hub's transports and the viewers' transports, one connection per viewer."""
    pairs: list[tuple[WebRtcTransport, WebRtcTransport]] = []
    try:
        for i in range(viewers):
            hub_signaling, viewer_signaling = InMemorySignaling.pair("hub", f"viewer-{i}")
            (hub, _), (viewer, _) = await asyncio.wait_for(asyncio.gather(
                WebRtcTransport.connect(WebRtcConfig(**CONFIG), hub_signaling, peer=f"viewer-{i}"),
                WebRtcTransport.connect(WebRtcConfig(**CONFIG), viewer_signaling, role="answerer"),
            ), 15)
            pairs.append((hub.transport, viewer.transport))
        yield pairs
    finally:
        for hub, viewer in pairs:
            await hub.close()
            await viewer.close()


def set_reading(transport: WebRtcTransport, reading: bool) -> None:
    transport.pause_reading(not reading)


async def collect_until(transport: WebRtcTransport, done, timeout: float = 10.0) -> list:
    """Messages received until ``done(messages)`` is true (or the time-out)."""
    got: list = []

    async def run() -> None:
        async for message in transport.receiver:
            got.append(message)
            if done(got):
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(run(), timeout)
    return got


async def test_each_message_is_encoded_once_and_reaches_every_viewer_in_order() -> None:
    async with star(3) as pairs:
        group = FanoutGroup()
        for i, (hub, _) in enumerate(pairs):
            group.add(f"viewer-{i}", hub.sender)
        sent = []
        for i in range(300):
            cue = Publish(address="/m/cue", signal="event", value=i)
            message = Set(address=f"/m/{i % 7}", value=i) if i % 5 else cue
            group.send(message)
            sent.append(decode(encode(message)))  # as a receiver decodes it
            if i % 50 == 0:
                await asyncio.sleep(0)
        assert group.frames_encoded == 300
        for _, viewer in pairs:
            assert await collect_until(viewer, lambda got: len(got) == 300) == sent
        assert {(s.member, s.channel, s.sent, s.waiting) for s in group.stats()} == {
            (f"viewer-{i}", "clasp-reliable", 300, 0) for i in range(3)}
        group.remove("viewer-0")
        last = Set(address="/m/last", value=-1)
        group.send(last)
        for _, viewer in pairs[1:]:
            assert await collect_until(viewer, lambda got: len(got) == 1) == [last]
        assert group.members == ("viewer-1", "viewer-2")
        # viewer-0 gets nothing more: its next message is one sent to it directly.
        await pairs[0][0].sender.send(Set(address="/m/direct", value=0))
        assert await collect_until(pairs[0][1], lambda got: len(got) == 1) == [Set(address="/m/direct", value=0)]


async def test_a_stalled_viewer_gets_the_latest_values_and_every_event_without_slowing_the_others() -> None:
    async with star(3) as pairs:
        group = FanoutGroup(ConflationPolicy("/sensor/**"), max_buffered=2048)
        for i, (hub, _) in enumerate(pairs):
            group.add(f"viewer-{i}", hub.sender)
        slow = pairs[2][1]
        set_reading(slow, False)
        sent = []
        total = 8000  # well beyond what the slow viewer's SCTP window takes before it stalls (~2,600)
        for i in range(total):
            if i % 100 == 99:
                message = Publish(address="/sensor/cue", signal="event", value=i)
            else:
                message = Set(address=f"/sensor/{i % 10}", value=i)
            group.send(message)
            sent.append(decode(encode(message)))  # as a receiver decodes it
            if i % 20 == 0:
                await asyncio.sleep(0)
        # The fast viewers got everything, in order, while the slow one read nothing.
        for _, viewer in pairs[:2]:
            assert await collect_until(viewer, lambda got: len(got) == len(sent)) == sent
        lane = next(s for s in group.stats() if s.member == "viewer-2")
        assert lane.conflated > 2000 and lane.waiting <= 10 + total // 100  # one per address, and the events
        set_reading(slow, True)
        final = {m.address: m.value for m in sent if isinstance(m, Set)}
        events = [m for m in sent if isinstance(m, Publish)]

        def complete(got: list) -> bool:
            latest = {m.address: m.value for m in got if isinstance(m, Set)}
            return latest == final and sum(isinstance(m, Publish) for m in got) == len(events)

        got = await collect_until(slow, complete, timeout=15)
        assert complete(got), "the slow viewer must end with every latest value and every event"
        assert [m for m in got if isinstance(m, Publish)] == events
        for address in final:
            values = [m.value for m in got if isinstance(m, Set) and m.address == address]
            assert values == sorted(values)
        assert len(got) < len(sent)  # values in between were skipped
        assert sum(s.conflated for s in group.stats()) == len(sent) - len(got)


async def test_a_drop_member_drops_fire_messages_while_backed_up() -> None:
    async with star(2) as pairs:
        group = FanoutGroup()
        group.add("viewer-0", pairs[0][0].sender)
        group.add("viewer-1", pairs[1][0].sender, overflow="drop", max_buffered=1024)
        set_reading(pairs[1][1], False)
        for i in range(2000):
            group.send(Publish(address="/video/frame", signal="stream", value=bytes(200)))
            if i % 20 == 0:
                await asyncio.sleep(0)
        for _ in range(500):  # the fast viewer's lane empties as its channel drains
            stats = {s.member: s for s in group.stats()}
            if stats["viewer-0"].waiting == 0:
                break
            await asyncio.sleep(0.01)
        assert stats["viewer-0"].channel == "clasp" and stats["viewer-0"].sent == 2000
        assert stats["viewer-1"].dropped > 0 and stats["viewer-1"].waiting == 0
        assert stats["viewer-1"].sent + stats["viewer-1"].dropped == 2000
        set_reading(pairs[1][1], True)


async def test_a_lane_over_its_backlog_is_one_error_naming_the_peer_after_the_others_got_the_message() -> None:
    async with star(2) as pairs:
        group = FanoutGroup()
        group.add("fast", pairs[0][0].sender)
        group.add("slow", pairs[1][0].sender, max_buffered=512, max_backlog=5)
        set_reading(pairs[1][1], False)
        sent = 0
        with pytest.raises(TransportError, match="max_backlog 5") as info:
            for sent in range(1, 5000):
                group.send(Publish(address="/cue", signal="event", value=bytes(100)))
                if sent % 10 == 0:
                    await asyncio.sleep(0)
        assert info.value.peer == "slow"
        fast = next(s for s in group.stats() if s.member == "fast")
        assert fast.sent == sent  # the failing send still reached the fast viewer
        set_reading(pairs[1][1], True)


async def test_bad_members_and_options_are_refused_clearly() -> None:
    async with star(1) as pairs:
        group = FanoutGroup()
        group.add("viewer-0", pairs[0][0].sender)
        with pytest.raises(TransportError, match=r"no member named 'viewer-9' .*members: 'viewer-0'") as info:
            group.send(Set(address="/a", value=1), to=["viewer-0", "viewer-9"])
        assert info.value.peer == "viewer-9"
        assert group.frames_encoded == 0 and group.stats() == []  # nothing was sent to anyone
        with pytest.raises(ValueError, match="already"):
            group.add("viewer-0", pairs[0][0].sender)
        with pytest.raises(ValueError, match="overflow"):
            group.add("viewer-x", pairs[0][0].sender, overflow="block")
        with pytest.raises(TransportError, match="viewer-9"):
            group.remove("viewer-9")
        group.remove("viewer-0")
        assert len(group) == 0
        await pairs[0][0].close()
        with pytest.raises(TransportError, match="closed"):
            group.add("late", pairs[0][0].sender)

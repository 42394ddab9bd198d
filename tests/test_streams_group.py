"""ClaspP2P.group: encode-once fan-out to connected peers, real aiortc connections on loopback."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from clasp_fast import ClaspP2P
from clasp_fast.errors import PatternError, TransportError
from clasp_fast.messages import Publish, Set
from clasp_fast.p2p import PeerInfo, StaticDiscovery
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import WebRtcConfig

from .test_fanout import set_reading

RTC = dict(host_addresses=["127.0.0.1"], keepalive_timeout=15.0)


@contextlib.asynccontextmanager
async def hub_and_viewers(count: int, **options):
    """One hub endpoint connected to ``count`` viewer endpoints over one in-memory signaling hub;
    yields (hub, the hub's Peers, each viewer's Peer of the hub)."""
    names = [f"v{i}" for i in range(count)]
    hub_signaling = InMemorySignaling("hub")
    hub = ClaspP2P(hub_signaling, client_id="hub", rtc_config=WebRtcConfig(**RTC, **options),
                   discovery=StaticDiscovery([PeerInfo(name, name) for name in names]))
    viewers = [ClaspP2P(hub_signaling.join(name), client_id=name, rtc_config=WebRtcConfig(**RTC)) for name in names]
    endpoints = [hub, *viewers]
    try:
        for endpoint in endpoints:
            await endpoint.connect()
        peers = await asyncio.wait_for(asyncio.gather(*(hub.connect_to_peer(name) for name in names)), 30)
        incoming = await asyncio.wait_for(asyncio.gather(*(anext(aiter(v.incoming())) for v in viewers)), 10)
        yield hub, peers, incoming
    finally:
        for endpoint in endpoints:
            await endpoint.close()


def until_end(peer) -> tuple[list, asyncio.Future]:
    """Record what ``peer`` receives as (address, value); the future completes at the /end event."""
    got: list = []
    end = asyncio.get_running_loop().create_future()

    def on_value(value, address):
        got.append((address, value))
        if address == "/end" and not end.done():
            end.set_result(None)

    peer.on("/**", on_value)
    return got, end


async def test_group_sends_each_message_once_encoded_to_every_peer_in_order() -> None:
    async with hub_and_viewers(1) as (hub, _peers, incoming):
        got, done = until_end(incoming[0])
        group = hub.group(["v0"], policy=["/s/**"])
        assert group.members == ("v0",)
        for i in range(200):
            group.send(Set(address=f"/s/{i % 5}", value=i))
        group.send(Publish(address="/end", signal="event", value=1))
        group.flush()
        await asyncio.wait_for(done, 10)
        assert group.frames_encoded == 201
        assert [v for a, v in got if a.startswith("/s/")] == list(range(200))  # the link kept up: nothing conflated


async def test_group_with_an_unknown_peer_is_one_error_naming_it() -> None:
    async with hub_and_viewers(1) as (hub, _peers, _incoming):
        with pytest.raises(TransportError, match=r"no open connection to 'ghost', 'nobody'.*connected: 'v0'") as info:
            hub.group(["v0", "ghost", "nobody"])
        assert info.value.peer == "ghost"
        with pytest.raises(PatternError, match="invalid conflation pattern"):
            hub.group(["v0"], policy=["s/**"])


# Well past what a paused peer's SCTP window takes in before the link backs up (~2,600 small
# messages with the larger packets between clasp_fast peers).
SENDS = 8000


async def test_one_stalled_peer_does_not_stall_the_others_and_leaves_the_group_when_it_closes() -> None:
    async with hub_and_viewers(3) as (hub, peers, incoming):
        group = hub.group(["v0", "v1", "v2"], policy="/s/**", max_buffered=16 * 1024)
        counts = [0, 0, 0]
        ends = [asyncio.get_running_loop().create_future() for _ in range(3)]
        def counter(i: int):
            def on_value(value, address):
                counts[i] += 1
                if address == "/end" and not ends[i].done():
                    ends[i].set_result(None)
            return on_value

        for i, viewer_peer in enumerate(incoming):
            viewer_peer.on("/**", counter(i))
        set_reading(incoming[2].transport, False)  # v2 stops reading: its link backs up
        for i in range(SENDS):
            group.send(Set(address=f"/s/{i % 10}", value=i))
            if i % 100 == 0:
                await asyncio.sleep(0)
        group.send(Publish(address="/end", signal="event", value=1))
        group.flush()
        await asyncio.wait_for(asyncio.gather(ends[0], ends[1]), 20)
        assert counts[0] == counts[1] == SENDS + 1
        lane = next(s for s in group.stats() if s.member == "v2")
        assert lane.conflated > 0 and lane.waiting > 0
        set_reading(incoming[2].transport, True)
        await asyncio.wait_for(ends[2], 20)
        assert counts[2] < SENDS + 1  # it got the latest values, not the backlog
        assert group.members == ("v0", "v1", "v2")
        # A peer whose connection closes leaves the group.
        await peers[0].close()
        deadline = asyncio.get_running_loop().time() + 10
        while "v0" in group.members:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)


async def test_a_group_over_conflating_channels_hands_its_values_to_the_channel_queue() -> None:
    """The hub's channel conflates /s/** itself: the group's values wait there, replaced in place."""
    async with hub_and_viewers(1, conflate=["/s/**"]) as (hub, peers, incoming):
        got, end = until_end(incoming[0])
        group = hub.group(["v0"], policy="/s/**", max_buffered=1024 * 1024)  # the lane never holds back
        set_reading(incoming[0].transport, False)
        for i in range(SENDS):
            group.send(Set(address=f"/s/{i % 10}", value=i))
            if i % 100 == 0:
                await asyncio.sleep(0)
        group.send(Publish(address="/end", signal="event", value=1))
        group.flush()
        channel_conflated = peers[0].transport.stats().conflated
        assert channel_conflated > 0 and group.stats()[0].conflated == 0
        set_reading(incoming[0].transport, True)
        await asyncio.wait_for(end, 20)
    for k in range(10):
        values = [v for a, v in got if a == f"/s/{k}"]
        assert values == sorted(values) and values[-1] == SENDS - 10 + k
    assert len(got) == SENDS + 1 - channel_conflated

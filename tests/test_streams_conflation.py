"""Latest-value conflation wired into the transport: a conflating channel while the link is backed
up (the receiver's sockets paused, so its SCTP stops acknowledging), and a slow receiving handler
behind a ConflatingHandler. Real aiortc connections on loopback."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from clasp_fast.conflation import ConflatingHandler, ConflationPolicy
from clasp_fast.errors import PatternError
from clasp_fast.messages import Publish, Set
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import ChannelSpec, WebRtcConfig, WebRtcTransport

from .test_fanout import collect_until, set_reading


@contextlib.asynccontextmanager
async def pair(sender_config: WebRtcConfig, receiver_config: WebRtcConfig | None = None):
    sig_a, sig_b = InMemorySignaling.pair("a", "b")
    (a, _), (b, _) = await asyncio.wait_for(asyncio.gather(
        WebRtcTransport.connect(sender_config, sig_a, peer="b"),
        WebRtcTransport.connect(receiver_config or loopback(), sig_b, role="answerer"),
    ), 15)
    try:
        yield a.transport, b.transport
    finally:
        await a.transport.close()
        await b.transport.close()


def loopback(**options) -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_timeout=15.0, **options)


async def backed_up(transport: WebRtcTransport, label: str, timeout: float = 10.0) -> None:
    """Send filler until the channel ``label`` holds more than the conflation threshold in aiortc."""
    filler = Publish(address="/filler", signal="event", value=b"x" * 1000)
    deadline = asyncio.get_running_loop().time() + timeout
    while transport.channels[label].bufferedAmount <= transport.config.conflation_threshold:
        assert asyncio.get_running_loop().time() < deadline, "the channel never backed up"
        transport.sender.send_nowait(filler, channel=label)
        transport.sender.flush()
        await asyncio.sleep(0.005)


async def test_a_backed_up_channel_replaces_queued_values_and_keeps_every_event_in_order() -> None:
    async with pair(loopback(conflate=["/sensor/**"])) as (a, b):
        set_reading(b, False)
        await backed_up(a, "clasp-reliable")
        sent_events = []
        for i in range(2000):
            await a.sender.send(Set(address=f"/sensor/{i % 10}", value=i))  # never waits
            if i % 100 == 0:
                await a.sender.send(Publish(address="/cue", signal="event", value=i))
                sent_events.append(i)
            await a.sender.send(Set(address="/other", value=i))  # not opted in: every one is kept
        stats = a.stats()
        assert stats.conflated >= 1500  # most sensor values were replaced while they waited
        set_reading(b, True)
        await a.sender.send(Publish(address="/sentinel", signal="event", value=0))
        got = await collect_until(b, lambda m: m and getattr(m[-1], "address", None) == "/sentinel", 20)
    assert got and got[-1].address == "/sentinel"
    events = [m.value for m in got if m.address == "/cue"]
    assert events == sent_events
    others = [m.value for m in got if m.address == "/other"]
    assert others == list(range(2000))
    for k in range(10):
        values = [m.value for m in got if m.address == f"/sensor/{k}"]
        assert values == sorted(values) and values[-1] == 1990 + k  # in order, and the latest arrives
    sensor = sum(1 for m in got if m.address.startswith("/sensor/"))
    assert sensor == 2000 - stats.conflated


async def test_a_value_never_overtakes_an_event_to_its_own_address() -> None:
    async with pair(loopback(conflate=["/**"])) as (a, b):
        set_reading(b, False)
        await backed_up(a, "clasp-reliable")
        await a.sender.send(Set(address="/p", value=1))
        await a.sender.send(Set(address="/p", value=2))  # replaces 1
        await a.sender.send(Publish(address="/p", signal="event", value="fence"))
        await a.sender.send(Set(address="/p", value=3))  # a new slot behind the event
        await a.sender.send(Set(address="/p", value=4))  # replaces 3
        set_reading(b, True)
        await a.sender.send(Publish(address="/sentinel", signal="event", value=0))
        got = await collect_until(b, lambda m: m and getattr(m[-1], "address", None) == "/sentinel", 20)
    on_p = [m.value for m in got if m.address == "/p"]
    assert on_p == [2, "fence", 4]


async def test_without_a_policy_nothing_is_conflated_and_an_extra_channel_has_its_own() -> None:
    spec = ChannelSpec("telemetry", prefix="/t", conflate=("/t/**",))
    async with pair(loopback(extra_channels=[spec]), loopback(extra_channels=[spec])) as (a, b):
        set_reading(b, False)
        await backed_up(a, "telemetry")
        for i in range(500):
            await a.sender.send(Set(address="/t/x", value=i))
        set_reading(b, True)
        # The default channels have no policy: all 300 arrive.
        for i in range(300):
            await a.sender.send(Set(address="/plain", value=i))
        await a.sender.send(Publish(address="/t/sentinel", signal="event", value=0))
        got = await collect_until(
            b, lambda m: any(getattr(x, "address", None) == "/t/sentinel" for x in m)
            and sum(1 for x in m if getattr(x, "address", None) == "/plain") == 300, 20)
        conflated = a.stats().conflated
    assert [m.value for m in got if m.address == "/plain"] == list(range(300))
    t_values = [m.value for m in got if m.address == "/t/x"]
    assert t_values[-1] == 499 and len(t_values) == 500 - conflated and conflated > 400


async def test_close_delivers_the_latest_values_still_waiting() -> None:
    async with pair(loopback(conflate=["/s/**"])) as (a, b):
        set_reading(b, False)
        await backed_up(a, "clasp-reliable")
        for i in range(300):
            await a.sender.send(Set(address=f"/s/{i % 3}", value=i))
        assert a._channels["clasp-reliable"].waiting  # values wait in the channel's queue
        set_reading(b, True)
        await a.close()
        got = await collect_until(b, lambda m: False, 5)
    latest = {m.address: m.value for m in got if m.address.startswith("/s/")}
    assert latest == {"/s/0": 297, "/s/1": 298, "/s/2": 299}


def test_an_invalid_conflation_pattern_is_one_clear_error() -> None:
    with pytest.raises(PatternError, match=r"invalid conflation pattern.*'sensor/\*\*'"):
        WebRtcConfig(conflate=["sensor/**"])
    with pytest.raises(PatternError, match="invalid conflation pattern"):
        ChannelSpec("t", conflate=("/a//b",))
    with pytest.raises(PatternError, match="invalid conflation pattern"):
        WebRtcConfig(conflate="no-slash")


async def test_a_slow_receiving_handler_always_takes_the_latest_value() -> None:
    """The receiver takes ~1 ms per update; the sender sends 20 values per address in bursts."""
    async with pair(loopback()) as (a, b):
        handled: list = []

        async def slow(message) -> None:
            handled.append(message)
            await asyncio.sleep(0.001)

        handler = b.receiver.on_message(slow, conflate=ConflationPolicy("/sensor/**"))
        assert isinstance(handler, ConflatingHandler)
        for i in range(2000):
            a.sender.send_nowait(Set(address=f"/sensor/{i % 20}", value=i))
            if i % 200 == 199:
                a.sender.send_nowait(Publish(address="/cue", signal="event", value=i))
                await asyncio.sleep(0.002)
        a.sender.send_nowait(Publish(address="/sentinel", signal="event", value=0))
        deadline = asyncio.get_running_loop().time() + 20
        while not handled or handled[-1].address != "/sentinel":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    assert [m.value for m in handled if m.address == "/cue"] == list(range(199, 2000, 200))
    for k in range(20):
        values = [m.value for m in handled if m.address == f"/sensor/{k}"]
        assert values == sorted(values) and values[-1] == 1980 + k
    assert handler.conflated > 0
    assert handler.handled == len(handled) == 2000 + 10 + 1 - handler.conflated


async def test_a_failing_handler_is_reported_and_the_queue_goes_on() -> None:
    async with pair(loopback()) as (a, b):
        errors: list = []
        b.receiver.on_error(errors.append)
        handled: list = []

        async def handler(message) -> None:
            if message.value == 1:
                raise RuntimeError("handler failed on 1")
            handled.append(message.value)

        b.receiver.on_message(handler, conflate=ConflationPolicy("/**"))
        for i in range(3):
            await a.sender.send(Publish(address="/e", signal="event", value=i))
        deadline = asyncio.get_running_loop().time() + 10
        while handled != [0, 2]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    assert any("handler failed on 1" in str(e) for e in errors)


async def test_peer_on_with_conflate_gives_a_slow_callback_the_latest_values() -> None:
    from clasp_fast.errors import PatternError as _PatternError

    from .test_streams_clock import alice_and_bob

    async with alice_and_bob() as (alice, bob, peer):
        other = await asyncio.wait_for(anext(aiter(bob.incoming())), 5)
        taken: list = []
        cues: list = []

        async def slow(value, address) -> None:
            taken.append((address, value))
            await asyncio.sleep(0.001)

        other.on("/sensor/**", slow, conflate=True)
        other.on("/cue", lambda value, address: cues.append(value))
        with pytest.raises(_PatternError):
            other.on("/sensor//x", slow, conflate=True)
        for i in range(2000):
            await peer.set(f"/sensor/{i % 20}", i)
            if i % 400 == 399:
                await peer.emit("/cue", i)
                await asyncio.sleep(0.002)
        deadline = asyncio.get_running_loop().time() + 20
        finals = {(f"/sensor/{k}", 1980 + k) for k in range(20)}
        while len(cues) < 5 or not finals <= set(taken):
            assert asyncio.get_running_loop().time() < deadline, (len(taken), cues)
            await asyncio.sleep(0.01)
    assert cues == [399, 799, 1199, 1599, 1999]  # events took the plain path, every one
    for k in range(20):
        values = [v for a, v in taken if a == f"/sensor/{k}"]
        assert values == sorted(values) and values[-1] == 1980 + k
    assert len(taken) < 2000  # the slow callback skipped values a newer one replaced

"""Busy polling (WebRtcConfig.busy_poll): the event loop keeps polling while a connection has traffic."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from clasp_fast.messages import Set
from clasp_fast.runtime.busy_poll import NO_BUSY_POLL, BusyPoll, busy_poll_for
from clasp_fast.webrtc import WebRtcConfig
from tests.test_webrtc import _collect, connected, loopback


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("value", [-0.001, math.nan, math.inf])
def test_config_refuses_a_window_that_is_not_zero_or_positive(value: float) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        WebRtcConfig(busy_poll=value)


async def test_off_is_the_stand_in_and_never_spins() -> None:
    loop = asyncio.get_running_loop()
    assert busy_poll_for(loop, 0.0) is NO_BUSY_POLL
    NO_BUSY_POLL.touch()
    await asyncio.sleep(0.01)
    assert NO_BUSY_POLL.spins == 0
    with pytest.raises(ValueError, match="positive number of seconds"):
        BusyPoll(loop, 0.0)


async def test_spins_while_touched_and_stops_after_the_window() -> None:
    poll = BusyPoll(asyncio.get_running_loop(), 0.05)
    assert not poll.spinning
    poll.touch()
    assert poll.spinning
    before = poll.spins
    # A loop that slept in its selector would run the spin callback once or twice in 20 ms.
    await asyncio.sleep(0.02)
    assert poll.spins - before > 20
    await wait_until(lambda: not poll.spinning, what="the spinning to end after the window")
    stopped_at = poll.spins
    await asyncio.sleep(0.02)
    assert poll.spins == stopped_at  # nothing runs once the window passed

    poll.touch()  # new activity starts it again
    assert poll.spinning
    await asyncio.sleep(0.01)
    assert poll.spins > stopped_at
    poll.stop()
    assert not poll.spinning
    poll.touch()  # stopped for good
    assert not poll.spinning
    settled = poll.spins
    await asyncio.sleep(0.01)
    assert poll.spins == settled


async def test_keeps_spinning_while_activity_continues() -> None:
    poll = BusyPoll(asyncio.get_running_loop(), 0.03)
    for _ in range(10):  # touched every 10 ms for 100 ms: never idle for a whole window
        poll.touch()
        await asyncio.sleep(0.01)
        assert poll.spinning
    poll.stop()


async def test_a_connection_polls_while_messages_flow_and_stops_when_idle_or_closed() -> None:
    window = 0.05
    async with connected(loopback(busy_poll=window), loopback()) as (a, b, _, _):
        await wait_until(lambda: not a.busy_polling, what="the set-up traffic's window to pass")
        assert not b.busy_polling  # the default: off

        await a.sender.send(Set(address="/poll", value=1), reliable=True)
        await asyncio.sleep(0)  # the batch leaves at the next loop iteration
        assert a.busy_polling  # sending it started the polling
        got = await _collect(b.receiver, 1)
        assert [m.value for m in got] == [1]
        await wait_until(lambda: not a.busy_polling, what="idle for the window")

        await b.sender.send(Set(address="/poll", value=2), reliable=True)
        await wait_until(lambda: a.busy_polling, what="a received message to start it")
        assert [m.value for m in await _collect(a.receiver, 1)] == [2]
        assert a.config.busy_poll == window and not b.busy_polling


async def test_closing_stops_the_polling_whatever_is_left_of_the_window() -> None:
    async with connected(loopback(busy_poll=60.0), loopback(busy_poll=60.0)) as (a, b, _, _):
        await a.sender.send(Set(address="/poll", value=3), reliable=True)
        assert [m.value for m in await _collect(b.receiver, 1)] == [3]
        assert a.busy_polling and b.busy_polling
        await a.close()
        assert not a.busy_polling
        await wait_until(lambda: not b.busy_polling, what="the peer's close to stop it")

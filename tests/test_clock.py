"""clasp_fast.clock: the NTP-style estimator, the SYNC exchange, and two processes with a known offset."""

from __future__ import annotations

import asyncio
import json

import pytest

from clasp_fast.clock import ClockEstimator, ClockSync, PeerClock, wall_clock_us
from clasp_fast.codec import decode, encode
from clasp_fast.errors import ProtocolError
from clasp_fast.messages import Sync

from .clock_peer import attach_clock_sync, spawn_shifted_peer

RESOLUTION_US = 2  # stamps are whole µs: each of t1..t4 is up to 1 µs early


def exchange(offset: int, start: int, out_us: int, back_us: int, turnaround: int = 10) -> tuple[int, int, int, int]:
    """One exchange with a remote clock ``offset`` µs ahead and the given one-way delays."""
    t1 = start
    t2 = t1 + out_us + offset
    t3 = t2 + turnaround
    t4 = t3 - offset + back_us
    return t1, t2, t3, t4


# -- the estimator ---------------------------------------------------------------------------

def test_symmetric_delays_give_the_exact_offset_and_rtt() -> None:
    estimator = ClockEstimator()
    estimator.add_sample(*exchange(offset=5_000, start=1_000_000, out_us=200, back_us=200))
    clock = estimator.estimate()
    assert clock == PeerClock(offset_us=5_000, uncertainty_us=200, rtt_us=400, min_rtt_us=400, samples=1)
    assert clock.to_local(2_005_000) == 2_000_000
    assert clock.to_remote(2_000_000) == 2_005_000


def test_the_minimum_rtt_sample_wins_and_the_error_stays_within_its_half_rtt() -> None:
    estimator = ClockEstimator(max_drift_ppm=0)
    offset = -123_456
    delays = [(5_000, 100), (100, 9_000), (300, 250), (2_000, 2_000), (50, 4_000)]
    for i, (out, back) in enumerate(delays):
        estimator.add_sample(*exchange(offset, 1_000_000 + i * 100_000, out, back))
    clock = estimator.estimate()
    assert clock.min_rtt_us == 550 and clock.samples == 5
    assert clock.offset_us == offset + (300 - 250) / 2
    assert abs(clock.offset_us - offset) <= clock.uncertainty_us == 275
    assert clock.rtt_us == 4_050  # the latest exchange


def test_the_window_slides_so_an_old_best_sample_expires() -> None:
    estimator = ClockEstimator(window=3, max_drift_ppm=0)
    estimator.add_sample(*exchange(0, 0, 10, 10))
    for i in range(3):
        estimator.add_sample(*exchange(0, (i + 1) * 1_000, 500, 500))
    assert estimator.estimate().min_rtt_us == 1_000
    assert estimator.estimate().samples == 3


def test_drift_widens_the_uncertainty_of_an_old_sample() -> None:
    estimator = ClockEstimator(max_drift_ppm=100)
    estimator.add_sample(*exchange(0, 0, 100, 100))
    estimator.add_sample(*exchange(0, 10_000_000, 1_000, 1_000))  # 10 s later, slower
    clock = estimator.estimate()
    assert clock.min_rtt_us == 200
    assert clock.uncertainty_us == pytest.approx(100 + 10_000_000 * 100e-6, abs=1)


def test_a_stepped_clock_restarts_the_window() -> None:
    estimator = ClockEstimator(max_drift_ppm=0)
    for i in range(4):
        estimator.add_sample(*exchange(0, i * 1_000, 100, 100))
    estimator.add_sample(*exchange(50_000, 10_000, 400, 400))  # remote clock stepped 50 ms
    clock = estimator.estimate()
    assert estimator.steps == 1
    assert clock.samples == 1 and clock.offset_us == 50_000


@pytest.mark.parametrize(
    "times, field",
    [((10, 20, 30, 5), "t4"), ((10, 30, 20, 40), "t3"), ((0, 0, 100, 50), "negative round-trip"),
     ((0.5, 1, 2, 3), "t1"), ((0, None, 2, 3), "t2")],
)
def test_impossible_samples_are_refused_naming_the_field(times, field) -> None:
    estimator = ClockEstimator()
    with pytest.raises(ValueError, match=field):
        estimator.add_sample(*times)
    assert estimator.estimate() is None


def test_no_estimate_before_the_first_sample() -> None:
    estimator = ClockEstimator()
    assert estimator.estimate() is None
    with pytest.raises(LookupError, match="no SYNC sample"):
        estimator.to_local(1)
    with pytest.raises(ValueError, match="window"):
        ClockEstimator(window=0)


# -- the exchange ------------------------------------------------------------------------------

class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_a_request_is_answered_like_the_router_and_the_reply_becomes_a_sample() -> None:
    a_clock, b_clock = ManualClock(1_000_000), ManualClock(1_700_000)  # B is 700 ms ahead
    to_b: list[bytes] = []
    to_a: list[bytes] = []
    a = ClockSync(to_b.append, clock=a_clock)
    b = ClockSync(to_a.append, clock=b_clock)
    a.request()
    request = decode(to_b.pop())
    assert request == Sync(t1=1_000_000)
    a_clock.now += 150  # 150 µs on the way out
    b_clock.now += 150
    assert b.handle(request) is None
    reply = decode(to_a.pop())
    assert reply == Sync(t1=1_000_000, t2=1_700_150, t3=1_700_150)
    a_clock.now += 50  # 50 µs on the way back
    clock = a.handle(reply)
    assert clock.offset_us == 700_000 + (150 - 50) / 2 and clock.rtt_us == 200
    assert (a.requests_sent, a.samples, b.replies_sent) == (1, 1, 1)


def test_replies_to_no_outstanding_request_are_ignored_and_half_replies_refused() -> None:
    sent: list[bytes] = []
    sync = ClockSync(sent.append, clock=ManualClock(5_000))
    assert sync.handle(Sync(t1=4_000, t2=9, t3=9)) is None
    assert sync.ignored == 1 and sync.peer_clock is None and sent == []
    with pytest.raises(ProtocolError, match="only one of t2/t3"):
        sync.handle(Sync(t1=4_000, t2=9))
    sync.request()
    with pytest.raises(ProtocolError, match="t3 .* is before t2"):
        sync.handle(Sync(t1=5_000, t2=10, t3=9))
    assert sync.peer_clock is None


async def test_two_processes_with_an_injected_offset_estimate_it_within_half_the_rtt() -> None:
    shift = 2_500_000 + 1_234  # the child's clock runs 2.5 s ahead
    async with spawn_shifted_peer(shift) as (transport, process):
        sync = attach_clock_sync(transport, wall_clock_us)
        for _ in range(40):
            sync.request()
            await asyncio.sleep(0.02)
        clock = sync.peer_clock
        assert clock is not None and clock.samples >= 10
        # The guarantee: the true offset lies within half the round-trip time of the chosen sample
        # (give or take the 1 µs resolution of each of the four stamps).
        assert abs(clock.offset_us - shift) <= clock.min_rtt_us / 2 + RESOLUTION_US
        assert clock.uncertainty_us >= clock.min_rtt_us / 2
        assert abs(clock.to_local(wall_clock_us() + shift) - wall_clock_us()) < 100_000
        await transport.close()
        child = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
    # The child measured us the other way round: our clock is `shift` behind its own.
    estimate = child["estimate"]
    assert estimate is not None and child["replies_sent"] >= 10
    assert abs(estimate["offset_us"] + shift) <= estimate["min_rtt_us"] / 2 + RESOLUTION_US


async def test_the_relay_answers_sync_and_its_clock_is_estimated_over_websocket() -> None:
    from websockets.asyncio.client import connect

    from clasp_fast.messages import Hello
    from clasp_fast.relay import Relay

    behind = 750_000  # our clock runs 0.75 s behind the relay's
    async with Relay(port=0) as relay:
        async with connect(relay.url, subprotocols=["clasp"]) as ws:
            await ws.send(encode(Hello(name="clock")))
            pending: list[bytes] = []
            sync = ClockSync(pending.append, clock=lambda: wall_clock_us() - behind)
            for _ in range(20):
                sync.request()
                await ws.send(pending.pop())
                while True:  # WELCOME and SNAPSHOT come first; the relay answers the SYNC in order
                    message = decode(await asyncio.wait_for(ws.recv(), 5))
                    if isinstance(message, Sync):
                        sync.handle(message)
                        break
    clock = sync.peer_clock
    assert sync.samples == 20 and sync.ignored == 0
    assert abs(clock.offset_us - behind) <= clock.min_rtt_us / 2 + RESOLUTION_US

"""A peer's clock: offset and round-trip time estimated NTP-style from CLASP SYNC exchanges.

One exchange (a CLASP SYNC message carries ``t1`` and optionally ``t2``, ``t3``, all µs)::

    A: t1 = A's clock          --- SYNC {t1} --------------------->  B: t2 = B's clock on receipt
    A: t4 = A's clock on receipt <-- SYNC {t1, t2, t3} ------------  B: t3 = B's clock just before sending

``offset = ((t2 - t1) + (t3 - t4)) / 2`` is B's clock minus A's, ``rtt = (t4 - t1) - (t3 - t2)``.
Whatever the split of the two one-way delays, the true offset lies within ``rtt / 2`` of a
sample's offset (as long as neither clock drifts much within one exchange), so the estimator keeps a
sliding window of samples and trusts the one with the smallest round-trip time.

:class:`ClockEstimator` is the arithmetic; :class:`ClockSync` runs the exchange over any function
that sends a frame (a DataChannel, a WebSocket) and answers the other side's requests the way the
reference router does (``t1`` echoed, ``t2``/``t3`` filled in).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .errors import ProtocolError
from .wire.codec import encode
from .wire.messages import Sync
from .wire.protocol import now_us as wall_clock_us

__all__ = ["ClockEstimator", "ClockSample", "ClockSync", "PeerClock", "wall_clock_us"]


@dataclass(frozen=True)
class ClockSample:
    """One SYNC exchange: ``t1``/``t4`` on the local clock, ``t2``/``t3`` on the remote one (µs)."""

    t1: int
    t2: int
    t3: int
    t4: int

    @property
    def offset_us(self) -> float:
        """Remote clock minus local clock, assuming equal one-way delays."""
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2

    @property
    def rtt_us(self) -> int:
        """Time on the network and in both stacks: the local interval minus the remote's turnaround."""
        return (self.t4 - self.t1) - (self.t3 - self.t2)


@dataclass(frozen=True)
class PeerClock:
    """What is known about a peer's clock.

    ``offset_us`` is the peer's clock minus ours; the true offset lies within ``uncertainty_us`` of
    it (half the round-trip time of the sample it comes from, plus the drift allowed since).
    ``rtt_us`` is the round-trip time of the latest exchange, ``min_rtt_us`` the smallest in the
    window, ``samples`` how many exchanges the window holds.
    """

    offset_us: float
    uncertainty_us: float
    rtt_us: int
    min_rtt_us: int
    samples: int

    def to_local(self, remote_us: float) -> float:
        """A time stamped by the peer (µs on its clock) as µs on our clock."""
        return remote_us - self.offset_us

    def to_remote(self, local_us: float) -> float:
        """A time on our clock (µs) as the peer's clock would show it."""
        return local_us + self.offset_us


class ClockEstimator:
    """Offset and round-trip time of a remote clock from SYNC samples (minimum-RTT filter).

    ``window`` samples are kept; the estimate is the offset of the one with the smallest round-trip
    time. ``max_drift_ppm`` is how fast the two clocks may drift apart (15 ppm, as NTP assumes); it
    widens the uncertainty of an old sample, and a new sample whose interval no longer overlaps the
    estimate's (a clock was stepped) starts the window afresh.
    """

    def __init__(self, window: int = 16, *, max_drift_ppm: float = 15.0) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 sample, got {window}")
        if max_drift_ppm < 0:
            raise ValueError(f"max_drift_ppm must be >= 0, got {max_drift_ppm}")
        self.max_drift_ppm = max_drift_ppm
        self._samples: deque[ClockSample] = deque(maxlen=window)
        self.steps = 0  # times the window restarted because the offset jumped

    def add_sample(self, t1: int, t2: int, t3: int, t4: int) -> ClockSample:
        """Add one exchange (µs); ValueError naming the field when the times cannot be one."""
        for name, value in (("t1", t1), ("t2", t2), ("t3", t3), ("t4", t4)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer number of µs, got {value!r}")
        if t4 < t1:
            raise ValueError(f"t4 ({t4}) is before t1 ({t1}): the reply came back before the request left")
        if t3 < t2:
            raise ValueError(f"t3 ({t3}) is before t2 ({t2}): the peer answered before it received")
        sample = ClockSample(t1, t2, t3, t4)
        if sample.rtt_us < 0:
            raise ValueError(
                f"negative round-trip time ({sample.rtt_us} µs): the peer's turnaround t3 - t2 "
                f"exceeds our t4 - t1")
        best = self._best()
        if best is not None and not self._consistent(best, sample):
            self._samples.clear()
            self.steps += 1
        self._samples.append(sample)
        return sample

    def _best(self) -> ClockSample | None:
        return min(self._samples, key=lambda s: s.rtt_us) if self._samples else None

    def _uncertainty(self, best: ClockSample, now_us: int) -> float:
        return best.rtt_us / 2 + max(0, now_us - best.t4) * self.max_drift_ppm / 1e6

    def _consistent(self, best: ClockSample, sample: ClockSample) -> bool:
        # Both intervals [offset - rtt/2, offset + rtt/2] contain the true offset: they must overlap.
        gap = abs(sample.offset_us - best.offset_us)
        return gap <= self._uncertainty(best, sample.t4) + sample.rtt_us / 2 + 1

    def estimate(self) -> PeerClock | None:
        """The current estimate, or None before the first sample."""
        best = self._best()
        if best is None:
            return None
        latest = self._samples[-1]
        return PeerClock(
            offset_us=best.offset_us,
            uncertainty_us=self._uncertainty(best, latest.t4),
            rtt_us=latest.rtt_us,
            min_rtt_us=best.rtt_us,
            samples=len(self._samples),
        )

    def to_local(self, remote_us: float) -> float:
        """A remote time stamp (µs) on our clock; LookupError before the first sample."""
        estimate = self.estimate()
        if estimate is None:
            raise LookupError("no SYNC sample yet: the peer's clock offset is unknown")
        return estimate.to_local(remote_us)

    def reset(self) -> None:
        self._samples.clear()


class ClockSync:
    """The SYNC exchange with one peer, over ``send(frame)``.

    Call :meth:`request` to start an exchange (or :meth:`run` to keep exchanging) and feed every
    SYNC received from the peer to :meth:`handle`, with the receive time when the transport took it
    (else the clock is read there). Requests from the peer are answered at once; replies to our
    requests become samples of :attr:`estimator`. Replies that match no outstanding request (late,
    duplicated, forged) are counted in ``ignored`` and dropped.

    ``clock`` returns µs; tests pass a shifted clock to give a process a known offset.
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        *,
        clock: Callable[[], int] = wall_clock_us,
        estimator: ClockEstimator | None = None,
        max_outstanding: int = 8,
    ) -> None:
        self._send = send
        self._clock = clock
        self.estimator = estimator or ClockEstimator()
        self._outstanding: deque[int] = deque(maxlen=max_outstanding)
        self.requests_sent = 0
        self.replies_sent = 0
        self.samples = 0
        self.ignored = 0

    @property
    def peer_clock(self) -> PeerClock | None:
        """The peer's clock as estimated so far (None before the first reply)."""
        return self.estimator.estimate()

    def request(self) -> None:
        """Send one SYNC request stamped with our clock."""
        t1 = self._clock()
        self._outstanding.append(t1)
        self._send(encode(Sync(t1=t1)))
        self.requests_sent += 1

    def handle(self, message: Sync, received_us: int | None = None) -> PeerClock | None:
        """Process a SYNC from the peer; returns the new estimate after a reply, else None.

        Raises ProtocolError for a SYNC that is neither a request (``t1`` only) nor a reply
        (``t1``, ``t2`` and ``t3``); the exchange goes on.
        """
        now = self._clock() if received_us is None else received_us
        t1, t2, t3 = message.t1, message.t2, message.t3
        if t2 is None and t3 is None:
            self._send(encode(Sync(t1=t1, t2=now, t3=self._clock())))
            self.replies_sent += 1
            return None
        if t2 is None or t3 is None:
            raise ProtocolError(f"SYNC with only one of t2/t3 (t1={t1}, t2={t2}, t3={t3})")
        if t1 not in self._outstanding:
            self.ignored += 1
            return None
        self._outstanding.remove(t1)
        try:
            self.estimator.add_sample(t1, t2, t3, now)
        except ValueError as exc:
            raise ProtocolError(f"unusable SYNC reply: {exc}") from None
        self.samples += 1
        return self.estimator.estimate()

    async def run(self, interval: float = 1.0, *, burst: int = 4, burst_interval: float = 0.02) -> None:
        """Send ``burst`` requests ``burst_interval`` s apart (a first estimate quickly), then one every
        ``interval`` s, until cancelled."""
        for _ in range(burst):
            self.request()
            await asyncio.sleep(burst_interval)
        while True:
            await asyncio.sleep(interval)
            self.request()

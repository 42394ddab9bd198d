"""The fast SCTP path's T3 and loss-probe timers: one timer each, moved rather than re-created,
and still on time when no SACK comes. Real peers on loopback; SACKs lost below DTLS."""

from __future__ import annotations

import asyncio

from clasp_fast.sctp import TIMER_SLACK
from tests.sctp_pair import DatagramFaults, close_pair, connect_pair, count_t3_expiries, wait_until
from tests.test_sctp_transport import Collector

CHANNELS = [{"label": "r"}]


async def test_t3_keeps_one_timer_across_starts_and_expires_at_its_last_deadline():
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    sender = o.sctp
    loop = asyncio.get_running_loop()
    try:
        arrived = Collector(remote, 7)
        timers = []
        for i in range(6):
            local.send(bytes([i]) * 100)
            timers.append(sender._t3_timer)
            assert sender._t3_handle is sender._t3_timer  # T3 runs on that timer
            await wait_until(lambda i=i: len(arrived.messages) == i + 1 and not sender._sent_queue, 10)
            assert sender._t3_handle is None  # everything acknowledged: T3 stopped ...
        # ... but its timer kept: six starts, one timer (two if this machine took an RTO, 1 s, for them).
        assert len({id(timer) for timer in timers}) <= 2
        assert sender._t3_timer is not None and not sender._t3_timer.cancelled()

        # Now the receiver's SACKs are lost: T3 must expire one RTO after this start, not at the
        # earlier deadline the kept timer was set for.
        faults = DatagramFaults(a, seed=5, loss=1.0)
        expiries = count_t3_expiries(sender)
        expired_at: list[float] = []
        counting = sender._t3_expired

        def stamped() -> None:
            expired_at.append(loop.time())
            counting()

        sender._t3_expired = stamped
        local.send(b"its SACKs are lost")
        deadline = sender._t3_deadline
        assert abs(deadline - (loop.time() + sender._rto)) < 0.05
        kept = sender._t3_timer
        assert kept.when() < deadline  # the earlier timer: it fires first and waits for the rest
        await wait_until(lambda: expiries[0] >= 1, 15)
        assert expired_at[0] >= deadline - TIMER_SLACK
        faults.loss = 0.0  # the retransmission's SACK gets through
        await wait_until(lambda: len(arrived.messages) == 7 and not sender._sent_queue, 15)
        assert arrived.messages[-1] == b"its SACKs are lost" and len(arrived.messages) == 7
        assert faults.dropped >= 1
    finally:
        await close_pair(o, a)


async def test_the_loss_probe_keeps_its_timer_while_messages_are_acknowledged():
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    sender = o.sctp
    try:
        arrived = Collector(remote, 10)
        timers = []
        for i in range(10):
            local.send(bytes([i]) * 100)
            assert sender._loss_probe_waiting and sender._loss_probe_handle is not None
            timers.append(sender._loss_probe_handle)
            await wait_until(lambda i=i: len(arrived.messages) == i + 1 and not sender._sent_queue, 10)
            assert not sender._loss_probe_waiting
        # A timer lives at most 50 ms (it re-checks), so a slow machine may need a few; not one each.
        assert len({id(timer) for timer in timers}) < 10
        assert sender.stats.loss_probes == 0 and sender.stats.retransmissions == 0
    finally:
        await close_pair(o, a)


async def test_closing_cancels_the_kept_timers():
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    sender = o.sctp
    arrived = Collector(remote, 1)
    local.send(b"one")
    await wait_until(lambda: arrived.messages and not sender._sent_queue, 10)
    t3, probe = sender._t3_timer, sender._loss_probe_handle
    await close_pair(o, a)
    assert sender._t3_timer is None and t3.cancelled()
    assert sender._loss_probe_handle is None and (probe is None or probe.cancelled())

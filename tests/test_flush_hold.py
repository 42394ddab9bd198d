"""New data queued while earlier data is unacknowledged waits for the SACK, within bounds.

Real aiortc peer connections on loopback (tests/sctp_pair.py), both sides clasp_fast's SCTP. A
message sent with nothing in flight leaves at once; one sent behind unacknowledged data waits for
the SACK (which sends it with whatever else was queued by then), but for at most
``FLUSH_HOLD_ITERATIONS`` more loop iterations and ``FLUSH_HOLD`` seconds.
"""

from __future__ import annotations

import asyncio

import pytest

from clasp_fast import sctp

from tests.sctp_pair import FaultyLink, close_pair, connect_pair, wait_until


async def _iterations(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def _deliveries(remote) -> list[bytes]:
    got: list[bytes] = []
    remote.on("message", got.append)
    return got


async def test_messages_queued_behind_unacknowledged_data_share_one_packet(monkeypatch):
    monkeypatch.setattr(sctp, "FLUSH_HOLD", 30.0)  # only the iteration bound applies
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        got = _deliveries(remote)
        stats = o.sctp.stats
        before = stats.packets_sent
        local.send(b"first")  # nothing in flight: leaves at once
        assert stats.packets_sent == before + 1
        local.send(b"second")  # behind "first": held
        await asyncio.sleep(0)
        local.send(b"third")  # one iteration later, still held: joins "second"
        await wait_until(lambda: len(got) == 3, timeout=5)
        assert got == [b"first", b"second", b"third"]
        assert stats.packets_sent == before + 2
        assert stats.retransmissions == 0
    finally:
        await close_pair(o, a)


async def test_without_a_sack_held_data_leaves_after_the_iteration_bound(monkeypatch):
    monkeypatch.setattr(sctp, "FLUSH_HOLD", 30.0)
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    sacks = FaultyLink(a, seed=1, loss=1.0)  # the answerer's SACKs never reach the sender
    try:
        got = _deliveries(remote)
        stats = o.sctp.stats
        before = stats.packets_sent
        local.send(b"first")
        local.send(b"second")
        await _iterations(sctp.FLUSH_HOLD_ITERATIONS + 1)
        assert stats.packets_sent == before + 2
        assert o.sctp._sent_queue and not o.sctp._data_channel_queue  # both out, neither acknowledged
        await wait_until(lambda: len(got) == 2, timeout=5)
        assert got == [b"first", b"second"]
    finally:
        sacks.limit = 0  # everything passes again, for the close
        await close_pair(o, a)


async def test_without_a_sack_held_data_leaves_once_the_time_bound_passed(monkeypatch):
    monkeypatch.setattr(sctp, "FLUSH_HOLD", 0.0)  # the time bound has passed at the first look
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    sacks = FaultyLink(a, seed=1, loss=1.0)
    try:
        stats = o.sctp.stats
        before = stats.packets_sent
        local.send(b"first")
        local.send(b"second")
        await _iterations(1)
        assert stats.packets_sent == before + 2
    finally:
        sacks.limit = 0  # everything passes again, for the close
        await close_pair(o, a)


@pytest.mark.parametrize("count", [1, 40])
async def test_held_data_goes_out_with_the_sack_that_arrives_first(monkeypatch, count):
    # A SACK acknowledging "first" sends what is queued at once, before the iteration bound.
    monkeypatch.setattr(sctp, "FLUSH_HOLD", 30.0)
    monkeypatch.setattr(sctp, "FLUSH_HOLD_ITERATIONS", 1000)  # only a SACK can end the hold
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        got = _deliveries(remote)
        local.send(b"first")
        sent = [bytes([i]) * 10 for i in range(count)]
        for message in sent:
            local.send(message)
        await wait_until(lambda: len(got) == 1 + count, timeout=5)
        assert got == [b"first", *sent]
        assert o.sctp.stats.retransmissions == 0 and o.sctp.stats.loss_probes == 0
    finally:
        await close_pair(o, a)

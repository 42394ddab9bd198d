"""The compiled loss path of the fast SCTP sender (_ext/sctp.pyx) against aiortc's own rules.

Two transports start from the same seeded sender state: a sent queue with chunks that earlier gap
blocks acknowledged, misses already counted, chunks with a retransmission limit (partial
reliability), fast recovery under way or not, TSNs across the 2^32 wrap. One handles a seeded
sequence of SACKs (gap blocks, stale SACKs, cumulative moves) with FastSctpTransport's rules, the
other with aiortc's ``RTCSctpTransport._receive_sack_chunk``; after every SACK both must hold the
same state. The retransmission timer's expiry is compared the same way. The transports are real
and not associated (no packet leaves), so their transmit steps do nothing.
"""

from __future__ import annotations

import random
import time
from collections import deque

import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport, RTCSctpTransport
from aiortc.rtcsctptransport import SackChunk

from clasp_fast import _sctp, sctp
from clasp_fast.sctp import FastSctpTransport

pytestmark = pytest.mark.skipif(bool(sctp.missing_sctp_seams()), reason="this aiortc keeps its own SCTP")

UNIT = sctp.USER_DATA_MAX  # aiortc's congestion rules count in its DATA chunk size


def _transport() -> FastSctpTransport:
    dtls = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
    transport = FastSctpTransport(dtls)
    assert transport.state == "new"  # not associated: _transmit and the flush return at once
    return transport


def _chunk(tsn: int, rng: random.Random) -> _sctp.DataChunk:
    size = rng.choice([1, 100, 1100, 1200])
    flags = rng.choice([3, 3, 3, 2, 0, 1, 7])
    chunk = _sctp.DataChunk(flags=flags, tsn=tsn & 0xFFFFFFFF, stream_id=rng.choice([1, 3]),
                            stream_seq=rng.randint(0, 5), protocol=53, user_data=bytes(size))
    chunk._sent_count = rng.choice([1, 1, 1, 2, 4])
    chunk._sent_time = 999.5
    chunk._misses = rng.choice([0, 0, 0, 1, 2])
    chunk._in_flight = rng.random() < 0.9
    chunk._retransmit = not chunk._in_flight and rng.random() < 0.5
    if rng.random() < 0.1:
        chunk._max_retransmits = rng.choice([0, 1, 5])
    return chunk


def _setup(transport: FastSctpTransport, rng: random.Random, base: int) -> None:
    """A seeded sender state; the same seed gives the same state."""
    chunks = [_chunk(base + i, rng) for i in range(rng.randint(1, 120))]
    transport._user_data_max = UNIT
    transport._sent_queue = deque(chunks)
    transport._flight_size = sum(c._book_size for c in chunks if c._in_flight)
    transport._last_sacked_tsn = (base - 1) & 0xFFFFFFFF
    transport._advanced_peer_ack_tsn = transport._last_sacked_tsn
    transport._cwnd = rng.choice([4380, 30_000, 250_000])
    transport._ssthresh = rng.choice([3 * UNIT, 40_000, 1 << 20])
    transport._partial_bytes_acked = 0
    transport._fast_recovery_exit = rng.choice([None, None, (base + rng.randint(0, len(chunks))) & 0xFFFFFFFF])
    transport._fast_recovery_transmit = False


def _sack(rng: random.Random, last_sacked: int, outstanding: int) -> tuple[int, list[tuple[int, int]]]:
    """A cumulative TSN (sometimes stale) and ascending gap blocks over the outstanding TSNs."""
    if rng.random() < 0.1:
        cumulative = (last_sacked - rng.randint(1, 3)) & 0xFFFFFFFF
    else:
        cumulative = (last_sacked + rng.choice([0, 0, 0, 1, 2, rng.randint(0, max(outstanding, 1))])) & 0xFFFFFFFF
    gaps: list[tuple[int, int]] = []
    start = rng.randint(1, 4)
    while start <= outstanding + 2 and len(gaps) < rng.randint(1, 8) and rng.random() < 0.85:
        end = start + rng.randint(0, 6)
        gaps.append((start, end))
        start = end + rng.randint(2, 5)
    return cumulative, gaps


def _state(transport: FastSctpTransport) -> tuple:
    chunks = [(c.tsn, c._acked, c._abandoned, c._in_flight, c._retransmit, c._misses, c._sent_count)
              for c in transport._sent_queue]
    return (chunks, transport._flight_size, transport._cwnd, transport._ssthresh,
            transport._partial_bytes_acked, transport._fast_recovery_exit, transport._last_sacked_tsn,
            transport._advanced_peer_ack_tsn, dict(transport._forward_tsn_streams), transport._rto,
            transport._srtt, transport._t3_handle is None)


def _cancel_timers(*transports: FastSctpTransport) -> None:
    for transport in transports:
        transport._t3_cancel()


@pytest.mark.parametrize("seed", range(40))
async def test_sacks_with_gap_blocks_leave_the_state_aiortc_leaves(seed: int, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1000.0)  # both take the same round-trip sample
    rng = random.Random(seed)
    ours, theirs = _transport(), _transport()
    base = rng.choice([1, 2**32 - 40, rng.randint(0, 2**32 - 1)])
    setup_seed = rng.random()
    for transport in (ours, theirs):
        _setup(transport, random.Random(setup_seed), base)
    assert _state(ours) == _state(theirs)
    strikes = 0
    try:
        for _ in range(25):
            cumulative, gaps = _sack(rng, ours._last_sacked_tsn, len(ours._sent_queue))
            rwnd = rng.randint(0, 1 << 20)
            retransmits_before = sum(c._retransmit for c in ours._sent_queue)
            await ours._receive_sack_with_gaps(cumulative, rwnd, gaps)
            reference = SackChunk()
            reference.cumulative_tsn, reference.advertised_rwnd, reference.gaps = cumulative, rwnd, gaps
            await RTCSctpTransport._receive_sack_chunk(theirs, reference)
            assert _state(ours) == _state(theirs), (cumulative, gaps)
            strikes += sum(c._retransmit for c in ours._sent_queue) > retransmits_before
    finally:
        _cancel_timers(ours, theirs)
    assert ours._flight_size == sum(c._book_size for c in ours._sent_queue if c._in_flight)
    if seed == 0:
        assert strikes, "the seeds must reach the third miss indication"


@pytest.mark.parametrize("seed", range(10))
async def test_a_retransmission_timeout_leaves_the_state_aiortc_leaves(seed: int, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1000.0)
    ours, theirs = _transport(), _transport()
    setup_seed = random.Random(seed).random()
    for transport in (ours, theirs):
        _setup(transport, random.Random(setup_seed), 2**32 - 10)
    try:
        ours._t3_expired()
        RTCSctpTransport._t3_expired(theirs)
        assert _state(ours) == _state(theirs)
        assert ours._flight_size == 0 and ours._cwnd == UNIT
        assert all(c._retransmit or c._abandoned for c in ours._sent_queue)
    finally:
        _cancel_timers(ours, theirs)


def test_gap_blocks_out_of_order_or_empty_acknowledge_what_they_cover():
    queue = deque(_sctp.DataChunk(tsn=t, user_data=b"x" * 100) for t in range(11, 21))
    for chunk in queue:
        chunk._in_flight = True
    # Blocks 3-4 and 1-1 (listed in the wrong order) and an empty one (5 > 2) over cumulative 10.
    acked, left, lost = _sctp.acknowledge_gaps(None, queue, 10, [(3, 4), (1, 1), (5, 2)])
    assert [c.tsn for c in queue if c._acked] == [11, 13, 14]
    assert acked == left == 3 * queue[0]._book_size
    assert not lost and queue[1]._misses == 1  # TSN 12 is below the highest newly acknowledged
    assert _sctp.acknowledge_gaps(None, queue, 10, []) == (0, 0, False)
    with pytest.raises(TypeError):
        _sctp.acknowledge_gaps(None, queue, 10, [(1, None)])


def test_take_retransmissions_sends_marked_chunks_within_the_window():
    queue = deque(_sctp.DataChunk(tsn=t, user_data=b"x" * 1000) for t in range(1, 7))
    for chunk in queue:
        chunk._in_flight = True
    for chunk in (queue[0], queue[2], queue[3], queue[5]):
        chunk._retransmit, chunk._in_flight, chunk._misses = True, False, 2
    book = queue[0]._book_size
    flight = 2 * book
    # The fast-recovery chunk goes regardless of the window, which then has room for one more;
    # a packet holds one chunk (and the first the 4-byte control chunk, counted as used).
    bundler = _sctp.Bundler(book + 10, b"sack")
    flight, recovery, blocked, sent, earliest = _sctp.take_retransmissions(
        queue, flight, flight + 2 * book, True, bundler)
    packets, control, packet, used = bundler.packets, bundler.control, bundler.packet, bundler.used
    assert (recovery, blocked, sent, earliest) == (False, True, 2, True)
    assert flight == 4 * book and [c.tsn for c in packets[0][1]] == [1] and packets[0][0] == b"sack"
    assert [c.tsn for c in packet] == [3] and control == b"" and used == book
    assert queue[0]._sent_count == queue[2]._sent_count == 1 and queue[0]._misses == 0
    assert queue[3]._retransmit and queue[5]._retransmit  # left for the next transmit


def _gap_blocks(received: set[int], cumulative: int, limit: int) -> list[tuple[int, int]]:
    """The gap blocks RFC 4960 section 3.3.4 describes, restated directly: runs of consecutive
    offsets from the cumulative TSN, ascending, offsets up to 65,535 only."""
    offsets = sorted(o for o in ((t - cumulative) & 0xFFFFFFFF for t in received) if 0 < o <= 0xFFFF)
    blocks: list[list[int]] = []
    for offset in offsets:
        if blocks and offset == blocks[-1][1] + 1:
            blocks[-1][1] = offset
        else:
            blocks.append([offset, offset])
    return [(start, end) for start, end in blocks][:limit]


@pytest.mark.parametrize("seed", range(20))
def test_sack_gap_blocks_are_the_runs_of_tsns_received_beyond_the_cumulative_tsn(seed: int):
    rng = random.Random(seed)
    cumulative = rng.choice([5, 2**32 - 30, rng.randint(0, 2**32 - 1)])
    received = {(cumulative + rng.randint(2, 400)) & 0xFFFFFFFF for _ in range(rng.randint(1, 150))}
    received |= {(cumulative + 0x10000 + rng.randint(0, 5)) & 0xFFFFFFFF}  # too far ahead for a block
    limit = rng.choice([1, 3, 200])
    assert _sctp.sack_gaps(received, cumulative, limit) == _gap_blocks(received, cumulative, limit)
    assert _sctp.sack_gaps(set(), cumulative, limit) == []

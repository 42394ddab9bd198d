"""Per-stage cost of the SCTP sender's loss path: SACKs with gap blocks and the T3 expiry.

Run with ``pytest benchmarks/bench_sctp_loss.py --benchmark-only``. Groups:

* ``sctp-sack-gaps-256``: one lost chunk at the front of 256 outstanding 1,200-byte chunks, reported
  by three SACKs whose gap block grows (2-100, 2-180, 2-256); the third is the third miss
  indication, and the chunk is marked for fast retransmission. One round = the three SACKs.
  FastSctpTransport's handler (compiled loops, ``_sctp.acknowledge_gaps``) against aiortc's
  ``RTCSctpTransport._receive_sack_chunk`` on the same state.
* ``sctp-t3-expiry-256``: the retransmission timer expiring over the same 256 chunks.

The transports are real and not associated, so nothing is sent: the figures are the handlers'
bookkeeping alone. µs per SACK = time per round / 3. Every loop is bounded (fixed rounds).
"""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport, RTCSctpTransport
from aiortc.rtcsctptransport import SackChunk

from clasp_fast import _sctp, sctp

OUTSTANDING = 256
ROUNDS = 300
SACKS = [(0, [(2, 100)]), (0, [(2, 180)]), (0, [(2, OUTSTANDING)])]
WAYS = ["clasp_fast", "aiortc"]


def _transport(loop: asyncio.AbstractEventLoop) -> sctp.FastSctpTransport:
    asyncio.set_event_loop(loop)
    dtls = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
    return sctp.FastSctpTransport(dtls)


def _outstanding(transport: sctp.FastSctpTransport) -> None:
    chunks = [_sctp.DataChunk(3, tsn, 1, tsn & 0xFFFF, 53, b"x" * 1200) for tsn in range(1, OUTSTANDING + 1)]
    for chunk in chunks:
        chunk._in_flight, chunk._sent_count, chunk._sent_time = True, 1, 0.0
    transport._sent_queue = deque(chunks)
    transport._flight_size = sum(c._book_size for c in chunks)
    transport._cwnd = transport._flight_size
    transport._last_sacked_tsn = transport._advanced_peer_ack_tsn = 0
    transport._fast_recovery_exit = None
    transport._t3_cancel()


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.mark.parametrize("way", WAYS)
def bench_sack_with_gaps(benchmark, loop, way):
    transport = _transport(loop)
    if way == "clasp_fast":
        async def sacks() -> None:
            for cumulative, gaps in SACKS:
                await transport._receive_sack_with_gaps(cumulative, 1 << 20, gaps)
    else:
        async def sacks() -> None:
            for cumulative, gaps in SACKS:
                chunk = SackChunk()
                chunk.cumulative_tsn, chunk.advertised_rwnd, chunk.gaps = cumulative, 1 << 20, gaps
                await RTCSctpTransport._receive_sack_chunk(transport, chunk)

    def run() -> None:
        loop.run_until_complete(sacks())

    benchmark.group = f"sctp-sack-gaps-{OUTSTANDING}"
    benchmark.pedantic(run, setup=lambda: _outstanding(transport), rounds=ROUNDS)
    assert transport._sent_queue[0]._retransmit  # the third SACK struck the lost chunk
    transport._t3_cancel()


@pytest.mark.parametrize("way", WAYS)
def bench_t3_expiry(benchmark, loop, way):
    transport = _transport(loop)
    expire = transport._t3_expired if way == "clasp_fast" else lambda: RTCSctpTransport._t3_expired(transport)
    benchmark.group = f"sctp-t3-expiry-{OUTSTANDING}"
    benchmark.pedantic(expire, setup=lambda: _outstanding(transport), rounds=ROUNDS)
    assert transport._flight_size == 0
    loop.run_until_complete(asyncio.sleep(0))  # the transmits they scheduled (nothing is sent)

"""Per-stage cost of the SCTP sender's loss path: SACKs with gap blocks and the T3 expiry.

Run with ``pytest benchmarks/bench_sctp_loss.py --benchmark-only``. Groups:

* ``sctp-sack-gaps-256``: one lost chunk at the front of 256 outstanding 1,200-byte chunks, reported
  by three SACKs whose gap block grows (2-100, 2-180, 2-256); the third is the third miss
  indication, and the chunk is marked for fast retransmission. One round = the three SACKs.
  FastSctpTransport's handler (compiled loops, ``_sctp.acknowledge_gaps``) against aiortc's
  ``RTCSctpTransport._receive_sack_chunk`` on the same state.
* ``sctp-t3-expiry-256``: the retransmission timer expiring over the same 256 chunks.
* ``sctp-receive-beyond-gap-64``: the receiver's side of a loss: TSN 1 lost, then 16 packets of 4
  ordered fragments each (64 chunks, 16 messages of one stream) arrive, and each packet is
  answered by a SACK with its gap block (built, not sent). In compiled code
  (``_sctp.receive_in_order``, ``_sctp.sack_gaps``) against the Python path of every chunk
  (``compiled_receive = False``).

The transports of those two are real and not associated, so nothing is sent: the figures are the
handlers' bookkeeping alone. µs per SACK = time per round / 3.

* ``sctp-bulk-loss-<percent>``: 400 messages of 60,000 bytes one way between two clasp_fast peers
  in this process (real aiortc connections on 127.0.0.1, data plane on), with that share of the
  DTLS application records of both peers dropped below DTLS (seeded): the data one way, the SACKs
  the other. One round = one transfer; MB/s = 24 / time per round (s).

``python -m benchmarks.bench_sctp_loss`` prints MB/s and the sender's T3 expiries and loss probes
for 0, 1 and 3 % loss, with loss probes on and off in turns. Every loop is bounded (fixed rounds,
each transfer bounded in time).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport, RTCSctpTransport
from aiortc.rtcsctptransport import SackChunk

from clasp_fast import _sctp, sctp
from clasp_fast.transport import sctp as sctp_module

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


RECEIVE_PACKETS, RECEIVE_CHUNKS = 16, 4


def _beyond_gap_packets() -> list[list[_sctp.DataChunk]]:
    chunks = []
    for index in range(RECEIVE_PACKETS * RECEIVE_CHUNKS):
        tsn = 2 + index  # TSN 1 is lost
        message, fragment = divmod(index, 4)
        flags = (2 if fragment == 0 else 0) | (1 if fragment == 3 else 0)
        chunks.append(_sctp.DataChunk(flags, tsn, 1, message + 1, 53, b"x" * 1172))
    return [chunks[i:i + RECEIVE_CHUNKS] for i in range(0, len(chunks), RECEIVE_CHUNKS)]


def _gap_open(transport: sctp.FastSctpTransport) -> None:
    transport._last_received_tsn = 0
    transport._sack_misordered = set()
    transport._sack_duplicates = []
    transport._advertised_rwnd = transport._receive_window
    transport._tail_message_bytes = {}
    stream = transport._get_inbound_stream(1)
    stream.reassembly, stream.sequence_number = [], 0


@pytest.mark.parametrize("way", ["compiled", "python"])
def bench_receive_beyond_gap(benchmark, loop, way):
    transport = _transport(loop)
    packets = _beyond_gap_packets()
    if way == "compiled":
        async def receive() -> None:
            for chunks in packets:
                _sctp.receive_in_order(transport, chunks, 0, [])
                transport._take_sack()
    else:
        async def receive() -> None:
            for chunks in packets:
                for chunk in chunks:
                    await transport._receive_data_chunk(chunk)
                transport._take_sack()

    benchmark.group = f"sctp-receive-beyond-gap-{RECEIVE_PACKETS * RECEIVE_CHUNKS}"
    benchmark.pedantic(lambda: loop.run_until_complete(receive()), setup=lambda: _gap_open(transport), rounds=ROUNDS)
    assert len(transport._sack_misordered) == RECEIVE_PACKETS * RECEIVE_CHUNKS
    assert len(transport._inbound_streams[1].reassembly) == RECEIVE_PACKETS * RECEIVE_CHUNKS


# -- bulk under seeded loss --------------------------------------------------------------------

BULK_SIZE, BULK_COUNT, BULK_TIMEOUT = 60_000, 400, 60.0


async def _transfer(loss: float, seed: int) -> dict:
    """One bulk transfer over a fresh pair with ``loss`` of both peers' records dropped."""
    from tests.sctp_pair import DatagramFaults, close_pair, connect_pair, count_t3_expiries

    offerer, answerer, (local,), (remote,) = await connect_pair(True, True, [dict(label="bulk")])
    try:
        faults = [DatagramFaults(offerer, seed=seed, loss=loss, limit=10**7),
                  DatagramFaults(answerer, seed=seed + 1, loss=loss, limit=10**7)]
        sender = offerer.sctp
        expiries = count_t3_expiries(sender)
        received = [0]
        done = asyncio.Event()

        def on_message(message: bytes) -> None:
            received[0] += 1
            if received[0] == BULK_COUNT:
                done.set()

        remote.on("message", on_message)
        payload = bytes(BULK_SIZE)
        start = time.perf_counter()
        for _ in range(BULK_COUNT):
            local.send(payload)
        await asyncio.wait_for(done.wait(), BULK_TIMEOUT)
        seconds = time.perf_counter() - start
        return {"MB/s": BULK_SIZE * BULK_COUNT / seconds / 1e6, "seconds": seconds, "t3": expiries[0],
                "probes": sender.stats.loss_probes, "dropped": sum(f.dropped for f in faults)}
    finally:
        await close_pair(offerer, answerer)


@pytest.mark.parametrize("percent", [1, 3])
def bench_bulk_under_loss(benchmark, loop, percent):
    seeds = iter(range(1000, 2000, 2))
    results: list[dict] = []
    benchmark.group = f"sctp-bulk-loss-{percent}"
    benchmark.pedantic(lambda: results.append(loop.run_until_complete(_transfer(percent / 100, next(seeds)))),
                       rounds=3)
    benchmark.extra_info["MB/s"] = [round(r["MB/s"], 1) for r in results]
    assert all(r["dropped"] for r in results)


def main() -> None:
    rows = []
    for percent in (0, 1, 3):
        for probes in (True, False):
            saved = sctp_module.MAX_LOSS_PROBES
            sctp_module.MAX_LOSS_PROBES = saved if probes else 0
            try:
                for seed in (1000, 1002, 1004):
                    result = asyncio.run(_transfer(percent / 100, seed))
                    rows.append((percent, probes, result))
            finally:
                sctp_module.MAX_LOSS_PROBES = saved
    print(f"{'loss':>5} {'probes':>7} {'MB/s':>8} {'T3':>4} {'probes sent':>12} {'dropped':>8}")
    for percent, probes, r in rows:
        print(f"{percent:>4}% {'on' if probes else 'off':>7} {r['MB/s']:>8.1f} {r['t3']:>4} {r['probes']:>12} "
              f"{r['dropped']:>8}")


if __name__ == "__main__":
    main()

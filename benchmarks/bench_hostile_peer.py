"""A good peer's latency at a victim that a hostile peer floods with huge batches (one process).

The victim holds two WebRTC connections on loopback, each served by a P2P ``Peer``: the hostile
peer sends DataChannel messages of 14,563 SET frames (262,134 bytes, just under the advertised
maximum message size) back to back, which the victim's Peer stores and dispatches; the good peer
sends a SET every millisecond. The good peer's latency is measured from each message's
*scheduled* send time to its delivery at the victim, so time the event loop spends blocked counts
(the three peers share one loop and one clock). Figures: p50/p99/max of the good peer's latency,
frames/s taken from the hostile peer, and the same without the hostile peer.

Run ``pytest benchmarks/bench_hostile_peer.py --benchmark-only -s`` or
``python -m benchmarks.bench_hostile_peer``. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from clasp_fast.codec import encode
from clasp_fast.messages import Set
from clasp_fast.p2p import Peer, PeerInfo
from clasp_fast.webrtc import RELIABLE_LABEL

from benchmarks.bench_webrtc import _once
from tests.test_webrtc import connected

SECONDS = 3.0
GOOD_RATE = 1_000
HOSTILE_FRAME = encode(Set(address="/h", value=0))
HOSTILE_FRAMES = 262_140 // len(HOSTILE_FRAME)
HOSTILE_BUFFER = 1024 * 1024  # the hostile sender keeps at most this much queued


async def good_peer_latency(hostile: bool) -> dict:
    latencies: list[float] = []
    hostile_frames = [0]
    hostile_batches = [0]
    batch = HOSTILE_FRAME * HOSTILE_FRAMES
    async with connected() as (flooder, victim_h, _, _), connected() as (good, victim_g, _, _):

        def on_good(value: bytes, address: str) -> None:
            latencies.append(time.perf_counter() - int.from_bytes(value, "big") / 1e9)

        def count_hostile(peer: Peer, message: object) -> bool:
            hostile_frames[0] += 1
            return False  # the Peer handles it: stores the param and dispatches it

        to_good = Peer(victim_g, PeerInfo(session_id="peer-a"))
        to_good.on("/good", on_good)
        to_good.start()
        to_hostile = Peer(victim_h, PeerInfo(session_id="peer-a"))
        to_hostile.add_message_hook(count_hostile)
        to_hostile.start()
        stop = time.perf_counter() + SECONDS

        async def flood() -> None:
            dc = flooder.channels[RELIABLE_LABEL]
            while time.perf_counter() < stop:
                if dc.bufferedAmount < HOSTILE_BUFFER:
                    dc.send(batch)
                    hostile_batches[0] += 1
                await asyncio.sleep(0.001)

        flooding = asyncio.ensure_future(flood()) if hostile else None
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() < stop:
            due = int((time.perf_counter() - started) * GOOD_RATE) + 1
            while sent < due:
                scheduled = started + sent / GOOD_RATE  # latency counts from here
                good.sender.send_nowait(Set(address="/good", value=int(scheduled * 1e9).to_bytes(8, "big")))
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / GOOD_RATE - time.perf_counter()))
        if flooding is not None:
            await flooding
        # Wait for what was sent: all of the good peer's messages, and the hostile batches as long as
        # that connection lasts.
        deadline = time.perf_counter() + 60
        while (
            len(latencies) < sent
            or (hostile_frames[0] < hostile_batches[0] * HOSTILE_FRAMES and victim_h.state == "connected")
        ) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        for peer in (to_good, to_hostile):
            await peer._tasks.cancel_and_wait()
    latencies.sort()
    return {
        "hostile": hostile,
        "good_sent": sent,
        "good_received": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
        "hostile_frames_per_s": hostile_frames[0] / elapsed,
        "hostile_frames_undelivered": hostile_batches[0] * HOSTILE_FRAMES - hostile_frames[0],
    }


def bench_good_peer_alone(benchmark):
    _once(benchmark, lambda: good_peer_latency(hostile=False))
    assert benchmark.extra_info["good_received"] == benchmark.extra_info["good_sent"]


def bench_good_peer_while_a_hostile_peer_floods(benchmark):
    _once(benchmark, lambda: good_peer_latency(hostile=True))
    assert benchmark.extra_info["good_received"] == benchmark.extra_info["good_sent"]


if __name__ == "__main__":
    for flood in (False, True):
        print(asyncio.run(good_peer_latency(flood)))

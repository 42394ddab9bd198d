"""End-to-end WebRTC figures between two processes on loopback (32-byte payloads).

Run with ``pytest benchmarks/bench_webrtc.py --benchmark-only -s`` (each scenario runs once; the
figures are in ``extra_info`` and printed), or ``python -m benchmarks.bench_webrtc`` for a table.

Scenarios (this process offers and sends, the child in tests/webrtc_peer.py answers and measures):
* throughput: batched reliable; unbatched (one frame per DataChannel message); raw aiortc
  (``RTCDataChannel.send`` of pre-encoded frames on the same kind of connection);
* one-way latency at 1,000 and 10,000 messages/s (sender stamps time.time_ns() into the payload,
  the receiver subtracts from its own clock: same host, same CLOCK_REALTIME);
* connection set-up, offer to reliable channel open, over 20 connections.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from clasp_fast.codec import encode
from clasp_fast.messages import Set
from clasp_fast.webrtc import RELIABLE_LABEL, WebRtcTransport

from tests.webrtc_peer import CHILD, loopback_config, read_result, spawn_peer, spawn_process

PAYLOAD = 32
ADDRESS = "/bench/x"


def _message(stamp: bool = True) -> Set:
    head = time.time_ns().to_bytes(8, "big") if stamp else bytes(8)
    return Set(address=ADDRESS, value=head + bytes(PAYLOAD - 8))


async def throughput(count: int, *, batching: bool = True, seconds: float = 20.0) -> dict:
    """Messages/s received by the child while this side sends ``count`` as fast as it can."""
    config = loopback_config(batching=batching)
    args = ("--count", str(count), "--seconds", str(seconds))
    async with spawn_peer("sink", *args, config=config) as (transport, process):
        sender = transport.sender
        started = time.perf_counter()
        for _ in range(count):
            await sender.send(_message())
        sender.flush()
        result = await read_result(process, seconds + 10)
        elapsed = time.perf_counter() - started
        stats = transport.stats()
    result.update(
        rate=result["received"] / result["seconds"] if result["seconds"] else 0.0,
        rate_incl_first=result["received"] / elapsed,
        sent=count,
        frames_per_datachannel_message=stats.messages_sent / max(1, stats.datachannel_messages_sent),
    )
    return result


async def raw_aiortc(count: int, *, seconds: float = 20.0) -> dict:
    """The same transfer with RTCDataChannel.send() of ready frames, one per DataChannel message."""
    args = ("--count", str(count), "--seconds", str(seconds))
    async with spawn_peer("sink", *args, config=loopback_config(batching=False)) as (transport, process):
        dc = transport.channels[RELIABLE_LABEL]
        deadline = time.monotonic() + seconds
        for _ in range(count):
            while dc.bufferedAmount > 64 * 1024 and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            if time.monotonic() >= deadline:
                break
            dc.send(encode(_message()))
        result = await read_result(process, seconds + 10)
    result.update(rate=result["received"] / result["seconds"] if result["seconds"] else 0.0, sent=count)
    return result


async def latency(rate: int, seconds: float) -> dict:
    """One-way latency percentiles while sending ``rate`` messages/s for ``seconds``."""
    count = int(rate * seconds)
    args = ("--count", str(count), "--seconds", str(seconds + 10))
    async with spawn_peer("sink", *args) as (transport, process):
        sender = transport.sender
        await asyncio.sleep(0.2)  # let the child's receive path warm up
        tick = 0.001
        per_tick = rate * tick
        started = time.perf_counter()
        sent = 0
        while sent < count:
            due = min(count, int((time.perf_counter() - started) / tick * per_tick) + 1)
            while sent < due:
                await sender.send(_message())
                sent += 1
            next_tick = started + (sent / per_tick) * tick
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        result = await read_result(process, seconds + 20)
    result.update(target_rate=rate, sent=count)
    return result


async def setup_time(connections: int = 20) -> dict:
    """Offer to reliable-channel-open times of ``connections`` successive connections to one child."""
    times: list[float] = []
    async with spawn_process("accept", "--count", str(connections), "--seconds", "60") as (signaling, process):
        current: list[WebRtcTransport] = []

        async def dispatch() -> None:
            while True:
                signal = await signaling.recv_signal()
                if current:
                    current[-1].handle_signal(signal)

        dispatcher = asyncio.ensure_future(dispatch())
        try:
            for _ in range(connections):
                transport = WebRtcTransport(loopback_config(), signaling, CHILD, pump_signals=False)
                current.append(transport)
                await transport.start()
                times.append(transport.timings["reliable_open"])
                await transport.close()
                await asyncio.sleep(0.02)
        finally:
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)
        result = await read_result(process)
    times.sort()
    return {
        "connections": len(times),
        "p50_ms": statistics.median(times) * 1000,
        "min_ms": times[0] * 1000,
        "max_ms": times[-1] * 1000,
        "child_accepted": result["accepted"],
    }


def _once(benchmark, coro_factory):
    results = {}

    def run():
        results.update(asyncio.run(coro_factory()))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(results)
    print(results)
    return results


def bench_throughput_batched_reliable(benchmark):
    result = _once(benchmark, lambda: throughput(300_000))
    assert result["received"] == 300_000


def bench_throughput_unbatched(benchmark):
    result = _once(benchmark, lambda: throughput(10_000, batching=False))
    assert result["received"] == 10_000


def bench_throughput_raw_aiortc(benchmark):
    result = _once(benchmark, lambda: raw_aiortc(10_000))
    assert result["received"] == 10_000


def bench_latency_1k_per_second(benchmark):
    result = _once(benchmark, lambda: latency(1_000, 3.0))
    assert result["received"] == result["sent"]


def bench_latency_10k_per_second(benchmark):
    result = _once(benchmark, lambda: latency(10_000, 3.0))
    assert result["received"] == result["sent"]


def bench_setup_time(benchmark):
    result = _once(benchmark, lambda: setup_time(20))
    assert result["connections"] == 20


async def _main() -> None:
    rows = [
        ("batched reliable", await throughput(300_000)),
        ("unbatched", await throughput(10_000, batching=False)),
        ("raw aiortc", await raw_aiortc(10_000)),
        ("latency @1k/s", await latency(1_000, 3.0)),
        ("latency @10k/s", await latency(10_000, 3.0)),
        ("set-up", await setup_time(20)),
    ]
    for name, result in rows:
        print(f"{name:18} {result}")


if __name__ == "__main__":
    asyncio.run(_main())

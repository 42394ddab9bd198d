"""The fast SCTP data path next to stock aiortc and the relay path, two processes on loopback.

Each scenario runs once per implementation in the same run (the machine's speed drifts, so only
side-by-side figures compare):

* batched 32-byte messages, one way: CLASP SET frames with a 32-byte value packed back to back
  into 16 KiB DataChannel messages (what clasp_fast's batcher does under load); the receiver
  decodes every frame. Figure: frames/s from the first send to the last frame decoded.
* bulk: 64 KiB DataChannel messages one way. Figure: MB/s (10^6 bytes/s).
* round trip at 1,000 messages/s: a 32-byte-value frame every millisecond, echoed by the other
  process; p50/p99 of the round trip. The relay path does the same through the embedded relay
  (a third process) to a ponger process.

Both peers run the same implementation (``fast``: FastPeerConnection, ``stock``: aiortc's
RTCPeerConnection). Run ``pytest benchmarks/bench_sctp.py --benchmark-only -s`` or
``python -m benchmarks.bench_sctp`` for a table. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time

from clasp_fast.codec import decode_all, encode
from clasp_fast.messages import Publish, Set

VALUE = b"x" * 32
BATCH_BYTES = 16 * 1024
BULK_MESSAGE = 64 * 1024
RTT_RATE = 1_000
RTT_SECONDS = 2.0
RTT_WARMUP = 200
TIMEOUT = 60.0
# Bounded transfers: enough for a second or more of traffic at each implementation's speed.
BATCHED_FRAMES = {"fast": 600_000, "stock": 150_000}
BULK_MESSAGES = {"fast": 400, "stock": 120}


# -- peer connections ----------------------------------------------------------------------

def _new_pc(fast: bool):
    from aiortc import RTCConfiguration

    from clasp_fast.ice import install_gathering_policy
    from clasp_fast.sctp import peer_connection_class

    # No ICE servers: without a configuration aiortc would query a public STUN server.
    pc = peer_connection_class(fast)(RTCConfiguration(iceServers=[]))
    return pc, lambda: install_gathering_policy(
        pc.sctp.transport.transport.iceGatherer._connection,
        host_addresses=["127.0.0.1"],
        udp_receive_buffer=4 * 1024 * 1024,
    )


def _recv(conn):
    """The next message on a pipe, waiting at most TIMEOUT seconds."""
    if not conn.poll(TIMEOUT):
        raise TimeoutError(f"no message from the other process in {TIMEOUT} s")
    return conn.recv()


def _child_main(fast: bool, mode: str, conn) -> None:
    asyncio.run(_child(fast, mode, conn))


async def _child(fast: bool, mode: str, conn) -> None:
    from aiortc import RTCSessionDescription

    loop = asyncio.get_running_loop()
    pc, restrict = _new_pc(fast)
    done = asyncio.Event()
    counts = {"frames": 0, "bytes": 0, "first": None, "last": None}
    expected = {"frames": None}

    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        @channel.on("message")
        def on_message(message) -> None:
            if mode == "echo":
                channel.send(message)
                return
            now = time.time()
            if counts["first"] is None:
                counts["first"] = now
            counts["last"] = now
            counts["bytes"] += len(message)
            if mode == "frames":
                counts["frames"] += len(decode_all(message))
            else:
                counts["frames"] += 1
            if expected["frames"] is not None and counts["frames"] >= expected["frames"]:
                done.set()

    offer = await loop.run_in_executor(None, _recv, conn)
    await pc.setRemoteDescription(RTCSessionDescription(**offer))
    restrict()
    await pc.setLocalDescription(await pc.createAnswer())
    conn.send({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
    expected["frames"] = await loop.run_in_executor(None, _recv, conn)
    if mode == "echo":
        await loop.run_in_executor(None, _recv, conn)  # parent says stop
    else:
        try:
            await asyncio.wait_for(done.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            pass
        conn.send(counts)
    await pc.close()


class Peer:
    """This process's side of a two-process connection; the child answers in ``mode``."""

    def __init__(self, fast: bool, mode: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(fast, mode, child_conn), daemon=True)
        self.process.start()
        self.fast = fast

    async def connect(self, label: str = "bench"):
        from aiortc import RTCSessionDescription

        loop = asyncio.get_running_loop()
        self.pc, restrict = _new_pc(self.fast)
        channel = self.pc.createDataChannel(label)
        restrict()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.conn.send({"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type})
        answer = await loop.run_in_executor(None, _recv, self.conn)
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        opened = asyncio.Event()
        channel.on("open", opened.set)
        if channel.readyState != "open":
            await asyncio.wait_for(opened.wait(), 30)
        return channel

    async def result(self) -> dict:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self.conn.poll, TIMEOUT + 10)
        return self.conn.recv() if ready else {}

    async def close(self) -> None:
        await self.pc.close()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


async def _drain(channel, limit: int, deadline: float) -> None:
    while channel.bufferedAmount > limit and time.monotonic() < deadline:
        await asyncio.sleep(0.0005)


async def _send_one_way(fast: bool, mode: str, expected: int, payload: bytes, messages: int) -> tuple[dict, float]:
    """Send ``payload`` ``messages`` times to a receiving peer process; its counts and our start time."""
    peer = Peer(fast, mode)
    try:
        channel = await peer.connect()
        peer.conn.send(expected)
        deadline = time.monotonic() + TIMEOUT
        started = time.time()
        for _ in range(messages):
            await _drain(channel, 1024 * 1024, deadline)
            channel.send(payload)
        counts = await peer.result()
    finally:
        await peer.close()
    return counts, started


# -- scenarios -----------------------------------------------------------------------------

async def batched_32(fast: bool) -> dict:
    """Frames/s for 32-byte-value SET frames packed into 16 KiB messages, one way."""
    kind = "fast" if fast else "stock"
    frame = encode(Set(address="/bench/x", value=VALUE))
    per_message = BATCH_BYTES // len(frame)
    messages = BATCHED_FRAMES[kind] // per_message
    counts, started = await _send_one_way(fast, "frames", messages * per_message, frame * per_message, messages)
    elapsed = (counts.get("last") or started) - started
    frames = counts.get("frames", 0)
    return {"implementation": kind, "frames": frames, "frame_bytes": len(frame), "frames_per_message": per_message,
            "frames_per_s": frames / elapsed if elapsed > 0 else 0.0, "complete": frames == messages * per_message}


async def bulk_64k(fast: bool) -> dict:
    """MB/s for 64 KiB messages, one way."""
    kind = "fast" if fast else "stock"
    messages = BULK_MESSAGES[kind]
    counts, started = await _send_one_way(fast, "bytes", messages, bytes(BULK_MESSAGE), messages)
    elapsed = (counts.get("last") or started) - started
    received = counts.get("bytes", 0)
    return {"implementation": kind, "messages": counts.get("frames", 0), "bytes": received,
            "mb_per_s": received / elapsed / 1e6 if elapsed > 0 else 0.0,
            "complete": received == messages * BULK_MESSAGE}


def _percentiles(samples: list[float]) -> dict:
    if len(samples) < 2:
        return {"rtt_p50_ms": float("nan"), "rtt_p99_ms": float("nan"), "rounds": len(samples)}
    q = statistics.quantiles(samples, n=100)
    return {"rtt_p50_ms": q[49] * 1e3, "rtt_p99_ms": q[98] * 1e3, "rounds": len(samples)}


async def _paced_rtt(send, sent_at: dict, received: list) -> None:
    count = int(RTT_RATE * RTT_SECONDS)
    start = time.perf_counter()
    for i in range(count):
        target = start + i / RTT_RATE
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[i] = time.perf_counter()
        await send(i)
    deadline = time.perf_counter() + 5
    while len(received) < count and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)


async def rtt_p2p(fast: bool) -> dict:
    """Round trip at 1,000 messages/s over the DataChannel, echoed by the child."""
    peer = Peer(fast, "echo")
    sent_at: dict[int, float] = {}
    samples: list[float] = []
    try:
        channel = await peer.connect()
        peer.conn.send(None)
        base = encode(Set(address="/bench/x", value=VALUE))

        def on_message(message) -> None:
            i = int.from_bytes(message[-4:], "big")
            samples.append(time.perf_counter() - sent_at[i])

        channel.on("message", on_message)

        async def send(i: int) -> None:
            channel.send(base + i.to_bytes(4, "big"))

        await _paced_rtt(send, sent_at, samples)
        peer.conn.send("stop")
    finally:
        await peer.close()
    return {"implementation": "fast" if fast else "stock", **_percentiles(samples[RTT_WARMUP:])}


async def rtt_relay() -> dict:
    """The same paced round trip through the embedded relay (third process) to a ponger process."""
    from benchmarks.bench_relay import Server, _open, _ponger_main

    server = Server("relay")
    ctx = server.ctx
    ready, stop = ctx.Event(), ctx.Event()
    ponger = ctx.Process(target=_ponger_main, args=(server.url, True, ready, stop), daemon=True)
    ponger.start()
    samples: list[float] = []
    try:
        assert ready.wait(30), "ponger did not start"
        ws = await _open(server.url, True, "pinger", "/bench/pong")
        ping = encode(Publish(address="/bench/ping", signal="event", value=VALUE))
        sent_at: dict[int, float] = {}
        pending: list[int] = []

        async def reader() -> None:
            # The relay keeps order on one connection: pongs answer pings first in, first out.
            while True:
                await ws.recv()
                samples.append(time.perf_counter() - sent_at[pending.pop(0)])

        read_task = asyncio.ensure_future(reader())

        async def send(i: int) -> None:
            pending.append(i)
            await ws.send(ping)

        await _paced_rtt(send, sent_at, samples)
        read_task.cancel()
        await ws.close()
    finally:
        stop.set()
        ponger.join(10)
        if ponger.is_alive():
            ponger.kill()
        server.close()
    return {"implementation": "relay", **_percentiles(samples[RTT_WARMUP:])}


# -- pytest-benchmark ----------------------------------------------------------------------

def _once(benchmark, coroutine_factory) -> dict:
    results = {}

    def run() -> None:
        results.update(asyncio.run(coroutine_factory()))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(results)
    print(results)
    return results


async def _both(scenario) -> dict:
    fast = await scenario(True)
    stock = await scenario(False)
    return {"fast": fast, "stock": stock}


def bench_sctp_batched_32_bytes(benchmark) -> None:
    """Batched 32-byte-value frames one way, fast next to stock (target: fast >= 300,000 frames/s)."""
    results = _once(benchmark, lambda: _both(batched_32))
    assert results["fast"]["complete"]


def bench_sctp_bulk_64k(benchmark) -> None:
    """64 KiB messages one way, fast next to stock (target: fast >= 20 MB/s)."""
    results = _once(benchmark, lambda: _both(bulk_64k))
    assert results["fast"]["complete"]


def bench_sctp_rtt_at_1k_per_second(benchmark) -> None:
    """Round trip at 1,000 msg/s: fast, stock and the relay path (target: fast p50 <= 0.6 x relay p50)."""

    async def all_three() -> dict:
        return {"fast": await rtt_p2p(True), "stock": await rtt_p2p(False), "relay": await rtt_relay()}

    results = _once(benchmark, all_three)
    results["fast_over_relay_p50"] = results["fast"]["rtt_p50_ms"] / results["relay"]["rtt_p50_ms"]
    benchmark.extra_info["fast_over_relay_p50"] = results["fast_over_relay_p50"]


async def run_all() -> dict:
    """Every scenario, fast/stock (and relay for the round trip), in one run."""
    return {
        "batched_32": await _both(batched_32),
        "bulk_64k": await _both(bulk_64k),
        "rtt_1k": {"fast": await rtt_p2p(True), "stock": await rtt_p2p(False), "relay": await rtt_relay()},
    }


def format_table(results: dict) -> str:
    b, k, r = results["batched_32"], results["bulk_64k"], results["rtt_1k"]
    lines = [
        "scenario                         fast            stock aiortc    relay path",
        f"batched 32 B frames/s, one way   {b['fast']['frames_per_s']:>12,.0f}    "
        f"{b['stock']['frames_per_s']:>12,.0f}    -",
        f"bulk 64 KiB, MB/s                {k['fast']['mb_per_s']:>12.1f}    {k['stock']['mb_per_s']:>12.1f}    -",
        f"RTT p50 at 1k msg/s, ms          {r['fast']['rtt_p50_ms']:>12.3f}    "
        f"{r['stock']['rtt_p50_ms']:>12.3f}    {r['relay']['rtt_p50_ms']:.3f}",
        f"RTT p99 at 1k msg/s, ms          {r['fast']['rtt_p99_ms']:>12.3f}    "
        f"{r['stock']['rtt_p99_ms']:>12.3f}    {r['relay']['rtt_p99_ms']:.3f}",
        f"fast p50 / relay p50             {r['fast']['rtt_p50_ms'] / r['relay']['rtt_p50_ms']:>12.2f}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(asyncio.run(run_all())))

"""A WebRTC peer in its own process, for the two-process tests and benchmarks.

Run as ``python -m tests.webrtc_peer --port P --mode MODE``: it connects to the parent's signaling
server on 127.0.0.1:P (StreamSignaling), answers the parent's offer, then

* ``stream``: sends Set messages to the parent on clasp-reliable (bounded by --count and --seconds);
* ``sink``:   counts received messages and one-way latencies (the first 8 bytes of each Set's bytes
  value are the sender's time.time_ns()); prints one JSON line with the results and exits after
  --count messages or --seconds;
* ``echo``:   sends every received message back;
* ``accept``: answers up to --count offers one after the other (one signaling reader dispatching to
  the current transport, as a P2P layer does), each connection living until the parent closes it.

The parent side is :func:`spawn_peer`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

from clasp_fast.messages import Set
from clasp_fast.signaling import StreamSignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport

REPO_ROOT = Path(__file__).resolve().parent.parent
PARENT = "parent"
CHILD = "child"


def loopback_config(**options) -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], **options)


def percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _run(args: argparse.Namespace) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    signaling = StreamSignaling(CHILD, reader, writer)
    config = loopback_config(
        batching=not args.no_batch, keepalive_interval=args.keepalive_interval, keepalive_timeout=args.keepalive_timeout
    )
    if args.mode == "accept":
        return await _accept(args, signaling, config)
    sender, receiver = await WebRtcTransport.connect(config, signaling, PARENT, role="answerer")
    transport = sender.transport
    deadline = time.monotonic() + args.seconds
    result: dict = {"mode": args.mode}
    if args.mode == "stream":
        sent = 0
        while sent < args.count and time.monotonic() < deadline and transport.state == "connected":
            await sender.send(Set(address="/stream/value", value=sent))
            sent += 1
            if sent % 100 == 0:
                await asyncio.sleep(0.001)
        result["sent"] = sent
    elif args.mode in ("sink", "echo"):
        latencies: list[int] = []
        counts = {"received": 0}
        times: dict[str, float] = {}

        async def consume() -> None:
            async for message in receiver:
                now = time.time_ns()
                counts["received"] += 1
                if "first" not in times:
                    times["first"] = time.perf_counter()
                times["last"] = time.perf_counter()
                if args.mode == "echo":
                    await sender.send(message)
                value = getattr(message, "value", None)
                if isinstance(value, bytes) and len(value) >= 8:
                    latencies.append(now - int.from_bytes(value[:8], "big"))
                if counts["received"] >= args.count:
                    return

        try:
            await asyncio.wait_for(consume(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        latencies.sort()
        result.update(
            received=counts["received"],
            seconds=times["last"] - times["first"] if times else 0.0,
            p50_ms=percentile(latencies, 0.50) / 1e6,
            p99_ms=percentile(latencies, 0.99) / 1e6,
            latency_samples=len(latencies),
        )
    await transport.close()
    return result


async def _accept(args: argparse.Namespace, signaling: StreamSignaling, config: WebRtcConfig) -> dict:
    current: WebRtcTransport | None = None
    starts: list[asyncio.Task] = []
    accepted = 0
    deadline = time.monotonic() + args.seconds
    reader = asyncio.ensure_future(signaling.recv_signal())
    try:
        while time.monotonic() < deadline:
            if accepted >= args.count and current is not None and current.state in ("closed", "failed"):
                break
            done, _ = await asyncio.wait({reader}, timeout=0.05)
            if not done:
                continue
            try:
                signal = reader.result()
            except Exception:
                break  # the parent went away
            reader = asyncio.ensure_future(signaling.recv_signal())
            if signal.get("type") == "offer" and accepted < args.count:
                if current is not None:
                    await current.close()
                current = WebRtcTransport(config, signaling, PARENT, pump_signals=False)
                starts.append(asyncio.ensure_future(current.start(signal)))
                accepted += 1
            elif current is not None:
                current.handle_signal(signal)
    finally:
        reader.cancel()
        if current is not None:
            await current.close()
        await asyncio.gather(*starts, return_exceptions=True)
    return {"mode": "accept", "accepted": accepted}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["stream", "sink", "echo", "accept"], required=True)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-batch", action="store_true")
    parser.add_argument("--keepalive-interval", type=float, default=1.0)
    parser.add_argument("--keepalive-timeout", type=float, default=5.0)
    args = parser.parse_args()
    result = asyncio.run(_run(args))
    print(json.dumps(result), flush=True)


@contextlib.asynccontextmanager
async def spawn_process(
    mode: str, *extra: str, timeout: float = 20.0, module: str = "tests.webrtc_peer"
) -> AsyncIterator[tuple[StreamSignaling, asyncio.subprocess.Process]]:
    """Start a child peer (``python -m module``) in ``mode``; yields the parent's signaling stream to it
    and the process."""
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--port", str(port), "--mode", mode, *extra,
        cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE,
    )
    signaling = None
    try:
        reader, writer = await asyncio.wait_for(accepted, timeout)
        signaling = StreamSignaling(PARENT, reader, writer)
        yield signaling, process
    finally:
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        if signaling is not None:
            signaling.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def spawn_peer(
    mode: str, *extra: str, config: WebRtcConfig | None = None, timeout: float = 20.0,
    module: str = "tests.webrtc_peer",
) -> AsyncIterator[tuple[WebRtcTransport, asyncio.subprocess.Process]]:
    """Start a child peer in ``mode`` and connect to it as the offerer; yields (transport, process)."""
    async with spawn_process(mode, *extra, timeout=timeout, module=module) as (signaling, process):
        transport = WebRtcTransport(config or loopback_config(), signaling, CHILD)
        try:
            await transport.start()
            yield transport, process
        finally:
            await transport.close()


async def read_result(process: asyncio.subprocess.Process, timeout: float = 30.0) -> dict:
    """The JSON result line a sink/echo/stream child prints before it exits."""
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    return json.loads(line)


if __name__ == "__main__":
    main()

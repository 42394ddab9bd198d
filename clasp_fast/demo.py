"""``python -m clasp_fast demo``: the main job on one machine, start to finish.

1. Starts the embedded relay on 127.0.0.1 (an ephemeral port).
2. Starts two peer processes against it — a watcher (``peer --watch``) and a sensor streaming
   synthetic samples to it (``peer --stream``) — which find each other through the relay and
   stream over a WebRTC DataChannel; the watcher prints rate, latency and the route taken.
3. Runs the P2P-vs-relay benchmark (``bench --quick``) and prints its table.

Everything stays on loopback: ICE host candidates are 127.0.0.1 only, no STUN server is used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys

__all__ = ["add_demo", "run_demo"]


def add_demo(subparsers) -> None:
    """Register the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo", help="relay + two peers streaming over P2P, then the P2P-vs-relay bench (loopback only)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long the sensor streams (default 5)")
    p.add_argument("--rate", type=float, default=1000.0, help="sensor messages per second (default 1000)")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark after the streaming part")
    p.add_argument("--bench-args", default="--quick", help="arguments for the bench (default --quick)")
    p.set_defaults(func=lambda args: asyncio.run(run_demo(args)))


def _peer_command(url: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "clasp_fast", "peer", "--relay", url, *arguments]


async def _stop(process: asyncio.subprocess.Process, timeout: float = 10.0) -> int:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode if process.returncode is not None else -1


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status (non-zero when a part failed)."""
    from .relay import Relay

    print("== 1. embedded relay", flush=True)
    relay = await Relay.start("127.0.0.1", 0)
    print(f"relay on {relay.url}", flush=True)
    watcher = sensor = None
    status = 0
    try:
        print("== 2. two peers: 'viewer' watches /sensor/**, 'sensor-1' streams to it over P2P", flush=True)
        watcher = await asyncio.create_subprocess_exec(
            *_peer_command(relay.url, "--id", "viewer", "--watch", "/sensor/**",
                           "--seconds", str(args.seconds + 15)))
        await asyncio.sleep(1.0)  # let the watcher announce itself before the sensor looks for it
        sensor = await asyncio.create_subprocess_exec(
            *_peer_command(relay.url, "--id", "sensor-1", "--stream", "/sensor/accel",
                           "--rate", str(args.rate), "--to", "viewer", "--seconds", str(args.seconds)))
        sensor_status = await asyncio.wait_for(sensor.wait(), args.seconds + 30)
        await asyncio.sleep(1.5)  # the watcher prints its last second
        watcher_status = await _stop(watcher)
        if sensor_status != 0:
            print(f"demo: the sensor exited with status {sensor_status}", file=sys.stderr)
            status = 1
        if watcher_status not in (0, -15):
            print(f"demo: the watcher exited with status {watcher_status}", file=sys.stderr)
            status = 1
    except asyncio.TimeoutError:
        print("demo: the sensor did not finish in time", file=sys.stderr)
        status = 1
    finally:
        for process in (sensor, watcher):
            if process is not None:
                await _stop(process)
        await relay.close()

    if args.no_bench:
        return status
    print("== 3. P2P against the relay path (python -m clasp_fast bench "
          f"{args.bench_args})", flush=True)
    bench = subprocess.run([sys.executable, "-m", "clasp_fast", "bench", *args.bench_args.split()],
                           env=os.environ.copy())
    return status or bench.returncode

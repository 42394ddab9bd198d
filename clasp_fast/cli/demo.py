"""``python -m clasp_fast demo``: the main job on one machine, start to finish, narrated.

1. Starts the embedded relay on 127.0.0.1 (an ephemeral port), in this process.
2. Starts two peer processes against it -- a watcher (``peer --watch``) and a sensor streaming
   synthetic samples to it (``peer --stream``) -- which find each other through the relay and
   stream over a WebRTC DataChannel. Every line they print is labelled with the peer's name; at the
   end a summary says what was sent and received over each route.
3. Runs the P2P-vs-relay benchmark (``bench --quick``) and prints its table.

Everything stays on loopback: ICE host candidates are 127.0.0.1 only, no STUN server is used.
SIGINT or SIGTERM stops the demo and every process it started (peers, bench, bench workers).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
from typing import Any

from . import arguments as types

__all__ = ["add_demo", "run_demo"]

LABEL_WIDTH = 8
STOP_TIMEOUT = 15.0


def add_demo(subparsers) -> None:
    """Register the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo", help="relay + two peers streaming over P2P, then the P2P-vs-relay bench (loopback only)")
    p.add_argument("--seconds", type=types.positive_float, default=5.0,
                   help="how long the sensor streams (default 5)")
    p.add_argument("--rate", type=types.positive_float, default=1000.0,
                   help="sensor messages per second (default 1000)")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark after the streaming part")
    p.add_argument("--bench-args", default="--quick", help="arguments for the bench (default --quick)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_demo(args))
    except asyncio.CancelledError:
        return 130


def _say(text: str = "") -> None:
    print(text, flush=True)


class _Child:
    """A ``python -m clasp_fast`` child process whose output lines are printed with a label and kept."""

    def __init__(self, label: str | None, *arguments: str) -> None:
        self.label = label
        self.arguments = arguments
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None
        self._line_added = asyncio.Event()

    async def start(self) -> None:
        command = [sys.executable, "-m", "clasp_fast", *self.arguments]
        if self.label is None:  # the bench: its own output, as it is
            self.process = await asyncio.create_subprocess_exec(*command)
            return
        self.process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._pump = asyncio.ensure_future(self._print_lines())

    async def _print_lines(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        prefix = f"{self.label:<{LABEL_WIDTH}} | "
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            self._line_added.set()
            _say(prefix + line)

    async def wait_for_line(self, text: str, timeout: float) -> bool:
        """True once a line containing ``text`` was printed; False after ``timeout`` or the exit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(text in line for line in self.lines):
            remaining = deadline - loop.time()
            if remaining <= 0 or self._pump is None or self._pump.done():
                return False
            self._line_added.clear()
            try:
                await asyncio.wait_for(self._line_added.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return True

    async def wait(self, timeout: float) -> int | None:
        """The exit status, or None when it is still running after ``timeout``."""
        assert self.process is not None
        try:
            status = await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        if self._pump is not None:
            await asyncio.wait_for(self._pump, STOP_TIMEOUT)
        return status

    async def stop(self, sig: int = signal.SIGINT) -> int:
        """Ask the process to end with ``sig`` (a peer prints its summary, the bench cleans up its
        workers), kill it after a bound; returns the exit status."""
        process = self.process
        if process is None:
            return 0
        if process.returncode is None:
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                pass
        status = await self.wait(STOP_TIMEOUT)
        if status is None:
            process.kill()
            status = await process.wait()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        return status


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM cancel the demo's main task; its clean-up then stops every child."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None  # called from the demo's main task
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(number, task.cancel)
        except (NotImplementedError, RuntimeError):
            pass


def _count(n: int) -> str:
    return f"{n:,}"


def _story(sensor: dict[str, Any] | None, viewer: dict[str, Any] | None) -> list[str]:
    """The summary: sent and received per route, and P2P against the relay in one sentence."""
    from .peer import WARMUP_S

    if sensor is None or viewer is None:
        missing = "sensor-1" if sensor is None else "viewer"
        return [f"summary: {missing} printed no summary, see its lines above"]
    lines = [
        f"summary: sensor-1 sent {_count(sensor['messages'])} messages: {_count(sensor['p2p'])} over P2P, "
        f"{_count(sensor['relay'])} through the relay",
        f"         viewer received {_count(viewer['messages'])}: {_count(viewer['p2p'])} over P2P, "
        f"{_count(viewer['relay'])} through the relay",
    ]
    lost = sensor["messages"] - viewer["messages"]
    if lost > 0:
        lines.append(f"         {_count(lost)} lost: streams travel on the unreliable channel")
    if viewer["messages"]:
        share = 100.0 * viewer["p2p"] / viewer["messages"]
        sentence = (f"P2P carried {share:.0f}% of what arrived; the relay carried the messages sent "
                    "while the WebRTC link was set up.")
        if viewer["p50_ms"] is not None:
            sentence += (f" Latency after the first {WARMUP_S:g} s: p50 {viewer['p50_ms']:.2f} ms, "
                         f"p99 {viewer['p99_ms']:.2f} ms.")
        lines.extend(_wrap(sentence, "         "))
    return lines


def _wrap(text: str, indent: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 79, initial_indent=indent, subsequent_indent=indent)


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status (non-zero when a part failed)."""
    from .peer import parse_summary
    from ..relay import Relay

    _stop_on_signals()
    _say("== 1. relay: the embedded CLASP relay, in this process")
    relay = await Relay.start("127.0.0.1", 0)
    _say(f"relay on {relay.url}")
    watcher = _Child("viewer", "peer", "--relay", relay.url, "--id", "viewer", "--watch", "/sensor/**",
                     "--seconds", str(args.seconds + 30))
    sensor = _Child("sensor-1", "peer", "--relay", relay.url, "--id", "sensor-1", "--stream", "/sensor/accel",
                    "--rate", f"{args.rate:g}", "--to", "viewer", "--seconds", f"{args.seconds:g}")
    status = 0
    try:
        _say()
        _say(f"== 2. peers: 'viewer' watches /sensor/**; 'sensor-1' streams {args.rate:,.0f} samples/s")
        for line in _wrap(
                f"to it for {args.seconds:g} s. They find each other through the relay and connect over WebRTC. The "
                "sensor starts at once, so its first messages go through the relay while the P2P link "
                "is set up (a fraction of a second); then everything flows peer to peer. That switch "
                "shows as a latency spike in the viewer's first second, which the summary leaves "
                "out.", "   "):
            _say(line)
        await watcher.start()
        if not await watcher.wait_for_line("session", 60):
            _say("demo: the viewer did not start")
            return 1
        await sensor.start()
        sensor_status = await sensor.wait(args.seconds + 60)
        if sensor_status is None:
            _say("demo: the sensor did not finish in time")
            status = 1
        elif sensor_status != 0:
            _say(f"demo: the sensor exited with status {sensor_status}")
            status = 1
        await asyncio.sleep(1.5)  # the viewer prints its last second
        watcher_status = await watcher.stop()
        if watcher_status != 0:
            _say(f"demo: the viewer exited with status {watcher_status}")
            status = 1
        _say()
        for line in _story(parse_summary(sensor.lines), parse_summary(watcher.lines)):
            _say(line)
    finally:
        await asyncio.shield(asyncio.gather(sensor.stop(), watcher.stop(), return_exceptions=True))
        await asyncio.shield(relay.close())

    if args.no_bench:
        return status
    _say()
    _say(f"== 3. bench: P2P against the relay path (python -m clasp_fast bench {args.bench_args})")
    bench = _Child(None, "bench", *shlex.split(args.bench_args))
    try:
        await bench.start()
        bench_status = await bench.wait(600)
    finally:
        await asyncio.shield(bench.stop())
    return status or (bench_status if bench_status is not None else 1)

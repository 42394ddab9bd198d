"""The benchmark runner: starts the relay and the peer processes, drives the phases, collects figures.

Each path gets a fresh sending and receiving process (``clasp_fast.bench.worker``), signaled
through the relay. On one connection it runs three phases of ``duration`` seconds each:

0. throughput: the sender sends as fast as the transport accepts;
1. latency: paced at ``rate`` messages/s;
2. loaded latency: paced at ``load_rate`` messages/s.

Every wait has a time-out and the whole run is bounded by ``timeout``; whatever happens, the
worker processes are stopped (then killed) and ``--lan`` namespaces deleted before returning.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import platform
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import lan as lan_module
from .report import build_report
from .stats import latency_summary
from .paths import EVENT_LOOPS, HEADER_SIZE, PATHS, SCENARIOS
from .scenarios import run_conflation, run_p2p_fanout

__all__ = ["BenchConfig", "BenchError", "run_bench", "run_bench_sync", "PATHS"]

LATENCY_METHOD = "one-way, shared host clock"
PHASES = ("throughput", "latency", "loaded")
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent.parent)


class BenchError(Exception):
    """The benchmark could not run (a worker failed to start, a step timed out, ...)."""


@dataclass
class BenchConfig:
    """What to measure and the bounds of a run (the CLI options, see ``clasp-fast bench --help``)."""

    paths: tuple[str, ...] = PATHS
    duration: float = 3.0          # seconds per phase
    rate: int = 1_000              # messages/s of the latency phase
    load_rate: int = 10_000        # messages/s of the loaded-latency phase
    size: int = 32                 # payload bytes per message
    max_count: int = 2_000_000     # cap on messages of the throughput phase
    relay_url: str | None = None   # None: start the embedded relay
    lan: bool = False
    loop: str = "asyncio"          # every worker's event loop: "asyncio" or "uvloop"
    busy_poll_ms: float = 0.0      # the P2P peers' WebRtcConfig.busy_poll, in ms (0: off)
    local_yield: bool = True       # the P2P peers' WebRtcConfig.yield_to_local_peer
    timeout: float = 115.0         # hard bound on the whole run (s)
    floor_msgs_per_s: float = 10_000.0
    floor_p99_ms: float = 10.0
    # Stream scenarios (clasp_fast.bench.scenarios), none by default: --scenarios conflation,p2p_fanout.
    scenarios: tuple[str, ...] = ()
    conflation_rate: int = 10_000        # SETs/s of the conflation scenario's sender
    conflation_addresses: int = 100
    conflation_handle_ms: float = 1.0    # the receiver's handler time per update (~1,000/s)
    progress: TextIO | None = None
    # Filled by the runner: raw one-way latencies (ns) per path and phase, for plots.
    samples: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [p for p in self.paths if p not in PATHS]
        if unknown:
            raise ValueError(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        if not self.paths and not self.scenarios:
            raise ValueError("no path or scenario to measure")
        if self.conflation_rate <= 0 or self.conflation_addresses <= 0 or self.conflation_handle_ms < 0:
            raise ValueError("conflation rate and addresses must be positive, the handler time >= 0")
        if self.size < HEADER_SIZE:
            raise ValueError(f"size must be at least {HEADER_SIZE} bytes (stamp, phase and sequence number)")
        if self.size > 60_000:
            raise ValueError("size must be at most 60000 bytes (one CLASP frame holds at most 65535)")
        if self.duration <= 0 or self.rate <= 0 or self.load_rate <= 0:
            raise ValueError("duration, rate and load rate must be positive")
        if not (0 <= self.busy_poll_ms <= 10_000):
            raise ValueError(f"busy poll must be 0 (off) to 10000 ms, got {self.busy_poll_ms}")
        if self.loop not in EVENT_LOOPS:
            raise ValueError(f"unknown event loop {self.loop!r}; choose from {', '.join(EVENT_LOOPS)}")
        if self.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError("--loop uvloop: uvloop is not installed (pip install 'clasp_fast[uvloop]')")
        if self.relay_url is not None and self.lan:
            raise ValueError("--lan starts its own relay inside a namespace; it cannot use --relay")
        if self.relay_url is not None:
            from ..relay_client import validate_url

            validate_url(self.relay_url)  # URLError, a ValueError, says how to write it


class Progress:
    """One line per step on a stream (stderr), with the time since the start."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(f"[{time.monotonic() - self.started:6.1f}s] {text}\n")
            self.stream.flush()


class Worker:
    """A worker process and its JSON-lines link."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=30)
        self._stderr_task: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True, limit=64 * 1024 * 1024)
        self._stderr_task = asyncio.ensure_future(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while True:
            line = await self.process.stderr.readline()
            if not line:
                return
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    def send(self, **command: Any) -> None:
        assert self.process is not None and self.process.stdin is not None
        if self.process.stdin.is_closing():
            raise BenchError(f"{self.name}: cannot send {command.get('cmd')!r}, its input is closed")
        self.process.stdin.write((json.dumps(command) + "\n").encode())

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event named ``event``; BenchError on an ``error`` event, exit or time-out."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(self.process.stdout.readline(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise BenchError(f"{self.name}: no '{event}' within {timeout:.1f} s") from None
            if not line:
                code = await self._exit_code()
                raise BenchError(f"{self.name} exited (code {code}) before '{event}'{self._tail()}")
            try:
                message = json.loads(line)
            except ValueError:
                self.stderr_tail.append("stdout: " + line.decode(errors="replace").rstrip())
                continue
            if message.get("event") == "error":
                raise BenchError(f"{self.name}: {message.get('message')}{self._tail()}")
            if message.get("event") == event:
                return message

    async def _exit_code(self) -> int | None:
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), 2)
        except asyncio.TimeoutError:
            return None

    def _tail(self) -> str:
        lines = [line for line in self.stderr_tail if line.strip()][-8:]
        return ("\n  " + "\n  ".join(lines)) if lines else ""

    async def stop(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Ask the worker to stop; its final ``done`` event (with CPU) or None. Kills it if it hangs."""
        process = self.process
        if process is None:
            return None
        done = None
        if process.returncode is None:
            try:
                self.send(cmd="stop")
                done = await self.expect("done", timeout)
            except (BenchError, ConnectionError, OSError):
                pass
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 2)
            except asyncio.TimeoutError:
                self.kill()
                await process.wait()
        if self._stderr_task is not None:
            try:
                await asyncio.wait_for(self._stderr_task, 2)
            except asyncio.TimeoutError:
                self._stderr_task.cancel()
        return done

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass


class _Run:
    """State of one run: the workers alive, the namespaces, the deadline."""

    def __init__(self, config: BenchConfig, live_pids: list[int] | None) -> None:
        self.config = config
        self.live_pids = live_pids
        self.progress = Progress(config.progress)
        self.deadline = time.monotonic() + config.timeout
        self.workers: list[Worker] = []
        self.namespaces: lan_module.LanNamespaces | None = None
        self.lan_note: str | None = None
        self.relay: Worker | None = None
        self.relay_url: str | None = config.relay_url
        self.host = {"a": "127.0.0.1", "b": "127.0.0.1"}

    def left(self, wanted: float) -> float:
        """``wanted`` seconds, cut to what remains of the run's time bound."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"the run exceeded its time bound of {self.config.timeout:g} s")
        return min(wanted, remaining)

    def worker_argv(self, side: str, role: str, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "clasp_fast.bench.worker", role, *args, "--loop", self.config.loop]
        if self.config.busy_poll_ms:
            argv += ["--busy-poll", f"{self.config.busy_poll_ms / 1000:g}"]
        if not self.config.local_yield:
            argv.append("--no-local-yield")
        return self.namespaces.command(side, argv) if self.namespaces is not None else argv

    async def spawn(self, name: str, side: str, role: str, *args: str) -> Worker:
        worker = Worker(name, self.worker_argv(side, role, *args))
        self.workers.append(worker)
        await worker.start()
        if self.live_pids is not None and worker.pid is not None:
            self.live_pids.append(worker.pid)
        return worker

    async def stop_workers(self, workers: list[Worker]) -> dict[str, dict[str, Any] | None]:
        results = await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        for w in workers:
            if w in self.workers:
                self.workers.remove(w)
        return {w.name: (r if isinstance(r, dict) else None) for w, r in zip(workers, results, strict=True)}

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()

    async def relay_cpu(self) -> float | None:
        if self.relay is None:
            return None
        self.relay.send(cmd="cpu")
        return (await self.relay.expect("cpu", self.left(10)))["cpu_s"]


async def run_bench(config: BenchConfig, *, live_pids: list[int] | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``config`` and return the report (the ``--json`` content).

    ``live_pids``, when given, receives the pid of every worker started (for a last-resort clean-up).
    """
    run = _Run(config, live_pids)
    started_wall = time.time()
    results: dict[str, dict[str, Any] | None] = {}
    scenarios: dict[str, dict[str, Any]] = {}
    try:
        if config.lan:
            reason = lan_module.unavailable_reason()
            if reason is None:
                namespaces = lan_module.LanNamespaces()
                try:
                    await asyncio.get_running_loop().run_in_executor(None, namespaces.setup)
                except RuntimeError as exc:
                    reason = str(exc)
                else:
                    run.namespaces = namespaces
                    run.host = dict(namespaces.addresses)
                    run.progress(f"lan: {namespaces.describe()}")
            if reason is not None:
                run.lan_note = f"--lan unavailable ({reason}); ran on loopback"
                run.progress(run.lan_note)
        if run.relay_url is None:
            run.progress("starting the embedded relay")
            run.relay = await run.spawn("relay", "a", "relay", "--host", run.host["a"])
            run.relay_url = (await run.relay.expect("ready", run.left(30)))["url"]
        else:
            await _check_relay(run.relay_url, run.left(10))
        run.progress(f"relay at {run.relay_url}")
        for path in config.paths:
            try:
                results[path] = await _run_path(run, path)
            except BenchError as exc:
                if time.monotonic() >= run.deadline:
                    raise
                run.progress(f"{path}: FAILED: {exc}")
                results[path] = {"error": str(exc)}
        for name in config.scenarios:
            scenario = run_conflation if name == "conflation" else run_p2p_fanout
            try:
                scenarios[name] = await scenario(run)
            except BenchError as exc:
                if time.monotonic() >= run.deadline:
                    raise
                run.progress(f"{name}: FAILED: {exc}")
                scenarios[name] = {"error": str(exc)}
    finally:
        try:
            await asyncio.wait_for(run.stop_workers(list(run.workers)), 10)
        except BaseException:
            run.kill_all()
            raise
        finally:
            if run.namespaces is not None:
                run.namespaces.teardown()
    meta = {
        "latency_method": LATENCY_METHOD,
        "network": "lan (veth pair between two network namespaces)" if run.namespaces is not None
        else "loopback (127.0.0.1)",
        "network_detail": run.namespaces.describe() if run.namespaces is not None else None,
        "lan_note": run.lan_note,
        "relay": config.relay_url or "embedded (clasp_fast.relay, queue_size 100000)",
        "event_loop": config.loop,
        "busy_poll_ms": config.busy_poll_ms,
        "local_yield": config.local_yield,
        "payload_bytes": config.size,
        "frame_bytes": next((r["frame_bytes"] for r in results.values() if r and "frame_bytes" in r), None),
        "duration_s": config.duration,
        "rate_msgs_per_s": config.rate,
        "load_rate_msgs_per_s": config.load_rate,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_wall)),
        "elapsed_s": round(time.time() - started_wall, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    return build_report(results, meta, config.floor_msgs_per_s, config.floor_p99_ms, scenarios)


async def _check_relay(url: str, timeout: float) -> None:
    """Fail once, before any worker starts, when the relay given with ``--relay`` does not answer."""
    from ..relay_client import ClaspClient
    from ..errors import ClaspError

    try:
        client = await ClaspClient.connect(url, name="clasp_fast bench check", reconnect=False,
                                           connect_timeout=timeout)
    except ClaspError as exc:
        raise BenchError(f"no CLASP relay answers at {url} ({getattr(exc, 'reason', exc)}): start one with "
                         "`python -m clasp_fast relay`, or leave out --relay to use the embedded one") from None
    await client.close()


async def _run_path(run: _Run, path: str) -> dict[str, Any]:
    config = run.config
    progress = run.progress
    progress(f"{path}: starting sender and receiver")
    common = ["--path", path, "--relay", run.relay_url or "", "--size", str(config.size)]
    receiver = await run.spawn(f"{path} receiver", "b", "receiver", *common, "--host-address", run.host["b"])
    sender = await run.spawn(f"{path} sender", "a", "sender", *common, "--host-address", run.host["a"])
    pair = [sender, receiver]
    try:
        session = (await receiver.expect("ready", run.left(60)))["session"]
        frame_bytes = (await sender.expect("ready", run.left(60)))["frame_bytes"]
        progress(f"{path}: connecting")
        sender.send(cmd="connect", peer=session)
        connected = await sender.expect("connected", run.left(40))
        receiver_start = (await receiver.expect("connected", run.left(40)))["cpu_s"]
        sender_start = connected["cpu_s"]
        relay_start = await run.relay_cpu()
        wall_start = time.perf_counter()
        phases: dict[str, dict[str, Any]] = {}
        samples = run.config.samples.setdefault(path, {})
        idle = 0.5 if path == "p2p_unreliable" else 2.0
        plan = (("throughput", 0, config.max_count),
                ("latency", config.rate, max(1, int(config.rate * config.duration))),
                ("loaded", config.load_rate, max(1, int(config.load_rate * config.duration))))
        for number, (name, rate, max_count) in enumerate(plan):
            what = "full speed" if rate == 0 else f"{rate:,} msg/s"
            progress(f"{path}: {name} phase ({what}, {config.duration:g} s)")
            if rate:
                receiver.send(cmd="keep_latencies", phase=number)
                await receiver.expect("ok", run.left(10))
            sender.send(cmd="phase", phase=number, rate=rate, duration=config.duration, max_count=max_count)
            sent = await sender.expect("sent", run.left(config.duration + 20))
            receiver.send(cmd="collect", phase=number, sent=sent["sent"], idle=idle, timeout=config.duration + 5)
            got = await receiver.expect("collected", run.left(config.duration + 15))
            latencies = got.pop("latencies_ns")
            samples[name] = latencies
            phases[name] = _phase_figures(sent, got, latencies, frame_bytes)
            sender_end, receiver_end = sent["cpu_s"], got["cpu_s"]
        wall = time.perf_counter() - wall_start
        relay_end = await run.relay_cpu()
    finally:
        await run.stop_workers(pair)
    progress(f"{path}: done")
    cpu = {
        "wall_s": round(wall, 3),
        "sender_s": round(sender_end - sender_start, 3),
        "receiver_s": round(receiver_end - receiver_start, 3),
        "relay_s": None if relay_start is None or relay_end is None else round(relay_end - relay_start, 3),
    }
    for role in ("sender", "receiver", "relay"):
        seconds = cpu[f"{role}_s"]
        cpu[f"{role}_pct"] = None if seconds is None else round(100.0 * seconds / wall, 1)
    return {"setup_ms": round(connected["setup_ms"], 2), "frame_bytes": frame_bytes, "phases": phases, "cpu": cpu}


def _phase_figures(sent: dict[str, Any], got: dict[str, Any], latencies: list[int], frame_bytes: int) -> dict[str, Any]:
    """Counts, delivered rate (first send to last arrival) and latency summary of one phase."""
    received = got["received"]
    span_ns = (got["last_ns"] - sent["first_ns"]) if got.get("last_ns") else 0
    delivered_rate = received / (span_ns / 1e9) if span_ns > 0 else None
    return {
        "sent": sent["sent"],
        "received": received,
        "send_seconds": round(sent["seconds"], 4),
        "send_rate_msgs_per_s": round(sent["sent"] / sent["seconds"], 1) if sent["seconds"] > 0 else None,
        "delivered_msgs_per_s": None if delivered_rate is None else round(delivered_rate, 1),
        "delivered_mb_per_s": None if delivered_rate is None else round(delivered_rate * frame_bytes / 1e6, 3),
        "loss_pct": round(100.0 * (sent["sent"] - received) / sent["sent"], 3) if sent["sent"] else None,
        "frames_per_datachannel_message": sent.get("frames_per_datachannel_message"),
        "sctp_retransmissions": sent.get("sctp_retransmissions"),
        "sctp_loss_probes": sent.get("sctp_loss_probes"),
        "latency_us": latency_summary(latencies),
    }


def run_bench_sync(config: BenchConfig) -> dict[str, Any]:
    """:func:`run_bench` under ``asyncio.run``; even when the run is interrupted (Ctrl-C) no worker
    process and no namespace of this run is left when it returns or raises."""
    pids: list[int] = []
    try:
        return asyncio.run(run_bench(config, live_pids=pids))
    finally:
        for pid in pids:
            _kill_child(pid)
        if config.lan:
            mine = f"{lan_module.NAMESPACE_PREFIX}{os.getpid()}-"
            for name in lan_module.list_bench_namespaces():
                if name.startswith(mine):
                    lan_module._ip("netns", "del", name, check=False)


def _kill_child(pid: int) -> None:
    """Kill and reap ``pid`` if it is still an unreaped child of this process."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # already reaped: the pid may belong to someone else by now
    if reaped:
        return
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass

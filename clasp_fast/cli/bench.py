"""``python -m clasp_fast bench``: the command-line face of the benchmark runner.

Exit status: 0 measured (and, with ``--verify``, every floor met); 1 ``--verify`` and a floor
missed; 2 the benchmark could not run or a path failed; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from . import arguments as types

__all__ = ["add_bench", "run"]

QUICK_DURATION = 1.0
DEFAULT_DURATION = 3.0
QUICK_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 115.0


def add_bench(subparsers) -> None:
    """Register ``bench``."""
    from ..bench.paths import EVENT_LOOPS, PATHS, SCENARIOS

    p = subparsers.add_parser(
        "bench", help="measure P2P (batched, unbatched, unreliable) against the relay path",
        description="Measure throughput, one-way latency (at a set rate and under load), loss, set-up time "
                    "and CPU of P2P WebRTC paths and the relay path, side by side, and check the floors "
                    "(>= 10,000 msg/s, p99 < 10 ms). Loopback only unless --lan. The table goes to stdout, "
                    "progress to stderr.")
    p.add_argument("--duration", type=types.positive_float, default=None, metavar="S",
                   help=f"seconds per phase (default {DEFAULT_DURATION:g}; --quick {QUICK_DURATION:g})")
    p.add_argument("--rate", type=types.positive_int, default=1_000, metavar="MSG_PER_S",
                   help="message rate of the latency phase (default 1000)")
    p.add_argument("--load-rate", type=types.positive_int, default=10_000, metavar="MSG_PER_S",
                   help="message rate of the loaded-latency phase (default 10000)")
    p.add_argument("--size", type=types.non_negative_int, default=32, metavar="BYTES",
                   help="payload bytes per message, at least 13 (default 32)")
    p.add_argument("--quick", action="store_true", help="short phases: about 20-30 s in all")
    p.add_argument("--paths", default=PATHS, metavar="LIST", type=_paths,
                   help=f"comma-separated paths to measure (default all: {','.join(PATHS)}; "
                        "'none' with --scenarios runs only those)")
    p.add_argument("--scenarios", default=(), metavar="LIST", type=_scenarios,
                   help=f"stream scenarios to run after the paths (none by default): {','.join(SCENARIOS)}; "
                        "each runs about 2 x --duration (conflation) or 5 x --duration (p2p_fanout) plus set-up")
    p.add_argument("--conflation-rate", type=types.positive_int, default=10_000, metavar="MSG_PER_S",
                   help="SETs/s of the conflation scenario's sender (default 10000, over 100 addresses; "
                        "the receiver takes about 1000/s)")
    p.add_argument("--relay", metavar="URL", default=None, type=types.relay_url,
                   help="use this relay (ws://host:port) instead of starting the embedded one")
    p.add_argument("--lan", action="store_true",
                   help="as root with iproute2: peers in two network namespaces joined by a veth pair")
    p.add_argument("--loop", choices=EVENT_LOOPS, default="asyncio",
                   help="the event loop of every bench process (default asyncio; uvloop needs the "
                        "clasp_fast[uvloop] extra)")
    p.add_argument("--busy-poll", type=types.non_negative_float, default=0.0, metavar="MS",
                   help="the P2P paths' peers keep their event loop polling for MS ms after each message "
                        "(WebRtcConfig.busy_poll): lower latency for a core each; default 0, off")
    p.add_argument("--no-local-yield", action="store_true",
                   help="the P2P paths' peers do not give the CPU up after a message that leaves at once "
                        "(WebRtcConfig.yield_to_local_peer=False), to compare")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="draw the latency distributions (needs matplotlib)")
    p.add_argument("--verify", action="store_true", help="exit 1 when a floor is missed")
    p.add_argument("--floor-msgs", type=types.non_negative_float, default=10_000.0, metavar="MSG_PER_S",
                   help="throughput floor (default 10000)")
    p.add_argument("--floor-p99-ms", type=types.positive_float, default=10.0, metavar="MS",
                   help="p99 latency floor (default 10)")
    p.add_argument("--width", type=types.non_negative_int, default=None, metavar="COLUMNS",
                   help="fit the table to this many columns (default: the terminal's width; 0: no limit)")
    p.add_argument("--timeout", type=types.positive_float, default=None, metavar="S",
                   help=f"hard bound on the whole run (default {DEFAULT_TIMEOUT:g}; --quick {QUICK_TIMEOUT:g})")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.plot import PlotUnavailable, plot_latencies, require_matplotlib
    from ..bench.report import render_scenarios, render_table, write_json
    from ..bench.runner import BenchConfig, BenchError, run_bench_sync

    def fail(message: str) -> int:
        print(f"clasp-fast bench: error: {message}", file=sys.stderr)
        return 2

    for option, target in (("--json", args.json), ("--plot", args.plot)):
        if target is not None and not os.path.isdir(os.path.dirname(os.path.abspath(target))):
            return fail(f"{option} {target}: the folder {os.path.dirname(os.path.abspath(target))} does not exist")
    if args.plot:
        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            return fail(str(exc))
    duration = args.duration if args.duration is not None else (QUICK_DURATION if args.quick else DEFAULT_DURATION)
    timeout = args.timeout if args.timeout is not None else (QUICK_TIMEOUT if args.quick else DEFAULT_TIMEOUT)
    try:
        config = BenchConfig(
            paths=args.paths,
            duration=duration, rate=args.rate, load_rate=args.load_rate, size=args.size,
            relay_url=args.relay, lan=args.lan, loop=args.loop, busy_poll_ms=args.busy_poll,
            local_yield=not args.no_local_yield, timeout=timeout,
            scenarios=args.scenarios, conflation_rate=args.conflation_rate,
            floor_msgs_per_s=args.floor_msgs, floor_p99_ms=args.floor_p99_ms,
            progress=None if args.quiet else sys.stderr)
    except ValueError as exc:
        return fail(str(exc))
    try:
        report = run_bench_sync(config)
    except BenchError as exc:
        return fail(str(exc))
    width = args.width if args.width is not None else shutil.get_terminal_size((80, 24)).columns
    if config.paths:
        print(render_table(report, width=width or None), flush=True)
    for line in render_scenarios(report):
        print(line, flush=True)
    if args.json:
        write_json(report, args.json)
        print(f"clasp-fast bench: wrote every figure as JSON to {args.json}", file=sys.stderr)
    if args.plot:
        plot_latencies(config.samples, report, args.plot)
        print(f"clasp-fast bench: wrote the latency plot to {args.plot}", file=sys.stderr)
    if any(report[p] is not None and report[p].get("error") for p in (*config.paths, *config.scenarios)):
        return 2
    if args.verify and config.paths and not report["floors"]["pass"]:
        print("clasp-fast bench: --verify: a floor was missed", file=sys.stderr)
        return 1
    return 0


def _paths(text: str) -> tuple[str, ...]:
    """``--paths``: comma-separated names from :data:`PATHS` (``none``: no path)."""
    from ..bench.paths import PATHS

    return () if text.strip() == "none" else _names(text, PATHS, "path")


def _scenarios(text: str) -> tuple[str, ...]:
    """``--scenarios``: comma-separated names from :data:`SCENARIOS`."""
    from ..bench.paths import SCENARIOS

    return _names(text, SCENARIOS, "scenario")


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or repr(text)}: choose from {', '.join(known)}")
    return names

"""The benchmark harness: P2P (batched, unbatched, unreliable) against the relay path, side by side.

``python -m clasp_fast bench`` (see :mod:`clasp_fast.bench.command`), or from code::

    from clasp_fast.bench import BenchConfig, run_bench_sync, render_table
    report = run_bench_sync(BenchConfig(duration=1.0))
    print(render_table(report))
"""

from __future__ import annotations

from .report import build_report, render_table, write_json
from .runner import PATHS, BenchConfig, BenchError, run_bench, run_bench_sync
from .stats import latency_summary, percentile

__all__ = [
    "PATHS",
    "BenchConfig",
    "BenchError",
    "build_report",
    "latency_summary",
    "percentile",
    "render_table",
    "run_bench",
    "run_bench_sync",
    "write_json",
]

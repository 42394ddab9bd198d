"""Readable pytest-benchmark output for ``pytest benchmarks --benchmark-only``.

* pytest-benchmark's tables show median, operations per second and rounds (pass
  ``--benchmark-columns`` to choose others), so they fit a terminal.
* The cases that run once and measure inside (end-to-end paths, relay, SCTP, WebRTC) put their
  figures in ``extra_info``; their wall time alone says little, so the figures are printed after
  the tables: one row per end-to-end path (msg/s, MB/s, latency percentiles, set-up, loss), and
  one wrapped line per other case.
"""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

import pytest

DEFAULT_COLUMNS = ["min", "max", "mean", "stddev", "median", "iqr", "outliers", "ops", "rounds", "iterations"]
READABLE_COLUMNS = ["median", "ops", "rounds"]
E2E_GROUP = "end-to-end: one run per path (figures below)"
ONCE_GROUP = "one run each (figures below)"
_FIGURES = pytest.StashKey[list]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark 5.2 fills in its default list, 5.3 leaves None to resolve later.
    if config.getoption("benchmark_columns", default=None) in (None, DEFAULT_COLUMNS):
        config.option.benchmark_columns = list(READABLE_COLUMNS)
    config.stash[_FIGURES] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Cases measured in one round go in their own tables, apart from the micro-benchmarks.
    for item in items:
        if item.path.name == "bench_e2e.py":
            item.add_marker(pytest.mark.benchmark(group=E2E_GROUP))
        elif item.path.name in ("bench_relay.py", "bench_sctp.py", "bench_webrtc.py"):
            item.add_marker(pytest.mark.benchmark(group=ONCE_GROUP))


@pytest.fixture(autouse=True)
def _keep_figures(request: pytest.FixtureRequest):
    yield
    benchmark = request.node.funcargs.get("benchmark")
    info = getattr(benchmark, "extra_info", None)
    if info:
        request.config.stash[_FIGURES].append((request.node.name, dict(info)))


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if not figures:
        return
    width = shutil.get_terminal_size((100, 24)).columns
    e2e = [(name, info) for name, info in figures if "throughput_msgs_per_s" in info]
    others = [(name, info) for name, info in figures if "throughput_msgs_per_s" not in info]
    write = terminalreporter.write_line
    if e2e:
        terminalreporter.section("end-to-end figures (one-way latency in ms, shared host clock)", sep="-")
        for line in e2e_table(e2e):
            write(line)
    if others:
        terminalreporter.section("figures of the single-run cases", sep="-")
        for name, info in others:
            for line in textwrap.wrap(f"{name}: {_flatten(info)}", width, subsequent_indent="    "):
                write(line)


def e2e_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per end-to-end case: throughput, latency at the set rate and under load, set-up, loss."""
    header = ["case", "msg/s", "MB/s", "p50/p99 @1k", "p50/p99 @10k", "set-up ms", "loss %"]
    table = [header]
    for name, info in rows:
        table.append([
            name.replace("bench_e2e_", ""),
            _fmt(info.get("throughput_msgs_per_s"), 0),
            _fmt(info.get("throughput_mb_per_s"), 2),
            _pair(info, "latency_p50_us", "latency_p99_us"),
            _pair(info, "latency_loaded_p50_us", "latency_loaded_p99_us"),
            _fmt(info.get("setup_ms"), 1),
            _fmt(info.get("loss_pct"), 2),
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(row))
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _pair(info: dict[str, Any], low: str, high: str) -> str:
    a, b = info.get(low), info.get(high)
    if a is None or b is None:
        return "-"
    return f"{a / 1000:.2f} / {b / 1000:.2f}"


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _flatten(info: dict[str, Any], prefix: str = "") -> str:
    parts = []
    for key, value in info.items():
        if isinstance(value, dict):
            parts.append(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, float):
            parts.append(f"{prefix}{key} {value:,.3g}" if abs(value) < 100 else f"{prefix}{key} {value:,.0f}")
        elif isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{prefix}{key} {value:,}")
        else:
            parts.append(f"{prefix}{key} {value}")
    return ", ".join(part for part in parts if part)

"""Percentiles and rates of the benchmark figures (pure Python, no numpy needed)."""

from __future__ import annotations

import math
import resource
from typing import Iterable, Mapping, Sequence

__all__ = ["percentile", "histogram_percentile", "latency_summary", "rate", "ratio", "cpu_seconds", "PERCENTILES"]

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile of ascending ``sorted_values`` by the nearest-rank method.

    The result is always one of the samples: the smallest value with at least ``pct`` % of the
    samples at or below it (p50 of 1..100 is 50, p99 is 99, p100 is 100).
    Raises ValueError for an empty sequence or ``pct`` outside 0..100.
    """
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {pct!r}")
    rank = math.ceil(pct / 100.0 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def histogram_percentile(histogram: Mapping[int, int], pct: float) -> int:
    """:func:`percentile` of the samples a histogram (value -> how many times) counts."""
    total = sum(histogram.values())
    if not total:
        raise ValueError("percentile of no samples")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {pct!r}")
    rank = max(1, math.ceil(pct / 100.0 * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    raise AssertionError("unreachable: rank <= total")  # pragma: no cover


def latency_summary(latencies_ns: Iterable[int]) -> dict[str, float | int | None]:
    """``{p50, p90, p99, max}`` in microseconds (floats, 1 decimal) and ``samples``.

    With no samples every figure is None (JSON null), never zero.
    """
    ordered = sorted(latencies_ns)
    summary: dict[str, float | int | None] = {}
    for name, pct in PERCENTILES:
        summary[name] = round(percentile(ordered, pct) / 1000.0, 1) if ordered else None
    summary["max"] = round(ordered[-1] / 1000.0, 1) if ordered else None
    summary["samples"] = len(ordered)
    return summary


def rate(count: int, seconds: float) -> float | None:
    """``count / seconds``, or None when no time passed."""
    if seconds <= 0:
        return None
    return count / seconds


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

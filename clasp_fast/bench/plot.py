"""``--plot FILE.png``: the latency distributions of every path on one chart (needs matplotlib)."""

from __future__ import annotations

from typing import Any

__all__ = ["PlotUnavailable", "require_matplotlib", "plot_latencies"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            "(or, in a clone of clasp_fast, pip install -e '.[plot]')") from None


def plot_latencies(samples: dict[str, dict[str, list[int]]], report: dict[str, Any], filename: str) -> None:
    """Empirical CDFs of one-way latency per path: at the set rate (left) and under load (right)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    meta = report.get("meta", {})
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for axis, phase, rate in ((axes[0], "latency", meta.get("rate_msgs_per_s")),
                              (axes[1], "loaded", meta.get("load_rate_msgs_per_s"))):
        for path, phases in samples.items():
            values = phases.get(phase) or []
            if not values:
                continue
            ms = np.sort(np.asarray(values, dtype=np.float64)) / 1e6
            fraction = np.arange(1, len(ms) + 1) / len(ms)
            axis.plot(ms, fraction, label=f"{path.replace('_', ' ')} (n={len(ms):,})")
        axis.axvline(report["floors"]["latency_p99_ms"]["floor"], color="grey", linestyle="--", linewidth=1)
        axis.axhline(0.99, color="grey", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        axis.set_xlabel("one-way latency, ms (shared host clock; log scale)")
        axis.set_title(f"{rate:,} msg/s" if rate else phase)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right", fontsize="small")
    axes[0].set_ylabel("fraction of messages at or below")
    figure.suptitle(f"clasp_fast bench: {meta.get('network', '')}, payload {meta.get('payload_bytes')} B; "
                    "dashed: p99 floor, dotted: p99")
    figure.tight_layout()
    figure.savefig(filename, dpi=110)
    plt.close(figure)

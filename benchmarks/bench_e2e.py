"""End-to-end figures of each path through the same runner as ``python -m clasp_fast bench``.

``pytest benchmarks/bench_e2e.py --benchmark-only`` runs every path once (1 s per phase: full
speed, 1,000 msg/s, 10,000 msg/s) in its own sender and receiver processes, with the embedded
relay in a third. pytest-benchmark's time is the whole run of one path (process start included);
the figures are in ``extra_info`` (``--benchmark-json`` keeps them): throughput, one-way latency
percentiles in µs on the shared host clock, loss, set-up time and CPU per process. The ``lan``
cases repeat two paths across a veth pair between two network namespaces (root and iproute2 only).
"""

from __future__ import annotations

import pytest

from clasp_fast.bench import BenchConfig, run_bench_sync
from clasp_fast.bench import lan as lan_module

DURATION = 1.0


def _run_path(benchmark, path: str, *, lan: bool = False) -> dict:
    results: dict = {}

    def run() -> None:
        config = BenchConfig(paths=(path,), duration=DURATION, lan=lan, timeout=90)
        results.update(run_bench_sync(config))

    benchmark.pedantic(run, rounds=1, iterations=1)
    figures = results[path]
    assert figures["error"] is None, figures["error"]
    latency, loaded = figures["latency_us"], figures["latency_loaded_us"]
    benchmark.extra_info.update(
        network=results["meta"]["network"],
        payload_bytes=results["meta"]["payload_bytes"],
        frame_bytes=results["meta"]["frame_bytes"],
        throughput_msgs_per_s=figures["throughput_msgs_per_s"],
        throughput_mb_per_s=figures["throughput_mb_per_s"],
        **{f"latency_{k}_us": latency[k] for k in ("p50", "p90", "p99", "max")},
        **{f"latency_loaded_{k}_us": loaded[k] for k in ("p50", "p90", "p99", "max")},
        loaded_rate_reached_msgs_per_s=figures["loaded_rate_achieved_msgs_per_s"],
        loss_pct=figures["loss_pct"],
        setup_ms=figures["setup_ms"],
        cpu_sender_pct=figures["cpu"]["sender_pct"],
        cpu_receiver_pct=figures["cpu"]["receiver_pct"],
        cpu_relay_pct=figures["cpu"]["relay_pct"],
        latency_method=results["meta"]["latency_method"],
    )
    return figures


def _delivered_everything(figures: dict) -> bool:
    return all(phase["received"] == phase["sent"] for phase in figures["phases"].values())


def bench_e2e_p2p_batched(benchmark):
    assert _delivered_everything(_run_path(benchmark, "p2p_batched"))


def bench_e2e_p2p_unbatched(benchmark):
    assert _delivered_everything(_run_path(benchmark, "p2p_unbatched"))


def bench_e2e_p2p_unreliable(benchmark):
    figures = _run_path(benchmark, "p2p_unreliable")
    assert figures["phases"]["latency"]["received"] > 0  # losses are allowed here, and reported


def bench_e2e_relay(benchmark):
    assert _delivered_everything(_run_path(benchmark, "relay"))


lan_only = pytest.mark.skipif(lan_module.unavailable_reason() is not None,
                              reason=f"--lan unavailable: {lan_module.unavailable_reason()}")


@lan_only
def bench_e2e_lan_p2p_batched(benchmark):
    assert _delivered_everything(_run_path(benchmark, "p2p_batched", lan=True))


@lan_only
def bench_e2e_lan_relay(benchmark):
    assert _delivered_everything(_run_path(benchmark, "relay", lan=True))

"""The bench's stream scenarios: the report entries, the CLI options, and one tiny real run of each
(real worker processes, relay and aiortc on loopback). No assertion is about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clasp_fast.bench import BenchConfig
from clasp_fast.bench.report import render_scenarios
from clasp_fast.bench.scenarios import _fanout_step, conflation_figures

REPO_ROOT = Path(__file__).resolve().parent.parent


def _phase(p50: float, p99: float, first: float, last: float, handled: int = 900) -> dict:
    return {"age_ms": {"p50": p50, "p90": p99, "p99": p99}, "age_first_third_ms": first, "age_last_third_ms": last,
            "handled": handled, "conflated": 9000, "sent": 10000}


def test_conflation_passes_only_with_a_low_p99_and_a_growing_unconflated_age() -> None:
    good = conflation_figures(_phase(5, 15, 4, 6), _phase(700, 1800, 100, 1600), 10_000, 1.0)
    assert good["pass"] and good["latest_age_ms"] == {"p50": 5, "p99": 15}
    assert good["latest_age_ms_unconflated"] == {"p50": 700, "p99": 1800} and good["target_p99_ms"] == 20.0
    assert not conflation_figures(_phase(5, 25, 4, 6), _phase(700, 1800, 100, 1600), 10_000, 1.0)["pass"]
    assert not conflation_figures(_phase(5, 15, 4, 6), _phase(10, 12, 11, 10), 10_000, 1.0)["pass"]


def test_a_fanout_step_sums_deliveries_and_finds_the_slowest_receiver() -> None:
    start = 1_000_000_000
    step = _fanout_step(2, "p2p", {"sent": 100, "first_ns": start},
                        [[100, start + 1_000_000_000], [50, start + 500_000_000]])
    assert step["throughput_msgs_per_s"] == 150.0  # 150 deliveries over the 1 s to the last arrival
    assert step["slowest_receiver_msgs_per_s"] == 100.0
    none = _fanout_step(1, "p2p", {"sent": 10, "first_ns": start}, [[0, None]])
    assert none["throughput_msgs_per_s"] is None and none["slowest_receiver_msgs_per_s"] == 0.0


def test_a_report_without_scenarios_has_them_as_null() -> None:
    from clasp_fast.bench.report import build_report

    report = build_report({}, {})
    assert report["conflation"] is None and report["p2p_fanout"] is None
    assert render_scenarios(report) == []
    with_one = build_report({}, {}, scenarios={"conflation": {"error": "it broke"}})
    assert render_scenarios(with_one) == ["conflation: FAILED: it broke"]


def test_config_and_cli_refuse_unknown_scenarios() -> None:
    with pytest.raises(ValueError, match="unknown scenario.*nope.*conflation, p2p_fanout"):
        BenchConfig(scenarios=("nope",))
    with pytest.raises(ValueError, match="no path or scenario"):
        BenchConfig(paths=())
    BenchConfig(paths=(), scenarios=("conflation",))
    done = subprocess.run([sys.executable, "-m", "clasp_fast", "bench", "--scenarios", "conflation,nope"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown scenario nope" in done.stderr


def test_a_tiny_run_of_both_scenarios_writes_their_json_entries(tmp_path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "clasp_fast", "bench", "--paths", "none", "--scenarios", "conflation,p2p_fanout",
         "--duration", "0.4", "--conflation-rate", "4000", "--timeout", "150", "--json", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    conflation = report["conflation"]
    assert conflation["rate_msgs_per_s"] == 4000 and conflation["sent"] > 0
    assert conflation["handled"] > 0 and conflation["conflated"] > 0
    assert set(conflation["latest_age_ms"]) == {"p50", "p99"}
    fanout = report["p2p_fanout"]
    assert fanout["receivers"] == 8 and [s["receivers"] for s in fanout["steps"]] == [1, 2, 4, 8]
    assert fanout["throughput_msgs_per_s"] > 0 and fanout["slowest_receiver_msgs_per_s"] > 0
    assert fanout["relay"]["receivers"] == 8 and fanout["relay"]["throughput_msgs_per_s"] > 0
    assert all(report[p] is None for p in ("p2p_batched", "relay"))  # --paths none
    lines = render_scenarios(report)
    assert len(lines) == 3 and all(line in done.stdout for line in lines)

"""Benchmark harness plumbing without processes: percentiles, payloads, report shape, floors, table."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clasp_fast.bench import BenchConfig, build_report, latency_summary, percentile, render_table, write_json
from clasp_fast.bench.plot import PlotUnavailable, require_matplotlib
from clasp_fast.bench.report import judge_floors
from clasp_fast.bench.stats import rate, ratio
from clasp_fast.bench.worker import (HEADER_SIZE, PATHS, YIELD_EVERY, make_payload, read_payload, run_on_loop,
                                     send_phase)
from clasp_fast.bench.paths import SCENARIOS
from clasp_fast.cli import main

PATH_KEYS = {"throughput_msgs_per_s", "throughput_mb_per_s", "latency_us", "latency_loaded_us", "setup_ms", "loss_pct"}


# -- percentiles ---------------------------------------------------------------------------------

def test_percentiles_of_one_to_a_hundred_are_the_nearest_ranks() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (0, 1, 50, 90, 99, 100)] == [1, 1, 50, 90, 99, 100]
    assert percentile(values, 50.5) == 51
    assert percentile(values, 99.01) == 100


def test_percentiles_of_small_samples_are_observed_values() -> None:
    assert percentile([7], 50) == 7 and percentile([7], 99) == 7
    ten = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert percentile(ten, 50) == 50
    assert percentile(ten, 90) == 90
    assert percentile(ten, 99) == 100  # ceil(9.9) = 10th value
    assert percentile([1, 2], 50) == 1


@pytest.mark.parametrize("values, pct, message", [([], 50, "no samples"), ([1], 101, "0..100"), ([1], -1, "0..100")])
def test_percentile_rejects_bad_input(values, pct, message) -> None:
    with pytest.raises(ValueError, match=message):
        percentile(values, pct)


def test_latency_summary_sorts_and_converts_nanoseconds_to_microseconds() -> None:
    # 1..1000 µs given in ns, shuffled.
    samples = [(i * 7919 % 1000 + 1) * 1000 for i in range(1000)]
    assert sorted(samples) == [i * 1000 for i in range(1, 1001)]
    summary = latency_summary(samples)
    assert summary == {"p50": 500.0, "p90": 900.0, "p99": 990.0, "max": 1000.0, "samples": 1000}
    assert latency_summary([1500, 2500]) == {"p50": 1.5, "p90": 2.5, "p99": 2.5, "max": 2.5, "samples": 2}


def test_latency_summary_of_nothing_is_null_not_zero() -> None:
    assert latency_summary([]) == {"p50": None, "p90": None, "p99": None, "max": None, "samples": 0}


def test_rate_and_ratio_handle_missing_values() -> None:
    assert rate(100, 0.5) == 200
    assert rate(100, 0) is None
    assert ratio(6, 3) == 2
    assert ratio(None, 3) is None and ratio(3, None) is None and ratio(3, 0) is None


# -- payload -------------------------------------------------------------------------------------

def test_payload_carries_stamp_phase_and_sequence_padded_to_size() -> None:
    value = make_payload(32, 2, 70_000)
    assert len(value) == 32
    stamp, phase = read_payload(value)
    assert phase == 2
    assert int.from_bytes(value[9:13], "big") == 70_000
    assert value[HEADER_SIZE:] == bytes(32 - HEADER_SIZE)
    import time
    assert abs(time.time_ns() - stamp) < 5_000_000_000
    assert len(make_payload(HEADER_SIZE, 0, 0)) == HEADER_SIZE


def test_payload_sequence_wraps_at_32_bits_and_large_payloads_are_zero_padded() -> None:
    value = make_payload(60_000, 1, 2**32 + 5)
    assert len(value) == 60_000
    assert read_payload(value)[1] == 1  # type: ignore[index]
    assert value[9:13] == (5).to_bytes(4, "big")
    assert value[HEADER_SIZE:] == bytes(60_000 - HEADER_SIZE)


async def test_the_sender_loop_sends_payloads_of_the_phase_size() -> None:
    values: list[bytes] = []

    async def send_one(message, **options) -> None:
        values.append(message.value)

    async def send_group(messages) -> None:
        values.extend(message.value for message in messages)

    command = {"phase": 4, "rate": 0, "duration": 30.0, "max_count": 70}
    await send_phase(send_one, 100, command, reliable=True)
    await send_phase(send_one, 100, command, send_group, reliable=True)
    assert len(values) == 140
    for index, value in enumerate(values):
        assert len(value) == 100 and value[HEADER_SIZE:] == bytes(100 - HEADER_SIZE)
        assert read_payload(value)[1] == 4  # type: ignore[index]
        assert int.from_bytes(value[9:13], "big") == index % 70


@pytest.mark.parametrize("value", [None, b"short", "a string of some length", 12345])
def test_read_payload_ignores_foreign_values(value) -> None:
    assert read_payload(value) is None


# -- the sender's loop ---------------------------------------------------------------------------

def _recorder() -> tuple[list, object, object]:
    calls: list = []

    def fields(value: bytes) -> tuple[int, int, int]:  # stamp, phase, sequence (make_payload's header)
        return (*read_payload(value), int.from_bytes(value[HEADER_SIZE - 4:HEADER_SIZE], "big"))  # type: ignore[misc]

    async def send_one(message, **options) -> None:
        calls.append((fields(message.value), options))

    async def send_group(messages) -> None:
        calls.extend((fields(m.value), {"group": len(messages)}) for m in messages)

    return calls, send_one, send_group


@pytest.mark.parametrize("reliable", [None, True, False])
async def test_a_full_speed_phase_sends_max_count_in_order_passing_reliable_only_when_set(reliable) -> None:
    calls, send_one, _ = _recorder()
    command = {"phase": 3, "rate": 0, "duration": 30.0, "max_count": 150}
    result = await send_phase(send_one, 32, command, reliable=reliable)
    assert result["sent"] == 150 and result["phase"] == 3
    assert [phase for (_, phase, _), _ in calls] == [3] * 150
    assert [options for _, options in calls] == [{} if reliable is None else {"reliable": reliable}] * 150
    assert [sequence for (_, _, sequence), _ in calls] == list(range(150))


async def test_a_full_speed_phase_with_send_many_sends_groups_of_yield_every() -> None:
    calls, send_one, send_group = _recorder()
    command = {"phase": 1, "rate": 0, "duration": 30.0, "max_count": 2 * YIELD_EVERY + 5}
    result = await send_phase(send_one, 32, command, send_group)
    assert result["sent"] == 2 * YIELD_EVERY + 5
    assert [options["group"] for _, options in calls] == [YIELD_EVERY] * (2 * YIELD_EVERY) + [5] * 5


async def test_a_full_speed_phase_ends_at_its_duration() -> None:
    calls, send_one, _ = _recorder()
    command = {"phase": 0, "rate": 0, "duration": 0.05, "max_count": 10**9}
    result = await asyncio.wait_for(send_phase(send_one, 32, command, reliable=True), 10)
    assert 0 < result["sent"] == len(calls) < 10**9
    assert result["sent"] % YIELD_EVERY == 0  # the clock is read between groups


async def test_a_paced_phase_sends_what_is_due_and_no_more() -> None:
    calls, send_one, _ = _recorder()
    command = {"phase": 2, "rate": 200, "duration": 0.25, "max_count": 10**6}
    result = await send_phase(send_one, 32, command, reliable=True)
    assert 1 <= result["sent"] == len(calls) <= int(result["seconds"] * 200) + 1  # never ahead of the rate
    assert [sequence for (_, _, sequence), _ in calls] == list(range(result["sent"]))


# -- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"paths": ("p2p_fast",)}, "unknown path"),
    ({"paths": ()}, "no path"),
    ({"size": 12}, "at least 13"),
    ({"size": 70_000}, "at most"),
    ({"duration": 0}, "positive"),
    ({"rate": -5}, "positive"),
    ({"lan": True, "relay_url": "ws://127.0.0.1:7330"}, "cannot use --relay"),
    ({"loop": "trio"}, "unknown event loop 'trio'"),
    ({"busy_poll_ms": -1}, "busy poll must be 0"),
])
def test_config_rejects_bad_options(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        BenchConfig(**options)


def test_uvloop_asked_for_but_missing_says_how_to_install_it(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "uvloop" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ValueError, match=r"uvloop is not installed \(pip install 'clasp_fast\[uvloop\]'\)"):
        BenchConfig(loop="uvloop")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_worker_runs_on_the_event_loop_asked_for(loop) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_on_loop(loop_module(), loop).split(".")[0] == loop
    with pytest.raises(ValueError, match="unknown event loop 'curio'"):
        run_on_loop(loop_module(), "curio")


def test_cli_reports_bad_options_with_exit_code_2(capsys) -> None:
    assert main(["bench", "--size", "4", "--quiet"]) == 2
    assert "at least 13" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused while the arguments are parsed
        main(["bench", "--paths", "p2p_batched,carrier_pigeon", "--quiet"])
    assert exit_info.value.code == 2
    assert "carrier_pigeon" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_error_before_anything_runs(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like to import
    with pytest.raises(PlotUnavailable, match="pip install"):
        require_matplotlib()
    assert main(["bench", "--plot", "out.png", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pip install matplotlib" in err and "clasp-fast[plot]" not in err  # not on a package index


# -- report --------------------------------------------------------------------------------------

def _phase(sent: int, received: int, delivered: float | None, latencies_us: list[float]) -> dict:
    return {
        "sent": sent, "received": received, "send_seconds": 1.0, "send_rate_msgs_per_s": float(sent),
        "delivered_msgs_per_s": delivered, "delivered_mb_per_s": None if delivered is None else delivered * 55 / 1e6,
        "loss_pct": 100.0 * (sent - received) / sent,
        "latency_us": latency_summary([int(x * 1000) for x in latencies_us]),
    }


def _raw(throughput: float, p99_us: float, loaded_p99_us: float, setup_ms: float, received_at_rate: int = 1000) -> dict:
    latencies = [100.0] * 98 + [p99_us, p99_us]
    loaded = [50.0] * 98 + [loaded_p99_us, loaded_p99_us]
    return {
        "setup_ms": setup_ms, "frame_bytes": 55,
        "cpu": {"wall_s": 3.0, "sender_s": 1.5, "receiver_s": 0.9, "relay_s": 0.0,
                "sender_pct": 50.0, "receiver_pct": 30.0, "relay_pct": 0.0},
        "phases": {
            "throughput": _phase(10_000, 10_000, throughput, []),
            "latency": _phase(1000, received_at_rate, 1000.0, latencies),
            "loaded": _phase(10_000, 10_000, 10_000.0, loaded),
        },
    }


META = {"latency_method": "one-way, shared host clock", "network": "loopback (127.0.0.1)", "payload_bytes": 32,
        "frame_bytes": 55, "duration_s": 1.0, "rate_msgs_per_s": 1000, "load_rate_msgs_per_s": 10_000}


def test_report_has_the_documented_shape_and_ratios() -> None:
    results = {
        "p2p_batched": _raw(60_000, 800, 900, 40),
        "p2p_send_many": _raw(90_000, 800, 900, 40),
        "p2p_unbatched": _raw(2_000, 3_000, 250_000, 45),
        "p2p_unreliable": _raw(80_000, 700, 800, 38, received_at_rate=900),
        "p2p_stock_sctp": _raw(20_000, 900, 5_000, 45),
        "p2p_no_plane": _raw(25_000, 900, 4_000, 44),
        "p2p_no_dtls": _raw(27_000, 900, 3_000, 43),
        "relay": _raw(30_000, 1_600, 2_000, 2),
    }
    report = build_report(results, META)
    assert set(PATHS) | set(SCENARIOS) | {"floors", "ratios", "meta"} == set(report)
    assert all(report[name] is None for name in SCENARIOS)  # not run
    for path in PATHS:
        assert PATH_KEYS <= set(report[path])
        assert set(report[path]["latency_us"]) >= {"p50", "p90", "p99", "max"}
        assert set(report[path]["latency_loaded_us"]) >= {"p50", "p90", "p99", "max"}
    assert report["p2p_batched"]["latency_us"]["p99"] == 800.0
    assert report["p2p_unreliable"]["loss_pct"] == pytest.approx(100 * 100 / 21_000, abs=1e-3)
    assert report["p2p_batched"]["loss_pct"] == 0.0
    ratios = report["ratios"]["p2p_batched"]
    assert ratios["throughput_msgs_per_s"] == 2.0
    assert ratios["latency_us.p99"] == 0.5
    assert ratios["setup_ms"] == 20.0
    assert report["ratios"]["p2p_send_many"]["throughput_msgs_per_s"] == 3.0
    assert set(report["ratios"]) == {"p2p_batched", "p2p_send_many", "p2p_unbatched", "p2p_unreliable",
                                     "p2p_stock_sctp", "p2p_no_plane", "p2p_no_dtls"}
    floors = report["floors"]
    assert floors["pass"] is True and floors["path"] == "p2p_batched"
    assert floors["throughput_msgs_per_s"] == {"value": 60_000, "floor": 10_000.0, "rule": ">=", "pass": True}
    assert floors["latency_p99_ms"]["value"] == 0.8
    assert floors["per_path"]["p2p_unbatched"] == {
        "throughput_msgs_per_s": False, "latency_p99_ms": True, "latency_loaded_p99_ms": False}
    json.dumps(report)  # serialisable as is


@pytest.mark.parametrize("raw, failing", [
    (_raw(9_999, 800, 900, 40), "throughput_msgs_per_s"),
    (_raw(60_000, 10_000, 900, 40), "latency_p99_ms"),  # exactly 10 ms is not under 10 ms
    (_raw(60_000, 800, 12_000, 40), "latency_loaded_p99_ms"),
])
def test_each_missed_floor_fails_the_verdict(raw, failing) -> None:
    floors = build_report({"p2p_batched": raw}, META)["floors"]
    assert floors["pass"] is False
    assert [name for name in ("throughput_msgs_per_s", "latency_p99_ms", "latency_loaded_p99_ms")
            if not floors[name]["pass"]] == [failing]


def test_floors_are_configurable_and_missing_figures_fail() -> None:
    report = build_report({"p2p_batched": _raw(5_000, 800, 900, 40)}, META, min_msgs_per_s=1_000, max_p99_ms=0.5)
    assert report["floors"]["throughput_msgs_per_s"]["pass"] is True
    assert report["floors"]["latency_p99_ms"]["pass"] is False
    assert judge_floors(None, None, 10_000, 10)["pass"] is False


def test_paths_not_run_are_null_and_failed_paths_carry_their_error() -> None:
    report = build_report({"relay": _raw(30_000, 1_600, 2_000, 2), "p2p_batched": {"error": "sender: no 'sent'"}}, META)
    assert report["p2p_unbatched"] is None and report["p2p_unreliable"] is None
    assert report["p2p_batched"]["error"] == "sender: no 'sent'"
    assert report["p2p_batched"]["throughput_msgs_per_s"] is None
    assert report["p2p_batched"]["latency_us"] == {"p50": None, "p90": None, "p99": None, "max": None}
    assert report["floors"]["path"] == "p2p_batched" and report["floors"]["pass"] is False
    assert report["ratios"] == {"p2p_batched": dict.fromkeys(report["ratios"]["p2p_batched"])}


def test_table_marks_floors_ratios_and_the_latency_method(tmp_path) -> None:
    results = {"p2p_batched": _raw(60_000, 800, 900, 40), "p2p_unbatched": _raw(2_000, 3_000, 250_000, 45),
               "relay": _raw(30_000, 1_600, 2_000, 2)}
    report = build_report(results, META)
    table = render_table(report)
    assert "one-way, shared host clock" in table
    lines = table.splitlines()
    throughput = next(line for line in lines if line.startswith("throughput msg/s"))
    assert "60,000 ×2.00 PASS" in throughput and "2,000 ×0.07 FAIL" in throughput and ">= 10,000" in throughput
    loaded = next(line for line in lines if line.startswith("loaded p99"))
    assert "250.00 ×125 FAIL" in loaded
    assert lines[-1].startswith("floors (p2p_batched") and lines[-1].endswith("PASS")
    out = tmp_path / "report.json"
    write_json(report, str(out))
    assert json.loads(out.read_text())["floors"]["pass"] is True


def test_busy_poll_reaches_the_peers_config_and_the_table() -> None:
    from clasp_fast.bench.worker import parse_args, webrtc_config

    args = parse_args(["sender", "--relay", "ws://127.0.0.1:1", "--busy-poll", "0.002"])
    assert webrtc_config(args).busy_poll == 0.002
    assert webrtc_config(parse_args(["sender", "--relay", "ws://127.0.0.1:1"])).busy_poll == 0.0
    report = build_report({"p2p_batched": _raw(60_000, 800, 900, 40)}, {**META, "busy_poll_ms": 2.0})
    assert "P2P peers busy-poll 2 ms" in render_table(report).splitlines()[0]
    assert "busy-poll" not in render_table(build_report({"p2p_batched": _raw(60_000, 800, 900, 40)}, META))


def test_local_yield_reaches_the_peers_config_and_the_table() -> None:
    from clasp_fast.bench.runner import BenchConfig, _Run
    from clasp_fast.bench.worker import parse_args, webrtc_config

    assert webrtc_config(parse_args(["sender", "--relay", "ws://127.0.0.1:1"])).yield_to_local_peer is True
    args = parse_args(["sender", "--relay", "ws://127.0.0.1:1", "--no-local-yield"])
    assert webrtc_config(args).yield_to_local_peer is False
    assert "--no-local-yield" in _Run(BenchConfig(local_yield=False), None).worker_argv("a", "sender")
    assert "--no-local-yield" not in _Run(BenchConfig(), None).worker_argv("a", "sender")
    report = build_report({"p2p_batched": _raw(60_000, 800, 900, 40)}, {**META, "local_yield": False})
    assert "do not yield to a local peer" in render_table(report).splitlines()[0]
    assert "yield" not in render_table(build_report({"p2p_batched": _raw(60_000, 800, 900, 40)},
                                                    {**META, "local_yield": True}))


# -- pytest --benchmark-only output ---------------------------------------------------------------

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
needs_benchmarks = pytest.mark.skipif(not BENCHMARKS_DIR.is_dir(), reason="benchmarks/ is not beside the tests")


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=BENCHMARKS_DIR.parent, capture_output=True, text=True, timeout=300)


@needs_benchmarks
def test_benchmark_only_collects_the_benchmarks_alone() -> None:
    result = _pytest("--benchmark-only", "--collect-only", "-q")
    assert result.returncode == 0, result.stdout[-2000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("benchmarks/") for line in collected), collected[:5]


@needs_benchmarks
def test_benchmark_tables_fit_a_terminal() -> None:
    result = _pytest("benchmarks/bench_batching.py", "--benchmark-only", "-k", "pack",
                     "--benchmark-max-time=0.05", "--benchmark-min-rounds=3")
    assert result.returncode == 0, result.stdout[-2000:]
    out = result.stdout
    table = out[out.index("benchmark 'batch-pack-320'"):out.index("Legend")]  # the legend is pytest-benchmark's
    assert "Median" in table and "OPS" in table and "StdDev" not in table
    assert max(len(line) for line in table.splitlines()) <= 100


@needs_benchmarks
def test_end_to_end_figures_are_a_table() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_conftest", BENCHMARKS_DIR / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    info = {"throughput_msgs_per_s": 370335.2, "throughput_mb_per_s": 20.37, "latency_p50_us": 90,
            "latency_p99_us": 250, "latency_loaded_p50_us": 70, "latency_loaded_p99_us": 170,
            "setup_ms": 34.7, "loss_pct": 0.0}
    lines = conftest.e2e_table([("bench_e2e_p2p_batched", info), ("bench_e2e_relay", dict(info, setup_ms=None))])
    assert lines[0].split() == ["case", "msg/s", "MB/s", "p50/p99", "@1k", "p50/p99", "@10k", "set-up", "ms",
                                "loss", "%"]
    assert lines[2].split() == ["p2p_batched", "370,335", "20.37", "0.09", "/", "0.25", "0.07", "/", "0.17",
                                "34.7", "0.00"]
    assert lines[3].split()[0] == "relay" and lines[3].split()[-2] == "-"

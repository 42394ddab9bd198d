"""The benchmark report: figures per path, the floors verdict, P2P ÷ relay ratios, the table and JSON."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from .stats import ratio
from .paths import PATHS, SCENARIOS

__all__ = ["build_report", "render_table", "write_json", "FIGURES", "P2P_PATHS"]

P2P_PATHS = tuple(p for p in PATHS if p != "relay")
LATENCY_KEYS = ("p50", "p90", "p99", "max")
# Figures compared P2P ÷ relay: (name in "ratios", getter).
FIGURES = (
    ("throughput_msgs_per_s", lambda r: r.get("throughput_msgs_per_s")),
    ("throughput_mb_per_s", lambda r: r.get("throughput_mb_per_s")),
    *((f"latency_us.{k}", lambda r, k=k: (r.get("latency_us") or {}).get(k)) for k in LATENCY_KEYS),
    *((f"latency_loaded_us.{k}", lambda r, k=k: (r.get("latency_loaded_us") or {}).get(k)) for k in LATENCY_KEYS),
    ("setup_ms", lambda r: r.get("setup_ms")),
)


def _path_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """The documented per-path object from the runner's raw result."""
    if "error" in raw:
        empty = dict.fromkeys(LATENCY_KEYS)
        return {"throughput_msgs_per_s": None, "throughput_mb_per_s": None, "latency_us": dict(empty),
                "latency_loaded_us": dict(empty), "setup_ms": None, "loss_pct": None, "cpu": None,
                "sctp_retransmissions": None, "sctp_loss_probes": None, "error": raw["error"]}
    phases = raw["phases"]
    sent = sum(p["sent"] for p in phases.values())
    received = sum(p["received"] for p in phases.values())
    return {
        "throughput_msgs_per_s": phases["throughput"]["delivered_msgs_per_s"],
        "throughput_mb_per_s": phases["throughput"]["delivered_mb_per_s"],
        "latency_us": phases["latency"]["latency_us"],
        "latency_loaded_us": phases["loaded"]["latency_us"],
        "setup_ms": raw["setup_ms"],
        "loss_pct": round(100.0 * (sent - received) / sent, 3) if sent else None,
        "cpu": raw["cpu"],
        "rate_achieved_msgs_per_s": phases["latency"]["send_rate_msgs_per_s"],
        "loaded_rate_achieved_msgs_per_s": phases["loaded"]["send_rate_msgs_per_s"],
        "frame_bytes": raw["frame_bytes"],
        "frames_per_datachannel_message": phases["throughput"].get("frames_per_datachannel_message"),
        "sctp_retransmissions": _phase_sum(phases, "sctp_retransmissions"),
        "sctp_loss_probes": _phase_sum(phases, "sctp_loss_probes"),
        "phases": phases,
        "error": None,
    }


def _phase_sum(phases: dict[str, Any], key: str) -> int | None:
    """``key`` summed over the phases; None when a phase does not have it (relay, aiortc's SCTP)."""
    values = [phase.get(key) for phase in phases.values()]
    return None if not values or None in values else sum(values)


def judge_floors(path: str | None, figures: dict[str, Any] | None, min_msgs_per_s: float,
                 max_p99_ms: float) -> dict[str, Any]:
    """The floors verdict for one path: every judged figure with its floor and pass/fail."""
    figures = figures or {}
    p99 = (figures.get("latency_us") or {}).get("p99")
    loaded_p99 = (figures.get("latency_loaded_us") or {}).get("p99")
    throughput = figures.get("throughput_msgs_per_s")
    checks = {
        "throughput_msgs_per_s": {"value": throughput, "floor": min_msgs_per_s, "rule": ">=",
                                  "pass": throughput is not None and throughput >= min_msgs_per_s},
        "latency_p99_ms": {"value": None if p99 is None else round(p99 / 1000.0, 4), "floor": max_p99_ms, "rule": "<",
                           "pass": p99 is not None and p99 / 1000.0 < max_p99_ms},
        "latency_loaded_p99_ms": {"value": None if loaded_p99 is None else round(loaded_p99 / 1000.0, 4),
                                  "floor": max_p99_ms, "rule": "<",
                                  "pass": loaded_p99 is not None and loaded_p99 / 1000.0 < max_p99_ms},
    }
    return {"pass": path is not None and all(c["pass"] for c in checks.values()), "path": path, **checks}


def build_report(results: dict[str, dict[str, Any] | None], meta: dict[str, Any],
                 min_msgs_per_s: float = 10_000.0, max_p99_ms: float = 10.0,
                 scenarios: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole report: one object per path (null when not run), ``floors``, ``ratios``, ``meta``,
    and one object per stream scenario (``conflation``, ``p2p_fanout``; null when not run)."""
    report: dict[str, Any] = {}
    for path in PATHS:
        raw = results.get(path)
        report[path] = None if raw is None else _path_figures(raw)
    measured = [p for p in PATHS if report[p] is not None]
    judged = "p2p_batched" if report["p2p_batched"] is not None else (measured[0] if measured else None)
    report["floors"] = judge_floors(judged, report.get(judged) if judged else None, min_msgs_per_s, max_p99_ms)
    report["floors"]["per_path"] = {
        p: {k: v["pass"] for k, v in judge_floors(p, report[p], min_msgs_per_s, max_p99_ms).items()
            if isinstance(v, dict)}
        for p in measured
    }
    ratios: dict[str, dict[str, float | None]] = {}
    relay = report["relay"]
    if relay is not None and relay.get("error") is None:
        for path in P2P_PATHS:
            if report[path] is None:
                continue
            ratios[path] = {name: _round(ratio(get(report[path]), get(relay)), 3) for name, get in FIGURES}
    report["ratios"] = ratios
    for name in SCENARIOS:
        report[name] = (scenarios or {}).get(name)
    report["meta"] = meta
    return report


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def render_scenarios(report: dict[str, Any]) -> list[str]:
    """One or two lines per stream scenario that ran (the table shows the paths)."""
    lines = []
    conflation = report.get("conflation")
    if conflation:
        if conflation.get("error"):
            lines.append(f"conflation: FAILED: {conflation['error']}")
        else:
            age, fifo = conflation["latest_age_ms"], conflation["latest_age_ms_unconflated"]
            lines.append(
                f"conflation: {conflation['rate_msgs_per_s']:,} SET/s to a ~1,000/s receiver: latest value age "
                f"p50 {_number(age['p50'], 1)} ms, p99 {_number(age['p99'], 1)} ms (target <= "
                f"{conflation['target_p99_ms']:g}) {_mark(conflation['pass'])}; unconflated p50 "
                f"{_number(fifo['p50'], 1)} ms, p99 {_number(fifo['p99'], 1)} ms (first third "
                f"{_number(conflation['unconflated_age_first_third_ms'], 1)} ms, last third "
                f"{_number(conflation['unconflated_age_last_third_ms'], 1)} ms)")
    fanout = report.get("p2p_fanout")
    if fanout:
        if fanout.get("error"):
            lines.append(f"p2p_fanout: FAILED: {fanout['error']}")
        else:
            steps = ", ".join(f"{s['receivers']}: {_number(s['throughput_msgs_per_s'])}" for s in fanout["steps"])
            relay = fanout["relay"]
            lines.append(f"p2p_fanout: deliveries/s by receivers {steps}; slowest of "
                         f"{fanout['receivers']} {_number(fanout['slowest_receiver_msgs_per_s'])}/s")
            lines.append(f"p2p_fanout: relay to {relay['receivers']}: {_number(relay['throughput_msgs_per_s'])} "
                         f"deliveries/s, slowest {_number(relay['slowest_receiver_msgs_per_s'])}/s; "
                         f"P2P / relay {_times(fanout['ratio_vs_relay'])} {_mark(fanout['pass'])}")
    return lines


def write_json(report: dict[str, Any], path: str) -> None:
    """Write ``report`` as indented JSON to ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")


# -- the table --------------------------------------------------------------------------------

def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    if value is None:
        return ""
    return f" ×{value:.2f}" if value < 10 else f" ×{value:.0f}"


def _mark(passed: bool | None) -> str:
    return "" if passed is None else (" PASS" if passed else " FAIL")


def render_table(report: dict[str, Any], width: int | None = None) -> str:
    """The report as a fixed-width table: one column per path, one row per figure.

    With ``width``, no line is longer than that: the path columns are split over several tables
    and the text lines are wrapped.
    """
    meta = report.get("meta", {})
    paths = [p for p in PATHS if report.get(p) is not None]
    ratios = report.get("ratios", {})
    floors = report["floors"]
    per_path = floors.get("per_path", {})

    def latency_row(label: str, key: str, q: str, floor_key: str | None) -> list[str]:
        row = [label]
        for p in paths:
            value = (report[p].get(key) or {}).get(q)
            cell = _number(None if value is None else value / 1000.0, 2)
            cell += _times(ratios.get(p, {}).get(f"{key}.{q}"))
            if floor_key is not None:
                cell += _mark(per_path.get(p, {}).get(floor_key))
            row.append(cell)
        row.append(f"< {floors['latency_p99_ms']['floor']:g} ms" if floor_key else "")
        return row

    def plain_row(label: str, get, digits: int, figure: str | None = None, floor_key: str | None = None,
                  floor_text: str = "") -> list[str]:
        row = [label]
        for p in paths:
            cell = _number(get(report[p]), digits)
            if figure is not None:
                cell += _times(ratios.get(p, {}).get(figure))
            if floor_key is not None:
                cell += _mark(per_path.get(p, {}).get(floor_key))
            row.append(cell)
        row.append(floor_text)
        return row

    rate = meta.get("rate_msgs_per_s")
    load = meta.get("load_rate_msgs_per_s")
    rows = [["figure", *(p.replace("_", " ") for p in paths), "floor"]]
    rows.append(plain_row("throughput msg/s", lambda r: r.get("throughput_msgs_per_s"), 0,
                          "throughput_msgs_per_s", "throughput_msgs_per_s",
                          f">= {floors['throughput_msgs_per_s']['floor']:,.0f}"))
    rows.append(plain_row("throughput MB/s", lambda r: r.get("throughput_mb_per_s"), 2, "throughput_mb_per_s"))
    for q in LATENCY_KEYS:
        rows.append(latency_row(f"latency {q} ms @{rate:,}/s", "latency_us", q,
                                "latency_p99_ms" if q == "p99" else None))
    for q in LATENCY_KEYS:
        rows.append(latency_row(f"loaded {q} ms @{load:,}/s", "latency_loaded_us", q,
                                "latency_loaded_p99_ms" if q == "p99" else None))
    rows.append(plain_row("loaded rate reached msg/s", lambda r: r.get("loaded_rate_achieved_msgs_per_s"), 0))
    rows.append(plain_row("frames per DataChannel msg", lambda r: r.get("frames_per_datachannel_message"), 1))
    rows.append(plain_row("loss %", lambda r: r.get("loss_pct"), 2))
    rows.append(plain_row("SCTP retransmissions", lambda r: r.get("sctp_retransmissions"), 0))
    rows.append(plain_row("SCTP loss probes", lambda r: r.get("sctp_loss_probes"), 0))
    rows.append(plain_row("set-up ms", lambda r: r.get("setup_ms"), 1, "setup_ms"))
    for role in ("sender", "receiver", "relay"):
        rows.append(plain_row(f"CPU {role} %", lambda r, role=role: (r.get("cpu") or {}).get(f"{role}_pct"), 0))

    header = [
        f"clasp_fast bench: {meta.get('network', '?')}, payload {meta.get('payload_bytes')} B "
        f"(CLASP frame {meta.get('frame_bytes')} B), {meta.get('duration_s')} s per phase"
        + (f", {meta['event_loop']} event loop" if meta.get("event_loop", "asyncio") != "asyncio" else "")
        + (f", P2P peers busy-poll {meta['busy_poll_ms']:g} ms" if meta.get("busy_poll_ms") else "")
        + (", P2P peers do not yield to a local peer" if meta.get("local_yield") is False else ""),
        f"latency: {meta.get('latency_method', '?')}; ×N = P2P ÷ relay for that figure "
        "(throughput: higher is better; latency, set-up: lower is better)",
    ]
    if meta.get("lan_note"):
        header.append(f"note: {meta['lan_note']}")
    footer = [f"{p}: FAILED: {report[p]['error']}" for p in paths if report[p].get("error")]
    verdict = "PASS" if floors["pass"] else "FAIL"
    judged = floors.get("path")
    footer.append(f"floors ({judged or 'nothing measured'}: >= {floors['throughput_msgs_per_s']['floor']:,.0f} msg/s, "
                  f"p99 < {floors['latency_p99_ms']['floor']:g} ms at {rate:,} and {load:,} msg/s): {verdict}")

    lines = _wrap(header, width) + [""]
    for block in _column_blocks(rows, width):
        lines.extend(_grid([[row[i] for i in block] for row in rows]))
        lines.append("")
    lines.extend(_wrap(footer, width))
    return "\n".join(lines)


def _grid(rows: list[list[str]]) -> list[str]:
    """Rows as aligned columns (the first left-aligned), with a rule under the header row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i])
                               for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _column_blocks(rows: list[list[str]], width: int | None) -> list[list[int]]:
    """Column indexes of each table to print: all in one, or as many path columns per table as fit
    in ``width`` (each table keeps the figure and floor columns)."""
    count = len(rows[0])
    all_columns = list(range(count))
    if width is None:
        return [all_columns]
    widths = [max(len(row[i]) for row in rows) for i in range(count)]
    if sum(widths) + 2 * (count - 1) <= width:
        return [all_columns]
    first, last = 0, count - 1
    fixed = widths[first] + widths[last] + 2
    blocks: list[list[int]] = []
    current: list[int] = []
    used = fixed
    for column in range(1, last):
        if current and used + widths[column] + 2 > width:
            blocks.append(current)
            current, used = [], fixed
        current.append(column)
        used += widths[column] + 2
    blocks.append(current)
    return [[first, *block, last] for block in blocks]


def _wrap(lines: list[str], width: int | None) -> list[str]:
    if width is None:
        return lines
    wrapped: list[str] = []
    for line in lines:
        wrapped.extend(textwrap.wrap(line, width, subsequent_indent="  ") or [""])
    return wrapped

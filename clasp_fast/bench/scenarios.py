"""The stream scenarios of a bench run (``--scenarios conflation,p2p_fanout``), runner side.

``conflation``: a sender at ``conflation_rate`` SETs/s over ``conflation_addresses`` addresses to a
receiver whose handler takes ``conflation_handle_ms`` per update; two phases of ``duration`` on
one connection, with the receiver's latest-value queue and with a plain FIFO. Reported: the age of
each update when the handler takes it (receiver's clock minus the sender's stamp, one host).

``p2p_fanout``: a hub sends to R = 1, 2, 4, 8 viewers over P2P through one encode-once
``FanoutGroup``, then through the relay to the same 8 viewers (subscribed to ``/bench/**``); each
step lasts ``duration``. Viewers live in at most 4 processes (the machine's cores are few).
"""

from __future__ import annotations

from typing import Any

from .paths import SCENARIOS

__all__ = ["SCENARIOS", "conflation_figures", "run_conflation", "run_p2p_fanout"]

FANOUT_STEPS = (1, 2, 4, 8)
VIEWER_PROCESSES = 4
CONFLATION_TARGET_P99_MS = 20.0


async def run_conflation(run: Any) -> dict[str, Any]:
    config = run.config
    progress = run.progress
    common = ["--relay", run.relay_url or "", "--size", str(config.size)]
    receiver = await run.spawn("conflation receiver", "b", "conflation-receiver", *common,
                               "--host-address", run.host["b"])
    sender = await run.spawn("conflation sender", "a", "conflation-sender", *common, "--host-address", run.host["a"])
    phases: dict[str, dict[str, Any]] = {}
    try:
        session = (await receiver.expect("ready", run.left(60)))["session"]
        await sender.expect("ready", run.left(60))
        sender.send(cmd="connect", peer=session)
        await sender.expect("connected", run.left(40))
        await receiver.expect("connected", run.left(40))
        rate = config.conflation_rate
        for number, (name, conflate) in enumerate((("conflated", True), ("unconflated", False))):
            progress(f"conflation: {name} ({rate:,} SET/s over {config.conflation_addresses} addresses, "
                     f"receiver {config.conflation_handle_ms:g} ms per update, {config.duration:g} s)")
            receiver.send(cmd="mode", phase=number, conflate=conflate, handle_ms=config.conflation_handle_ms)
            await receiver.expect("ok", run.left(10))
            sender.send(cmd="phase", phase=number, rate=rate, duration=config.duration,
                        addresses=config.conflation_addresses, max_count=int(rate * config.duration) + 1)
            sent = await sender.expect("sent", run.left(config.duration + 20))
            receiver.send(cmd="collect", timeout=10.0)
            got = await receiver.expect("collected", run.left(20))
            phases[name] = {**got, "sent": sent["sent"], "send_seconds": round(sent["seconds"], 3)}
    finally:
        await run.stop_workers([sender, receiver])
    progress("conflation: done")
    return conflation_figures(phases["conflated"], phases["unconflated"], rate, config.duration)


def conflation_figures(conflated: dict[str, Any], unconflated: dict[str, Any], rate: int,
                       duration: float) -> dict[str, Any]:
    """The ``conflation`` report entry from the receiver's two phases."""
    age, age_fifo = conflated["age_ms"], unconflated["age_ms"]
    first, last = unconflated["age_first_third_ms"], unconflated["age_last_third_ms"]
    grows = first is not None and last is not None and last > first
    return {
        "latest_age_ms": {"p50": age["p50"], "p99": age["p99"]},
        "latest_age_ms_unconflated": {"p50": age_fifo["p50"], "p99": age_fifo["p99"]},
        "unconflated_age_first_third_ms": first,
        "unconflated_age_last_third_ms": last,
        "handled": conflated["handled"],
        "handled_unconflated": unconflated["handled"],
        "conflated": conflated["conflated"],
        "sent": conflated["sent"],
        "sent_unconflated": unconflated["sent"],
        "rate_msgs_per_s": rate,
        "duration_s": duration,
        "target_p99_ms": CONFLATION_TARGET_P99_MS,
        "pass": age["p99"] is not None and age["p99"] <= CONFLATION_TARGET_P99_MS and grows,
    }


async def run_p2p_fanout(run: Any) -> dict[str, Any]:
    config = run.config
    progress = run.progress
    common = ["--relay", run.relay_url or "", "--size", str(config.size)]
    receivers = max(FANOUT_STEPS)
    processes = min(receivers, VIEWER_PROCESSES)
    workers = []
    try:
        hub = await run.spawn("fan-out hub", "a", "fanout-hub", *common, "--host-address", run.host["a"])
        workers.append(hub)
        viewer_workers = []
        for p in range(processes):
            count = receivers // processes + (1 if p < receivers % processes else 0)
            worker = await run.spawn(f"fan-out viewers {p}", "b", "fanout-viewers", *common, "--viewers", str(count),
                                     "--name", f"v{p}", "--host-address", run.host["b"])
            viewer_workers.append(worker)
            workers.append(worker)
        # Viewer i lives in process i % processes: the first R viewers spread over the processes.
        per_process = [(await w.expect("ready", run.left(60)))["sessions"] for w in viewer_workers]
        sessions = [per_process[i % processes][i // processes] for i in range(receivers)]
        names = [f"v{i % processes}-{i // processes}" for i in range(receivers)]
        await hub.expect("ready", run.left(60))
        progress(f"p2p_fanout: connecting the hub to {receivers} viewers")
        hub.send(cmd="connect", peers=sessions)
        await hub.expect("connected", run.left(60 + 10 * receivers))
        for worker in viewer_workers:
            await worker.expect("connected", run.left(30))
        steps = []
        legs = [(step, r, "p2p") for step, r in enumerate(FANOUT_STEPS)] + [(len(FANOUT_STEPS), receivers, "relay")]
        for step, count, route in legs:
            progress(f"p2p_fanout: {route} to {count} receivers ({config.duration:g} s)")
            hub.send(cmd="step", step=step, receivers=count, route=route, duration=config.duration,
                     max_count=config.max_count)
            sent = await hub.expect("sent", run.left(config.duration + 30))
            arrivals: dict[str, list] = {}
            for worker in viewer_workers:
                worker.send(cmd="collect", step=step, idle=0.5, timeout=10.0)
            for worker in viewer_workers:
                arrivals.update((await worker.expect("collected", run.left(20)))["viewers"])
            steps.append(_fanout_step(count, route, sent, [arrivals[name] for name in names[:count]]))
    finally:
        await run.stop_workers(workers)
    progress("p2p_fanout: done")
    p2p = [s for s in steps if s["route"] == "p2p"]
    widest, relay = p2p[-1], steps[-1]
    ratio = (widest["throughput_msgs_per_s"] / relay["throughput_msgs_per_s"]
             if widest["throughput_msgs_per_s"] and relay["throughput_msgs_per_s"] else None)
    return {
        "receivers": widest["receivers"],
        "throughput_msgs_per_s": widest["throughput_msgs_per_s"],
        "slowest_receiver_msgs_per_s": widest["slowest_receiver_msgs_per_s"],
        "steps": [{k: s[k] for k in ("receivers", "sent", "throughput_msgs_per_s", "slowest_receiver_msgs_per_s")}
                  for s in p2p],
        "relay": {k: relay[k] for k in ("receivers", "sent", "throughput_msgs_per_s", "slowest_receiver_msgs_per_s")},
        "ratio_vs_relay": None if ratio is None else round(ratio, 3),
        "target": ">= relay",
        "pass": ratio is not None and ratio >= 1.0,
    }


def _fanout_step(receivers: int, route: str, sent: dict[str, Any], arrivals: list[list]) -> dict[str, Any]:
    """Deliveries/s summed over the receivers sent to (``arrivals``: [count, last arrival ns] of
    each), over first send to last arrival, and the slowest receiver's own rate."""
    first_ns = sent["first_ns"]
    rates, total, last = [], 0, first_ns
    for count, last_ns in arrivals:
        total += count
        if count and last_ns:
            last = max(last, last_ns)
            rates.append(count / max((last_ns - first_ns) / 1e9, 1e-9))
        else:
            rates.append(0.0)
    span = (last - first_ns) / 1e9
    return {
        "receivers": receivers,
        "route": route,
        "sent": sent["sent"],
        "delivered": total,
        "throughput_msgs_per_s": round(total / span, 1) if span > 0 else None,
        "slowest_receiver_msgs_per_s": round(min(rates), 1) if rates else None,
    }


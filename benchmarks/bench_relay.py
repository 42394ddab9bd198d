"""Relay path: one publisher -> 1 and -> 10 subscribers, and round-trip latency, through the
embedded relay and, in the same run, through a trivial ``websockets`` forwarder (the baseline);
and fairness: well-behaved clients' latency with and without a flooding publisher.

Three processes per throughput/RTT measurement: the server (relay or forwarder), the
subscriber(s) (one process holding every subscriber connection) and the publisher (the pytest
process). Clients are raw WebSockets sending pre-encoded PUBLISH frames with a 32-byte value, so
both servers see identical traffic; the forwarder sends every message to every other connection.

Fairness (``bench_relay_fairness``): a relay with default settings, a crowd of subscribers to
``/flood/**`` (one process) and calm pairs (another process): each calm sender publishes its
send time to ``/calm/{i}`` at a steady rate, its receiver is subscribed to ``/calm/{i}`` and to
``/flood/**`` too. First a quiet phase, then a flooder process publishes to ``/flood/x`` as fast
as it can; the calm one-way latency of both phases is compared.

Run: ``pytest benchmarks/bench_relay.py --benchmark-only`` (figures are in ``extra_info``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time

import pytest

from clasp_fast.codec import encode
from clasp_fast.messages import Hello, Publish, Subscribe

VALUE = b"x" * 32
THROUGHPUT_MESSAGES = {1: 20_000, 10: 4_000}
RTT_ROUNDS = 1_000
RTT_WARMUP = 100
TIMEOUT = 60.0  # bound on every phase
LIFETIME = 600.0  # no server or ponger process outlives this, even if the parent never stops it


# -- servers (run in their own process) ---------------------------------------------------

async def _run_relay(port_queue, stop_event, options: dict) -> None:
    from clasp_fast.relay import Relay

    relay = await Relay.start(host="127.0.0.1", port=0, max_sessions=1000, **options)
    port_queue.put(relay.port)
    deadline = time.monotonic() + LIFETIME
    while not stop_event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await relay.close()


async def _run_forwarder(port_queue, stop_event) -> None:
    from websockets.asyncio.server import serve

    clients = set()

    async def handler(ws):
        clients.add(ws)
        try:
            async for message in ws:
                for other in list(clients):
                    if other is not ws:
                        await other.send(message)
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None) as server:
        port_queue.put(server.sockets[0].getsockname()[1])
        deadline = time.monotonic() + LIFETIME
        while not stop_event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def _server_main(kind: str, port_queue, stop_event) -> None:
    if kind == "forwarder":
        asyncio.run(_run_forwarder(port_queue, stop_event))
    elif kind == "relay":
        # A large queue: the throughput and RTT figures measure routing, not the slow-consumer policy.
        asyncio.run(_run_relay(port_queue, stop_event, {"queue_size": 1_000_000}))
    else:  # "relay_defaults"
        asyncio.run(_run_relay(port_queue, stop_event, {}))


# -- clients ------------------------------------------------------------------------------

async def _open(url: str, clasp: bool, name: str, pattern: str | None):
    from websockets.asyncio.client import connect

    ws = await connect(url, subprotocols=["clasp"], compression=None, max_size=None, ping_interval=None)
    if clasp:
        await ws.send(encode(Hello(name=name)))
        await ws.recv()  # WELCOME
        await ws.recv()  # SNAPSHOT
        if pattern is not None:
            await ws.send(encode(Subscribe(id=1, pattern=pattern)))
    return ws


async def _subscribers(url, clasp, count, expected, ready, result_queue) -> None:
    conns = [await _open(url, clasp, f"sub{i}", "/bench/**") for i in range(count)]
    if clasp:  # SUBSCRIBE has no reply: a PING round trip proves it was processed
        from clasp_fast.messages import Ping
        for ws in conns:
            await ws.send(encode(Ping()))
            await ws.recv()
    ready.set()
    first = None
    counts = [0] * count

    async def drain(i, ws):
        nonlocal first
        while counts[i] < expected:
            await ws.recv()
            if first is None:
                first = time.perf_counter()
            counts[i] += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(drain(i, ws) for i, ws in enumerate(conns))), TIMEOUT)
        result_queue.put((first, time.perf_counter(), sum(counts)))
    except asyncio.TimeoutError:
        result_queue.put((first, time.perf_counter(), sum(counts)))
    for ws in conns:
        await ws.close()


def _subscriber_main(url, clasp, count, expected, ready, result_queue) -> None:
    asyncio.run(_subscribers(url, clasp, count, expected, ready, result_queue))


async def _ponger(url, clasp, ready, stop_event) -> None:
    ws = await _open(url, clasp, "ponger", "/bench/ping")
    pong = encode(Publish(address="/bench/pong", signal="event", value=VALUE))
    if clasp:
        from clasp_fast.messages import Ping
        await ws.send(encode(Ping()))
        await ws.recv()
    ready.set()
    deadline = time.monotonic() + LIFETIME
    while not stop_event.is_set() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(ws.recv(), 0.2)
        except asyncio.TimeoutError:
            continue
        await ws.send(pong)
    await ws.close()


def _ponger_main(url, clasp, ready, stop_event) -> None:
    asyncio.run(_ponger(url, clasp, ready, stop_event))


# -- fairness: a flooder among well-behaved clients ---------------------------------------

CROWD = 40  # subscribers of the flooded address besides the calm receivers
CALM_PAIRS = 4
CALM_RATE = 50  # messages/s per calm sender
PHASE = 4.0  # seconds measured without, then with the flooder
RAMP = 1.0  # seconds after the flooder starts before the flood phase is measured
FLOOD_MESSAGES = 2_000_000  # the flooder's bound (it is stopped long before)
QUIET, FLOOD, STOP = 1, 3, 4  # phase values; 0 warm-up and 2 ramp are not measured


async def _crowd(url, count, ready, stop_event, result_queue) -> None:
    conns = [await _open(url, True, f"crowd{i}", "/flood/**") for i in range(count)]
    from clasp_fast.messages import Ping
    for ws in conns:
        await ws.send(encode(Ping()))
        await ws.recv()
    ready.set()
    received = 0

    async def drain(ws):
        nonlocal received
        while True:
            await ws.recv()
            received += 1

    tasks = [asyncio.ensure_future(drain(ws)) for ws in conns]
    deadline = time.monotonic() + LIFETIME
    while not stop_event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    result_queue.put(received)
    for ws in conns:
        ws.transport.abort()  # megabytes may be unread: no closing handshake behind them


def _crowd_main(url, count, ready, stop_event, result_queue) -> None:
    asyncio.run(_crowd(url, count, ready, stop_event, result_queue))


async def _calm(url, phase, ready, result_queue) -> None:
    from clasp_fast.codec import decode
    from clasp_fast.messages import Ping, Publish as PublishMessage

    senders = [await _open(url, True, f"calm-tx{i}", None) for i in range(CALM_PAIRS)]
    receivers = [await _open(url, True, f"calm-rx{i}", f"/calm/{i}") for i in range(CALM_PAIRS)]
    for ws in receivers:
        await ws.send(encode(Subscribe(id=2, pattern="/flood/**")))  # flooded like everyone else
        await ws.send(encode(Ping()))
        await ws.recv()
    ready.set()
    samples: dict[int, list[float]] = {QUIET: [], FLOOD: []}
    sent: dict[int, int] = {QUIET: 0, FLOOD: 0}

    async def receive(ws):
        while True:
            message = decode(await ws.recv())
            if type(message) is PublishMessage and message.address.startswith("/calm/"):
                sent, measured = message.value
                if measured in samples:
                    samples[measured].append(time.perf_counter() - sent)

    async def send(i, ws):
        period = 1.0 / CALM_RATE
        due = time.perf_counter()
        while phase.value < STOP:
            measured = phase.value
            await ws.send(encode(PublishMessage(address=f"/calm/{i}", signal="event",
                                                value=[time.perf_counter(), measured])))
            if measured in sent:
                sent[measured] += 1
            due += period
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

    readers = [asyncio.ensure_future(receive(ws)) for ws in receivers]
    deadline = time.monotonic() + LIFETIME
    await asyncio.wait_for(asyncio.gather(*(send(i, ws) for i, ws in enumerate(senders))),
                           deadline - time.monotonic())
    await asyncio.sleep(2.0)  # the last messages of the flood phase are still on their way
    for task in readers:
        task.cancel()
    result_queue.put((samples, sent))
    for ws in senders + receivers:
        ws.transport.abort()


def _calm_main(url, phase, ready, result_queue) -> None:
    asyncio.run(_calm(url, phase, ready, result_queue))


async def _flood(url, stop_event, result_queue) -> None:
    ws = await _open(url, True, "flooder", None)
    frame = encode(Publish(address="/flood/x", signal="event", value=VALUE))
    start = time.perf_counter()
    sent = 0
    deadline = time.monotonic() + LIFETIME
    while sent < FLOOD_MESSAGES and not stop_event.is_set() and time.monotonic() < deadline:
        for _ in range(100):
            await ws.send(frame)
        sent += 100
    result_queue.put(sent / (time.perf_counter() - start))
    ws.transport.abort()


def _flood_main(url, stop_event, result_queue) -> None:
    asyncio.run(_flood(url, stop_event, result_queue))


def _quantiles_ms(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "max_ms": max(samples) * 1e3, "count": len(samples)}


def measure_fairness() -> dict:
    server = Server("relay_defaults")
    ctx = server.ctx
    phase = ctx.Value("i", 0)
    stop = ctx.Event()
    crowd_ready, calm_ready = ctx.Event(), ctx.Event()
    crowd_results, calm_results, flood_results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    crowd = ctx.Process(target=_crowd_main, args=(server.url, CROWD, crowd_ready, stop, crowd_results), daemon=True)
    calm = ctx.Process(target=_calm_main, args=(server.url, phase, calm_ready, calm_results), daemon=True)
    flooder = ctx.Process(target=_flood_main, args=(server.url, stop, flood_results), daemon=True)
    processes = [crowd, calm]
    try:
        crowd.start()
        assert crowd_ready.wait(30), "crowd did not start"
        calm.start()
        assert calm_ready.wait(30), "calm clients did not start"
        time.sleep(0.5)  # warm-up
        phase.value = QUIET
        time.sleep(PHASE)
        phase.value = 2
        processes.append(flooder)
        flooder.start()
        time.sleep(RAMP)
        phase.value = FLOOD
        time.sleep(PHASE)
        phase.value = STOP
        latencies, sent = calm_results.get(timeout=TIMEOUT)
        stop.set()
        flood_rate = flood_results.get(timeout=TIMEOUT)
        crowd_received = crowd_results.get(timeout=TIMEOUT)
    finally:
        stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        server.close()
    return {"quiet": _quantiles_ms(latencies[QUIET]), "flood": _quantiles_ms(latencies[FLOOD]),
            "flood_offered_per_s": flood_rate, "crowd_received": crowd_received,
            "sent": sent}


# -- measurements -------------------------------------------------------------------------

class Server:
    def __init__(self, kind: str) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.stop = self.ctx.Event()
        ports = self.ctx.Queue()
        self.process = self.ctx.Process(target=_server_main, args=(kind, ports, self.stop), daemon=True)
        self.process.start()
        self.url = f"ws://127.0.0.1:{ports.get(timeout=30)}"

    def close(self) -> None:
        self.stop.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def measure_throughput(kind: str, subscribers: int) -> dict:
    n = THROUGHPUT_MESSAGES[subscribers]
    clasp = kind != "forwarder"
    server = Server(kind)
    ctx = server.ctx
    ready, results = ctx.Event(), ctx.Queue()
    sub = ctx.Process(target=_subscriber_main, args=(server.url, clasp, subscribers, n, ready, results), daemon=True)
    sub.start()
    try:
        assert ready.wait(30), "subscribers did not start"
        frame = encode(Publish(address="/bench/data", signal="event", value=VALUE))

        async def publish() -> float:
            ws = await _open(server.url, clasp, "publisher", None)
            start = time.perf_counter()
            for _ in range(n):
                await ws.send(frame)
            elapsed = time.perf_counter() - start
            await ws.close()
            return elapsed

        publish_time = asyncio.run(publish())
        first, last, received = results.get(timeout=TIMEOUT + 10)
        sub.join(10)
    finally:
        if sub.is_alive():
            sub.kill()
        server.close()
    elapsed = last - first if first is not None else float("inf")
    return {"messages": n, "subscribers": subscribers, "received": received,
            "delivered_per_s": received / elapsed, "published_per_s": n / publish_time}


def measure_rtt(kind: str) -> dict:
    clasp = kind != "forwarder"
    server = Server(kind)
    ctx = server.ctx
    ready, stop = ctx.Event(), ctx.Event()
    ponger = ctx.Process(target=_ponger_main, args=(server.url, clasp, ready, stop), daemon=True)
    ponger.start()
    try:
        assert ready.wait(30), "ponger did not start"

        async def rounds() -> list[float]:
            ws = await _open(server.url, clasp, "pinger", "/bench/pong")
            ping = encode(Publish(address="/bench/ping", signal="event", value=VALUE))
            samples = []
            for i in range(RTT_WARMUP + RTT_ROUNDS):
                start = time.perf_counter()
                await ws.send(ping)
                await asyncio.wait_for(ws.recv(), 5.0)
                if i >= RTT_WARMUP:
                    samples.append(time.perf_counter() - start)
            await ws.close()
            return samples

        samples = asyncio.run(rounds())
    finally:
        stop.set()
        ponger.join(10)
        if ponger.is_alive():
            ponger.kill()
        server.close()
    quantiles = statistics.quantiles(samples, n=100)
    return {"rtt_p50_ms": quantiles[49] * 1e3, "rtt_p99_ms": quantiles[98] * 1e3, "rounds": len(samples)}


@pytest.mark.parametrize("subscribers", [1, 10])
def bench_relay_throughput(benchmark, subscribers: int) -> None:
    """Routed deliveries/s through the relay vs the trivial forwarder, measured side by side."""
    figures = {}

    def run() -> None:
        figures["forwarder"] = measure_throughput("forwarder", subscribers)
        figures["relay"] = measure_throughput("relay", subscribers)

    benchmark.pedantic(run, rounds=1, iterations=1)
    relay, forwarder = figures["relay"], figures["forwarder"]
    assert relay["received"] == relay["messages"] * subscribers, "the relay lost messages"
    benchmark.extra_info.update({
        "relay_delivered_per_s": round(relay["delivered_per_s"]),
        "forwarder_delivered_per_s": round(forwarder["delivered_per_s"]),
        "relay_published_per_s": round(relay["published_per_s"]),
        "forwarder_published_per_s": round(forwarder["published_per_s"]),
        "ratio_relay_to_forwarder": round(relay["delivered_per_s"] / forwarder["delivered_per_s"], 3),
    })
    print(f"\n1 -> {subscribers}: relay {relay['delivered_per_s']:,.0f} deliveries/s, "
          f"forwarder {forwarder['delivered_per_s']:,.0f} deliveries/s, ratio "
          f"{benchmark.extra_info['ratio_relay_to_forwarder']}")


def bench_relay_rtt(benchmark) -> None:
    """Round trip publisher -> relay -> ponger -> relay -> publisher, vs the forwarder."""
    figures = {}

    def run() -> None:
        figures["forwarder"] = measure_rtt("forwarder")
        figures["relay"] = measure_rtt("relay")

    benchmark.pedantic(run, rounds=1, iterations=1)
    for kind in ("relay", "forwarder"):
        for key in ("rtt_p50_ms", "rtt_p99_ms"):
            benchmark.extra_info[f"{kind}_{key}"] = round(figures[kind][key], 3)
    print(f"\nRTT relay p50 {figures['relay']['rtt_p50_ms']:.3f} ms p99 {figures['relay']['rtt_p99_ms']:.3f} ms; "
          f"forwarder p50 {figures['forwarder']['rtt_p50_ms']:.3f} ms p99 {figures['forwarder']['rtt_p99_ms']:.3f} ms")


def bench_relay_fairness(benchmark) -> None:
    """Well-behaved clients' one-way latency through the relay, without and with a flooding
    publisher whose address they (and a crowd) subscribe to, in the same run."""
    figures = {}

    def run() -> None:
        figures.update(measure_fairness())

    benchmark.pedantic(run, rounds=1, iterations=1)
    quiet, flood = figures["quiet"], figures["flood"]
    for name, phase in (("quiet", quiet), ("flood", flood)):
        for key in ("p50_ms", "p99_ms", "max_ms"):
            benchmark.extra_info[f"{name}_{key}"] = round(phase[key], 2)
        benchmark.extra_info[f"{name}_received"] = phase["count"]
    benchmark.extra_info["flood_offered_per_s"] = round(figures["flood_offered_per_s"])
    benchmark.extra_info["crowd_received"] = figures["crowd_received"]
    print(f"\ncalm latency without flooder p50 {quiet['p50_ms']:.2f} ms p99 {quiet['p99_ms']:.2f} ms; "
          f"with a flooder at {figures['flood_offered_per_s']:,.0f} msg/s to {CROWD + CALM_PAIRS} subscribers "
          f"p50 {flood['p50_ms']:.2f} ms p99 {flood['p99_ms']:.2f} ms (max {flood['max_ms']:.1f} ms); "
          f"calm messages received/sent: {quiet['count']}/{figures['sent'][QUIET]} quiet, "
          f"{flood['count']}/{figures['sent'][FLOOD]} flood")
    for name, phase_value in (("quiet", QUIET), ("flood", FLOOD)):
        # Nothing a well-behaved client sent is lost: every calm message of the phase arrived.
        assert figures[name]["count"] == figures["sent"][phase_value], f"calm messages lost in the {name} phase"

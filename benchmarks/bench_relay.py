"""Relay path: one publisher -> 1 and -> 10 subscribers, and round-trip latency, through the
embedded relay and, in the same run, through a trivial ``websockets`` forwarder (the baseline).

Three processes per measurement: the server (relay or forwarder), the subscriber(s) (one
process holding every subscriber connection) and the publisher (the pytest process). Clients
are raw WebSockets sending pre-encoded PUBLISH frames with a 32-byte value, so both servers
see identical traffic; the forwarder sends every message to every other connection.

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

async def _run_relay(port_queue, stop_event) -> None:
    from clasp_fast.relay import Relay

    # A large queue: the benchmark measures routing, not the slow-consumer policy.
    relay = await Relay.start(host="127.0.0.1", port=0, queue_size=1_000_000)
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
    runner = _run_relay if kind == "relay" else _run_forwarder
    asyncio.run(runner(port_queue, stop_event))


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
    clasp = kind == "relay"
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
    clasp = kind == "relay"
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

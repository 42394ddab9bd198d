"""Metrics wired into the relay, the P2P endpoint, the hybrid client and the CLI: each scraped over
real HTTP on loopback and compared with its ``stats()``."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from clasp_fast import ClaspP2P
from clasp_fast.client import ClaspClient
from clasp_fast.errors import MetricsError
from clasp_fast.relay import Relay
from clasp_fast.signaling import InMemorySignaling

from .cli_process import CliProcess, free_port, run_cli
from .test_streams_clock import alice_and_bob
from .test_metrics import scrape, scraped


def as_scraped(snapshot: dict) -> dict[str, dict[tuple, float]]:
    return {
        name: {tuple(sorted(entry["labels"].items())): float(entry["value"]) for entry in entries}
        for name, entries in snapshot.items() if entries
    }


def held_port() -> socket.socket:
    """A listening socket on 127.0.0.1 (its port is in use while it stays open)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_a_relay_with_metrics_port_serves_what_stats_returns(make_relay) -> None:
    relay = await make_relay(metrics_port=0)
    assert relay.metrics_server is not None and relay.metrics_server.host == "127.0.0.1"
    client = await ClaspClient.connect(relay.url, name="m")
    try:
        for i in range(10):
            await client.set(f"/m/{i}", i)
        await client.get("/m/9")  # every SET before it was routed
        figures = await scraped(relay.metrics_server.url)
        assert figures == as_scraped(relay.stats())
        received = (("channel", "websocket"), ("direction", "received"), ("peer", ""), ("route", "relay"))
        assert figures["clasp_messages_total"][received] >= 11
        assert figures["clasp_sessions"] == {(): 1.0}
        sent = (("channel", "websocket"), ("direction", "sent"), ("peer", ""), ("route", "relay"))
        assert figures["clasp_messages_total"][sent] >= 2  # WELCOME and the GET's answer at least
        assert figures["clasp_bytes_total"][sent] > 0
        assert figures["clasp_bytes_total"][received] > 11 * 4  # 11 frames of 4 bytes or more
    finally:
        await client.close()
    url = relay.metrics_server.url
    await relay.close()
    assert relay.metrics_server is None
    with pytest.raises(OSError):
        scrape(url)  # the endpoint closed with the relay


async def test_a_relay_metrics_port_in_use_is_one_metrics_error_and_nothing_listens() -> None:
    with held_port() as sock:
        port = sock.getsockname()[1]
        relay = Relay("127.0.0.1", 0, metrics_port=port)
        with pytest.raises(MetricsError, match=f"metrics port {port} on 127.0.0.1 is already in use"):
            await relay.listen()
        assert relay.metrics_server is None and relay._server is None


async def test_p2p_endpoint_metrics_per_channel_scraped_on_both_sides() -> None:
    async with alice_and_bob() as (alice, bob, peer):
        server = await alice.serve_metrics(0)
        other = await asyncio.wait_for(anext(aiter(bob.incoming())), 5)
        got = asyncio.get_running_loop().create_future()
        other.on("/done", lambda value, address: got.done() or got.set_result(value))
        for i in range(40):
            await peer.set(f"/v/{i % 4}", i)
        await peer.set("/done", 1)
        await asyncio.wait_for(got, 5)
        while peer.clock is None:
            await asyncio.sleep(0.02)
        figures = await scraped(server.url)
        now = as_scraped(alice.stats())
        for name in ("clasp_rtt_seconds", "clasp_clock_offset_seconds", "clasp_clock_uncertainty_seconds"):
            assert figures.pop(name).keys() == now.pop(name).keys() == {(("peer", "bob"),)}
        assert figures == now
        sent = (("channel", "clasp-reliable"), ("direction", "sent"), ("peer", "bob"), ("route", "p2p"))
        assert figures["clasp_messages_total"][sent] == 41.0
        assert figures["clasp_peers"] == {(): 1.0}
        label = other.client_id or other.session_id  # bob knows alice by session id only
        received = (("channel", "clasp-reliable"), ("direction", "received"), ("peer", label), ("route", "p2p"))
        assert as_scraped(bob.stats())["clasp_messages_total"][received] == 41.0
        with held_port() as sock:
            with pytest.raises(MetricsError, match="already in use"):
                await bob.serve_metrics(sock.getsockname()[1])
    assert alice.metrics_server is None  # closed with the endpoint


async def test_missing_prometheus_client_names_the_metrics_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    p2p = ClaspP2P(InMemorySignaling.pair("a", "b")[0], client_id="x")
    with pytest.raises(MetricsError, match=r"'metrics' extra"):
        await p2p.serve_metrics(0)
    assert p2p.stats()["clasp_peers"] == [{"labels": {}, "value": 0}]  # plain figures need nothing


def test_cli_relay_metrics_port_is_scraped_over_http() -> None:
    metrics_port = free_port()
    with CliProcess("relay", "--port", "0", "--metrics-port", str(metrics_port)) as relay:
        relay.wait_for(r"metrics on http://127\.0\.0\.1:\d+/metrics", 30)
        status, _, body = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and "clasp_sessions 0.0" in body


def test_cli_metrics_port_in_use_is_one_line_and_a_non_zero_exit(relay_url_in_thread) -> None:
    with held_port() as sock:
        port = str(sock.getsockname()[1])
        for args in (("relay", "--port", "0", "--metrics-port", port),
                     ("peer", "--id", "w", "--watch", "/x/**", "--relay", relay_url_in_thread,
                      "--metrics-port", port, "--seconds", "1")):
            done = run_cli(*args, timeout=60)
            assert done.returncode != 0
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1, done.stderr
            assert f"metrics port {port} on 127.0.0.1 is already in use" in lines[0]


def test_cli_peer_metrics_port_is_scraped_over_http(relay_url_in_thread) -> None:
    metrics_port = free_port()
    with CliProcess("peer", "--id", "watcher", "--watch", "/x/**", "--relay", relay_url_in_thread,
                    "--metrics-port", str(metrics_port), "--seconds", "30") as peer:
        peer.wait_for(r"metrics on http://127\.0\.0\.1:\d+/metrics", 30)
        peer.wait_for(r"session ", 30)
        status, _, body = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert "clasp_peers 0.0" in body and 'clasp_reconnects_total{route="relay"} 0.0' in body


@pytest.fixture
def relay_url_in_thread():
    """A real relay on loopback in a thread of its own (the CLI children connect to it)."""
    import threading

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            state["relay"] = await Relay.start("127.0.0.1", 0)
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()
            await state["relay"].close()

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield state["relay"].url
    loop.call_soon_threadsafe(state["stop"].set)
    thread.join(10)
    loop.close()

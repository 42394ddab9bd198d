"""clasp_fast.metrics: plain figures, and the same figures scraped over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clasp_fast.client import ClaspClient
from clasp_fast.messages import Set
from clasp_fast.metrics import Metrics, MetricsError, relay_source, transport_source
from clasp_fast.relay import Relay

from .test_webrtc import _collect, connected, loopback


def scrape(url: str) -> tuple[int, str, str]:
    """GET ``url`` with the standard library's HTTP client: (status, content type, body)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def scraped(url: str) -> dict[str, dict[tuple, float]]:
    """The endpoint's samples: ``{sample name: {sorted label pairs: value}}``."""
    status, content_type, body = await asyncio.to_thread(scrape, url)
    assert status == 200 and content_type.startswith("text/plain; version=")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def as_scraped(metrics: Metrics) -> dict[str, dict[tuple, float]]:
    """``metrics.snapshot()`` in the shape of :func:`scraped`."""
    return {
        name: {tuple(sorted(entry["labels"].items())): float(entry["value"]) for entry in entries}
        for name, entries in metrics.snapshot().items() if entries
    }


# -- plain figures -----------------------------------------------------------------------------

def test_counters_gauges_and_sources_add_up_in_the_snapshot() -> None:
    metrics = Metrics()
    metrics.inc("clasp_reconnects_total", route="relay")
    metrics.inc("clasp_reconnects_total", 2, route="relay")
    metrics.set("clasp_rtt_seconds", 0.004, peer="viewer-1")
    hot = {"sent": 0}
    metrics.add_source(lambda: [("clasp_messages_total", ("p2p", "viewer-1", "clasp", "sent"), hot["sent"])])
    hot["sent"] = 41
    metrics.add_source(lambda: [("clasp_messages_total", ("p2p", "viewer-1", "clasp", "sent"), 1)])
    assert metrics.value("clasp_reconnects_total", route="relay") == 3
    assert metrics.value("clasp_messages_total", route="p2p", peer="viewer-1", channel="clasp", direction="sent") == 42
    assert metrics.value("clasp_failovers_total", peer="nobody") == 0
    snapshot = metrics.snapshot()
    assert snapshot["clasp_rtt_seconds"] == [{"labels": {"peer": "viewer-1"}, "value": 0.004}]
    assert snapshot["clasp_sessions"] == []


def test_misuse_is_refused_naming_the_metric_and_labels() -> None:
    metrics = Metrics()
    with pytest.raises(KeyError, match="clasp_nope"):
        metrics.inc("clasp_nope")
    with pytest.raises(ValueError, match=r"takes labels \('route',\)"):
        metrics.inc("clasp_reconnects_total", peer="x")
    with pytest.raises(ValueError, match="gauge"):
        metrics.inc("clasp_rtt_seconds", peer="x")
    with pytest.raises(ValueError, match="counter"):
        metrics.set("clasp_failovers_total", 3, peer="x")
    with pytest.raises(ValueError, match="only goes up"):
        metrics.inc("clasp_failovers_total", -1, peer="x")
    metrics.add_source(lambda: [("clasp_peers", ("extra",), 1)])
    with pytest.raises(ValueError, match="clasp_peers"):
        metrics.collect()


def test_a_missing_prometheus_client_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    metrics = Metrics()
    metrics.inc("clasp_reconnects_total", route="relay")
    assert metrics.value("clasp_reconnects_total", route="relay") == 1  # plain figures need nothing
    with pytest.raises(MetricsError, match=r"\[metrics\]"):
        metrics.registry()


# -- the endpoint --------------------------------------------------------------------------------

async def test_the_endpoint_serves_the_same_figures_as_the_snapshot() -> None:
    metrics = Metrics()
    counts = {"frames": 0}
    metrics.add_source(lambda: [("clasp_messages_total", ("p2p", "a", "clasp", "sent"), counts["frames"]),
                                ("clasp_queue_depth", ("p2p", "a", "clasp"), 7)])
    metrics.inc("clasp_failovers_total", peer="a")
    metrics.set("clasp_clock_offset_seconds", -0.25, peer="a")
    async with await metrics.serve(0) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        counts["frames"] = 10
        first = await scraped(server.url)
        assert first == as_scraped(metrics)
        assert first["clasp_messages_total"] == {
            (("channel", "clasp"), ("direction", "sent"), ("peer", "a"), ("route", "p2p")): 10.0}
        counts["frames"] = 25  # read at scrape time, not copied when recorded
        assert (await scraped(server.url))["clasp_messages_total"] == as_scraped(metrics)["clasp_messages_total"]
        assert as_scraped(metrics)["clasp_messages_total"][
            (("channel", "clasp"), ("direction", "sent"), ("peer", "a"), ("route", "p2p"))] == 25.0


async def test_two_objects_in_one_process_keep_their_own_figures() -> None:
    one, two = Metrics(), Metrics()
    one.inc("clasp_reconnects_total", route="relay")
    two.inc("clasp_reconnects_total", 5, route="relay")
    async with await one.serve(0) as a, await two.serve(0) as b:
        assert (await scraped(a.url))["clasp_reconnects_total"] == {(("route", "relay"),): 1.0}
        assert (await scraped(b.url))["clasp_reconnects_total"] == {(("route", "relay"),): 5.0}


async def test_a_port_in_use_gets_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError, match=f"metrics port {port} on 127.0.0.1 is already in use"):
            await Metrics().serve(port)


async def test_other_paths_methods_and_garbage_get_http_errors() -> None:
    async with await Metrics().serve(0) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, _, body = await asyncio.to_thread(scrape, base + "/other")
        assert status == 404 and "/metrics" in body
        request = urllib.request.Request(server.url, data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(urllib.request.urlopen, request, None, 5)
        assert info.value.code == 405
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"NONSENSE\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400 ")
        writer.close()
        # The endpoint is still up.
        assert (await asyncio.to_thread(scrape, server.url))[0] == 200


# -- real objects ------------------------------------------------------------------------------

async def test_a_real_relay_scraped_while_clients_come_and_go() -> None:
    metrics = Metrics()
    async with Relay(port=0) as relay:
        metrics.add_source(relay_source(relay))
        async with await metrics.serve(0) as server:
            a = await ClaspClient.connect(relay.url, name="a", reconnect=False)
            b = await ClaspClient.connect(relay.url, name="b", reconnect=False)
            for i in range(20):
                await a.set("/m/x", i)
            await a.ping()
            await b.ping()
            during = await scraped(server.url)
            assert during == as_scraped(metrics)
            assert during["clasp_sessions"] == {(): 2.0}
            received_key = (("channel", "websocket"), ("direction", "received"), ("peer", ""), ("route", "relay"))
            assert during["clasp_messages_total"][received_key] == 22.0  # 20 SETs + 2 PINGs
            await a.close()
            await b.ping()
            after = await scraped(server.url)
            assert after["clasp_sessions"] == {(): 1.0}
            assert after["clasp_messages_total"][received_key] == 23.0  # a's count is kept after it left
            await b.close()


async def test_a_real_webrtc_pair_scraped_on_both_sides() -> None:
    config = loopback(keepalive_interval=0.05, keepalive_timeout=2.0)
    async with connected(config, config) as (a, b, _, _):
        metrics = Metrics()
        metrics.add_source(transport_source(a, "peer-b"))
        metrics.add_source(transport_source(b, "peer-a"))
        for i in range(50):
            await a.sender.send(Set(address="/m/v", value=i))
        assert len(await _collect(b.receiver, 50)) == 50
        while a.stats().rtt is None:
            await asyncio.sleep(0.02)
        async with await metrics.serve(0) as server:
            figures = await scraped(server.url)
        now = as_scraped(metrics)
        # The keepalive (SYNC exchanges) refreshes the RTT and the clock between the two looks;
        # every other figure is the same.
        for name in ("clasp_rtt_seconds", "clasp_clock_offset_seconds", "clasp_clock_uncertainty_seconds"):
            assert figures.pop(name).keys() == now.pop(name).keys()
        assert figures == now
        sent = (("channel", "clasp-reliable"), ("direction", "sent"), ("peer", "peer-b"), ("route", "p2p"))
        received = (("channel", "clasp-reliable"), ("direction", "received"), ("peer", "peer-a"), ("route", "p2p"))
        assert figures["clasp_messages_total"][sent] == 50.0
        assert figures["clasp_messages_total"][received] == 50.0
        assert 0 < figures["clasp_bytes_total"][sent] <= a.stats().bytes_sent
        assert figures["clasp_peers"] == {(): 2.0}
        assert 0 < metrics.value("clasp_rtt_seconds", peer="peer-b") < 1

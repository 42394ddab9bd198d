"""Counters and gauges of a relay or peer: plain data for ``stats()``, Prometheus text for operators.

One source of truth: the objects that move messages keep plain Python counters (an ``int`` in a
dict costs a few tens of ns to bump); a :class:`Metrics` reads them through *sources* (functions
called when someone looks) and holds the few figures that are only counted here (reconnects,
failovers). :meth:`Metrics.snapshot` gives them as plain data; :meth:`Metrics.serve` exposes the
same figures over HTTP in the Prometheus text format, built by ``prometheus_client`` at scrape
time from a registry of this object's own (never the process-wide default registry, so two peers
in one process do not clash)::

    metrics = Metrics()
    metrics.add_source(lambda: [("clasp_sessions", (), len(relay.sessions))])
    server = await metrics.serve(9464)           # http://127.0.0.1:9464/metrics
    ...
    await server.close()

``prometheus_client`` is an optional dependency: the ``metrics`` extra of this package
(``pip install -e '.[metrics]'`` in a clone). Without it everything but :meth:`Metrics.serve`,
:meth:`Metrics.registry` and :meth:`Metrics.exposition` works.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

from .errors import MetricsError

__all__ = [
    "METRICS",
    "MetricSpec",
    "Metrics",
    "MetricsError",
    "MetricsServer",
    "Sample",
    "relay_source",
    "transport_source",
]


@dataclass(frozen=True)
class MetricSpec:
    """A metric family: Prometheus name, ``counter`` or ``gauge``, help text and label names."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    labels: tuple[str, ...] = ()


# route: "p2p" or "relay"; peer: the peer's client id (else session id), "" for relay aggregates;
# channel: the DataChannel label on P2P ("clasp", "clasp-reliable", extras), "websocket" on the relay.
METRICS = (
    MetricSpec("clasp_messages_total", "counter", "CLASP frames sent or received",
               ("route", "peer", "channel", "direction")),
    MetricSpec("clasp_bytes_total", "counter", "Bytes sent or received (DataChannel or WebSocket messages)",
               ("route", "peer", "channel", "direction")),
    MetricSpec("clasp_drops_total", "counter", "Messages dropped, by reason",
               ("route", "peer", "channel", "reason")),
    MetricSpec("clasp_conflated_total", "counter", "Queued values replaced by a newer value to the same address",
               ("route", "peer", "channel")),
    MetricSpec("clasp_queue_depth", "gauge", "Messages waiting in a queue", ("route", "peer", "queue")),
    MetricSpec("clasp_rtt_seconds", "gauge", "Round-trip time to a peer", ("peer",)),
    MetricSpec("clasp_clock_offset_seconds", "gauge", "A peer's clock minus this host's clock", ("peer",)),
    MetricSpec("clasp_clock_uncertainty_seconds", "gauge", "Bound on the error of the clock offset", ("peer",)),
    MetricSpec("clasp_reconnects_total", "counter", "Reconnections (to the relay, or to a peer)", ("route",)),
    MetricSpec("clasp_failovers_total", "counter", "P2P links lost and taken over by the relay", ("peer",)),
    MetricSpec("clasp_sessions", "gauge", "Sessions connected to the relay"),
    MetricSpec("clasp_peers", "gauge", "P2P connections open"),
)

Labels = tuple[str, ...]
# What a source yields: (metric name, label values in the spec's order, value).
Sample = tuple[str, Labels, float]
Source = Callable[[], Iterable[Sample]]

_MISSING_EXTRA = (
    "metrics export needs prometheus_client, the 'metrics' extra of clasp-fast: "
    "pip install -e '.[metrics]' in a clone of clasp_fast (or pip install prometheus_client)"
)


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise MetricsError(_MISSING_EXTRA) from exc
    return prometheus_client


class Metrics:
    """The counters and gauges of one relay or peer (see :data:`METRICS` for the names)."""

    def __init__(self, specs: Iterable[MetricSpec] = METRICS) -> None:
        self.specs: dict[str, MetricSpec] = {}
        for spec in specs:
            if spec.name in self.specs:
                raise ValueError(f"metric {spec.name!r} declared twice")
            self.specs[spec.name] = spec
        self._values: dict[str, dict[Labels, float]] = {name: {} for name in self.specs}
        self._sources: list[Source] = []
        self._registry = None

    # -- recording ----------------------------------------------------------------------------

    def _key(self, name: str, labels: dict[str, str]) -> Labels:
        spec = self.specs.get(name)
        if spec is None:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(self.specs)}")
        if set(labels) != set(spec.labels):
            raise ValueError(f"metric {name!r} takes labels {spec.labels}, got {tuple(labels)}")
        return tuple(str(labels[label]) for label in spec.labels)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` to a counter (for rare events; hot paths keep their own counters, see sources)."""
        key = self._key(name, labels)
        if self.specs[name].kind != "counter":
            raise ValueError(f"metric {name!r} is a gauge: set() it")
        if amount < 0:
            raise ValueError(f"a counter only goes up; got amount {amount}")
        values = self._values[name]
        values[key] = values.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        key = self._key(name, labels)
        if self.specs[name].kind != "gauge":
            raise ValueError(f"metric {name!r} is a counter: inc() it")
        self._values[name][key] = value

    def add_source(self, source: Source) -> Source:
        """Call ``source()`` at every snapshot and scrape; it yields ``(name, label values, value)``."""
        self._sources.append(source)
        return source

    def remove_source(self, source: Source) -> None:
        self._sources.remove(source)

    # -- reading ------------------------------------------------------------------------------

    def collect(self) -> dict[str, dict[Labels, float]]:
        """Every series now: ``{name: {label values: value}}``; series from several places add up."""
        out = {name: dict(values) for name, values in self._values.items()}
        for source in list(self._sources):
            for name, labels, value in source():
                spec = self.specs.get(name)
                if spec is None:
                    raise KeyError(f"source {source!r} yielded unknown metric {name!r}")
                if len(labels) != len(spec.labels):
                    raise ValueError(f"source {source!r}: metric {name!r} takes labels {spec.labels}, got {labels}")
                series = out[name]
                series[labels] = series.get(labels, 0) + value
        return out

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """The same figures as the endpoint, as plain data: ``{name: [{"labels": {...}, "value": v}]}``."""
        result = {}
        for name, series in self.collect().items():
            labels = self.specs[name].labels
            result[name] = [{"labels": dict(zip(labels, key, strict=True)), "value": value}
                            for key, value in series.items()]
        return result

    def value(self, name: str, **labels: str) -> float:
        """One series' current value (0 when it has none yet)."""
        return self.collect()[name].get(self._key(name, labels), 0)

    # -- Prometheus ---------------------------------------------------------------------------

    def registry(self) -> Any:
        """A ``prometheus_client`` registry holding only this object's figures (read at scrape time)."""
        if self._registry is None:
            prometheus = _prometheus()
            registry = prometheus.CollectorRegistry(auto_describe=False)
            registry.register(_Collector(self, prometheus))
            self._registry = registry
        return self._registry

    def exposition(self) -> bytes:
        """The Prometheus text format of every figure now."""
        text: bytes = _prometheus().generate_latest(self.registry())
        return text

    async def serve(self, port: int, host: str = "127.0.0.1") -> "MetricsServer":
        """Serve ``GET /metrics`` on ``host:port`` (``port=0``: any free port) from this event loop.

        Raises MetricsError when the port is in use (or cannot be bound) or prometheus_client is missing.
        """
        self.registry()  # fail now, not at the first scrape, when the extra is missing
        server = MetricsServer(self)
        await server.listen(host, port)
        return server


class _Collector:
    """Builds the metric families from :meth:`Metrics.collect` on each scrape."""

    def __init__(self, metrics: Metrics, prometheus: Any) -> None:
        self.metrics = metrics
        self.core = prometheus.core

    def collect(self) -> Iterable[Any]:
        families = {"counter": self.core.CounterMetricFamily, "gauge": self.core.GaugeMetricFamily}
        for name, series in self.metrics.collect().items():
            spec = self.metrics.specs[name]
            family = families[spec.kind](name, spec.help, labels=spec.labels)
            for labels, value in series.items():
                family.add_metric(labels, value)
            yield family


class MetricsServer:
    """An HTTP endpoint serving one :class:`Metrics` in the Prometheus text format, on the event loop."""

    READ_TIMEOUT = 5.0

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.host = ""
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def listen(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MetricsError(f"metrics port {port} on {host} is already in use; "
                                   "choose another --metrics-port (0 picks a free one)") from exc
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "MetricsServer":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, content_type = await self._respond(reader)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except ConnectionError:
            pass  # the scraper went away
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            return "400 Bad Request", b"incomplete or oversized HTTP request\n", text
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return "400 Bad Request", b"malformed request line\n", text
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"only GET\n", text
        if target.split("?", 1)[0] not in ("/metrics", "/"):
            return "404 Not Found", b"metrics are at /metrics\n", text
        prometheus = _prometheus()
        body = prometheus.generate_latest(self.metrics.registry())
        return "200 OK", b"" if method == "HEAD" else body, prometheus.CONTENT_TYPE_LATEST


# -- sources for the objects that exist today ----------------------------------------------------

def transport_source(transport: Any, peer: str) -> Source:
    """Figures of one :class:`~clasp_fast.webrtc.WebRtcTransport` (per DataChannel), labelled ``peer``."""
    def samples() -> Iterable[Sample]:
        yield from transport.metrics_samples(peer)
        if transport.state == "connected":
            yield "clasp_peers", (), 1

    return samples


def relay_source(relay: Any) -> Source:
    """Figures of a :class:`~clasp_fast.relay.Relay`: sessions, messages received, fan-out drops,
    rate-limit refusals and the frames waiting in the sessions' outgoing queues.

    The relay counts per session; a session's counts are kept as last seen here after it leaves, so
    the totals never go down (counts of its last moments, after the last look, are missed).
    """
    fields = ("received", "dropped", "refused")
    live: dict[str, tuple[int, ...]] = {}
    retired = [0] * len(fields)

    def samples() -> Iterable[Sample]:
        sessions = list(relay.sessions.values())
        now = {s.id: tuple(getattr(s, f) for f in fields) for s in sessions}
        for gone in live.keys() - now.keys():
            for i, count in enumerate(live.pop(gone)):
                retired[i] += count
        live.update(now)
        received, dropped, refused = (retired[i] + sum(c[i] for c in live.values()) for i in range(len(fields)))
        yield "clasp_sessions", (), len(sessions)
        yield "clasp_messages_total", ("relay", "", "websocket", "received"), received
        yield "clasp_drops_total", ("relay", "", "websocket", "slow_consumer"), dropped
        yield "clasp_drops_total", ("relay", "", "websocket", "rate_limit"), refused
        queued = sum(len(getattr(s.outbox, "queue", ())) for s in sessions)
        yield "clasp_queue_depth", ("relay", "", "outgoing"), queued

    return samples

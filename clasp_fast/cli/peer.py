"""``python -m clasp_fast peer``: a hybrid peer that streams synthetic samples or watches what arrives.

::

    python -m clasp_fast peer --id viewer --watch '/sensor/**'
    python -m clasp_fast peer --id sensor-1 --stream /sensor/accel --rate 1000

Without ``--relay`` the peer uses the relay on 127.0.0.1:7330, and starts an embedded one there
when none answers: the first of the two commands hosts it, and says so. ICE host candidates are
127.0.0.1 only and no STUN server is used unless ``--any-interface`` is given.

A streamer sends each sample as a stream PUBLISH whose samples are ``[send time (s), x, y, z]``:
to the peers named with ``--to``, else to every watcher it knows, as ``/peer/{id}{address}`` (over
P2P when connected, otherwise through the relay); with no watcher known, as a plain PUBLISH to relay
subscribers, and it says so. A watcher prints, once a second, the message rate, the latency (from
the send time in each message; both ends share this machine's clock) and how many messages came
per route.

When the relay goes away (its host stopped), P2P links stay up: the peer prints one line, keeps
streaming or watching over them and reconnects when a relay answers on the URL again. Every
argument is checked before anything starts; Ctrl-C (or SIGTERM) ends the run with its summary.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import signal
import sys
import time
from collections import Counter
from typing import Any

from ..bench.stats import histogram_percentile, percentile
from ..wire.protocol import DEFAULT_PORT, PEER_PREFIX
from . import arguments as types

# The P2P stack (aiortc, numpy) is imported when the command runs, not when the CLI starts.

__all__ = ["add_peer", "run_peer", "parse_summary", "DEFAULT_RELAY_PORT"]

DEFAULT_RELAY_PORT = DEFAULT_PORT
WATCH_FEATURE = "watch"
WARMUP_S = 1.0  # the watcher's summary latency leaves out the first second (the relay -> P2P switch)

_SUMMARY = re.compile(r"done: (sent|received) (\d+) messages, p2p (\d+), relay (\d+)")
_LATENCY = re.compile(r"latency after the first second: p50 ([\d.]+) ms, p99 ([\d.]+) ms")


def add_peer(subparsers) -> None:
    """Register the ``peer`` subcommand."""
    p = subparsers.add_parser(
        "peer", help="a P2P peer that streams synthetic samples (--stream) or prints what arrives (--watch)",
        description="A hybrid CLASP peer (relay + WebRTC P2P with fallback). Without --relay it uses the "
                    "relay on 127.0.0.1:PORT and starts an embedded one there when none answers.")
    p.add_argument("--id", required=True, type=types.client_id,
                   help="this peer's client id (one address segment, e.g. sensor-1)")
    p.add_argument("--relay", default=None, metavar="URL", type=types.relay_url,
                   help="relay URL, ws://host:port or wss://... (default ws://127.0.0.1:PORT, "
                        "started here if none answers)")
    p.add_argument("--port", type=types.port, default=DEFAULT_RELAY_PORT,
                   help=f"port of the default relay on 127.0.0.1 (default {DEFAULT_RELAY_PORT})")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stream", metavar="ADDRESS", type=types.address,
                      help="stream synthetic accelerometer samples to ADDRESS, e.g. /sensor/accel")
    mode.add_argument("--watch", metavar="PATTERN", type=types.pattern,
                      help="print rate and latency of messages matching PATTERN, e.g. '/sensor/**'")
    p.add_argument("--rate", type=types.positive_float, default=100.0,
                   help="messages per second when streaming (default 100)")
    p.add_argument("--to", action="append", default=[], metavar="ID", type=types.client_id,
                   help="stream to this peer (repeatable; default: every discovered watcher)")
    p.add_argument("--seconds", type=types.non_negative_float, default=0.0,
                   help="stop after streaming or watching this many seconds (default: run until ^C)")
    p.add_argument("--count", type=types.non_negative_int, default=0,
                   help="stop after this many messages (default: no limit)")
    p.add_argument("--mode", choices=("prefer_p2p", "p2p_only", "relay_only"), default="prefer_p2p",
                   help="routing mode (default prefer_p2p)")
    p.add_argument("--retry-interval", type=types.positive_float, default=2.0,
                   help="seconds before P2P is tried again")
    p.add_argument("--any-interface", action="store_true",
                   help="gather ICE host candidates on every interface instead of 127.0.0.1 only")
    p.add_argument("--busy-poll", type=types.non_negative_float, default=0.0, metavar="MS",
                   help="keep the event loop polling for MS ms after each P2P message (WebRtcConfig.busy_poll): "
                        "lower latency for a core while traffic flows; default 0, off")
    p.add_argument("--quiet", action="store_true", help="print only the final summary line")
    types.add_metrics_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_peer(args))
    except asyncio.CancelledError:  # a second Ctrl-C: stopped without waiting for the summary
        return 130


def parse_summary(lines: list[str]) -> dict[str, Any] | None:
    """The figures of a peer's final summary among its output ``lines``: ``kind`` ("sent" or
    "received"), ``messages``, ``p2p``, ``relay`` and, for a watcher, ``p50_ms`` / ``p99_ms``
    (None when it measured nothing); None when there is no summary."""
    summary = None
    for line in lines:
        match = _SUMMARY.search(line)
        if match is not None:
            kind, messages, p2p, relay = match.groups()
            summary = {"kind": kind, "messages": int(messages), "p2p": int(p2p), "relay": int(relay),
                       "p50_ms": None, "p99_ms": None}
            continue
        match = _LATENCY.search(line)
        if match is not None and summary is not None:
            summary["p50_ms"], summary["p99_ms"] = float(match.group(1)), float(match.group(2))
    return summary


def _say(text: str) -> None:
    print(text, flush=True)


class _StopSignal:
    """SIGINT and SIGTERM set ``event`` (the run ends with its summary); a second one cancels the run."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._task = asyncio.current_task()
        self._installed: list[int] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(number, self._on_signal)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no such support
                continue
            self._installed.append(number)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for number in self._installed:
            loop.remove_signal_handler(number)
        self._installed.clear()

    def _on_signal(self) -> None:
        if self.event.is_set() and self._task is not None:
            self._task.cancel()
        self.event.set()

    async def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when a stop signal came."""
        if seconds > 0 and not self.event.is_set():
            try:
                await asyncio.wait_for(self.event.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        return self.event.is_set()


async def _probe(url: str) -> bool:
    """True when a CLASP relay answers at ``url``."""
    from ..relay_client import ClaspClient
    from ..errors import ClaspError

    try:
        probe = await ClaspClient.connect(url, name="clasp_fast peer probe", reconnect=False, connect_timeout=2.0)
    except ClaspError:
        return False
    await probe.close()
    return True


async def _relay_url(args: argparse.Namespace) -> tuple[str, Any]:
    """The relay to use, and the embedded relay this peer hosts (or None).

    Raises ``OSError`` when no relay answers on the default port and none can be started there.
    """
    if args.relay:
        return args.relay, None
    url = f"ws://127.0.0.1:{args.port}"
    if await _probe(url):
        return url, None
    from ..relay import Relay

    try:
        relay = await Relay.start("127.0.0.1", args.port)
    except OSError:
        if await _probe(url):  # another peer started one meanwhile
            return url, None
        raise
    _say(f"started the embedded relay on {relay.url} (this peer hosts it)")
    _say("  when this peer stops, the others keep their P2P links and wait for a relay")
    return relay.url, relay


def _rtc_config(args: argparse.Namespace) -> Any:
    from ..transport.webrtc import WebRtcConfig

    return WebRtcConfig(host_addresses=None if args.any_interface else ["127.0.0.1"],
                        keepalive_interval=0.5, keepalive_timeout=3.0, connection_timeout=10.0,
                        busy_poll=args.busy_poll / 1000)


def _hybrid_client(url: str, args: argparse.Namespace) -> Any:
    """A hybrid client whose relay connection is retried for as long as the peer runs."""
    from ..relay_client import ClaspClient
    from ..hybrid.routing import HybridClient, P2POptions

    relay = ClaspClient(url, name=f"clasp_fast peer {args.id}", reconnect_max_attempts=None,
                        reconnect_max_delay=1.0)
    options = P2POptions(client_id=args.id, rtc_config=_rtc_config(args), prefer_p2p=args.mode != "relay_only",
                         fallback_to_router=args.mode != "p2p_only", retry_interval=args.retry_interval,
                         presence_interval=2.0, features=(WATCH_FEATURE,) if args.watch else ())
    return HybridClient(relay, options)


async def run_peer(args: argparse.Namespace) -> int:
    """Run the ``peer`` command; returns the exit status."""
    from ..errors import ClaspError, MetricsError

    stop = _StopSignal()
    stop.install()
    try:
        try:
            url, relay = await _relay_url(args)
        except OSError as exc:
            print(f"clasp-fast peer: error: no relay answers on ws://127.0.0.1:{args.port} and none can be "
                  f"started there: {types.listen_error(exc, '127.0.0.1', args.port)}", file=sys.stderr)
            return 1
        client = _hybrid_client(url, args)
        try:
            if args.metrics_port is not None:  # first: a port in use ends the run before any connection
                server = await client.p2p.serve_metrics(args.metrics_port, args.metrics_host)
                _say(f"metrics on {server.url}")
            await client.open()
        except ClaspError as exc:
            problem = str(exc) if isinstance(exc, MetricsError) else f"cannot connect to {url}: {exc}"
            print(f"clasp-fast peer: error: {problem}", file=sys.stderr)
            await client.close()
            if relay is not None:
                await relay.close()
            return 1
        _say(f"peer {client.client_id} on {url}")
        _say(f"  session {client.session_id}")
        client.relay.on_disconnect(lambda reason: _say(
            f"relay lost ({reason or 'closed'}): P2P links stay up, retrying"))
        client.relay.on_connect(lambda: _say(f"relay back: reconnected to {url}"))
        client.p2p.on_connection(lambda peer: _say(f"P2P link up: {peer.client_id or peer.session_id}"))
        client.p2p.on_disconnection(lambda peer, reason: _say(
            f"P2P link down: {peer.client_id or peer.session_id} ({reason or 'closed'})"))
        try:
            if args.stream:
                return await _Streamer(client, args, stop).run()
            return await _Watcher(client, args, stop).run()
        finally:
            await client.close()
            if relay is not None:
                _say(f"stopping the embedded relay on {relay.url}")
                await relay.close()
    finally:
        stop.remove()


class _Streamer:
    """Sends synthetic samples at ``--rate`` until ``--seconds``, ``--count`` or a stop signal."""

    def __init__(self, client: Any, args: argparse.Namespace, stop: _StopSignal) -> None:
        self.client = client
        self.args = args
        self.stop = stop
        self.sent = {"p2p": 0, "relay": 0}
        self.unsent = 0
        self.warned_missing: set[str] = set()

    def targets(self) -> list[str]:
        """Who gets the samples: ``--to``, else every watcher discovered or linked over P2P."""
        if self.args.to:
            return list(self.args.to)
        p2p = self.client.p2p
        found = {info.client_id for info in p2p.peers() if info.client_id and WATCH_FEATURE in info.features}
        found |= {peer.client_id for peer in p2p.connections if peer.client_id and WATCH_FEATURE in peer.features}
        return sorted(found)

    def describe(self, targets: list[str]) -> str:
        if targets:
            return f"sending to {', '.join(targets)}"
        if self.client.relay.connected:
            return f"warning: no watcher known; streaming to relay subscribers of {self.args.stream}"
        return "warning: no watcher known and no relay: nothing can be sent"

    def warn_undiscovered(self) -> None:
        for target in self.args.to:
            if target in self.warned_missing or self.client.p2p.find_peer(target) is not None:
                continue
            self.warned_missing.add(target)
            _say(f"warning: no peer {target!r} found: its messages go through the relay to "
                 f"{PEER_PREFIX}{target}{self.args.stream}, where nobody may be listening")

    async def send(self, targets: list[str], samples: Any) -> None:
        from ..errors import TransportError

        address = self.args.stream
        for target in [*targets] if targets else [None]:
            try:
                if target is None:
                    await self.client.relay.stream(address, samples)
                    route = "relay"
                else:
                    route = await self.client.stream(f"{PEER_PREFIX}{target}{address}", samples)
            except TransportError:  # no P2P link to this target and the relay is down
                self.unsent += 1
                continue
            self.sent[route] += 1

    async def run(self) -> int:
        import numpy as np

        args = self.args
        if not args.to:
            await self._wait_for_watchers(1.0)
        interval = 1.0 / args.rate
        started = time.monotonic()
        deadline = started + args.seconds if args.seconds > 0 else math.inf
        report_at = started + 1.0
        next_at = started
        count = 0
        phase = 0.0
        last_state: tuple | None = None
        while not self.stop.event.is_set() and (args.count <= 0 or count < args.count):
            now = time.monotonic()
            if now >= deadline:
                break
            targets = self.targets()
            state = (tuple(targets), bool(targets) or self.client.relay.connected)
            if state != last_state:
                _say(self.describe(targets))
                last_state = state
            phase += 2 * math.pi * interval
            samples = np.array([time.time(), math.sin(phase), math.cos(phase), 9.81])
            await self.send(targets, samples)
            count += 1
            next_at += interval
            now = time.monotonic()
            if now >= report_at:
                self.warn_undiscovered()
                if not args.quiet:
                    _say(f"sent {count} messages  p2p {self.sent['p2p']}  relay {self.sent['relay']}")
                report_at = now + 1.0
            if next_at > now:
                await self.stop.wait(min(next_at, deadline) - now)
            elif count % 64 == 0:
                await asyncio.sleep(0)  # behind schedule: still let the loop breathe
                next_at = max(next_at, now - 1.0)  # never burst more than a second's worth
        elapsed = time.monotonic() - started
        line = (f"done: sent {self.sent['p2p'] + self.sent['relay']} messages, p2p {self.sent['p2p']}, "
                f"relay {self.sent['relay']} in {elapsed:.1f} s")
        if self.unsent:
            line += f"; {self.unsent} not sent (no P2P link and no relay)"
        _say(line)
        return 0

    async def _wait_for_watchers(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.targets() and time.monotonic() < deadline:
            if await self.stop.wait(0.05):
                return


class _Watcher:
    """Counts what arrives for ``--watch`` and prints rate, latency and routes once a second."""

    def __init__(self, client: Any, args: argparse.Namespace, stop: _StopSignal) -> None:
        from ..wire.address import SubscriptionIndex

        self.client = client
        self.args = args
        self.stop = stop
        self.own = f"{PEER_PREFIX}{client.client_id}"
        self.wanted = SubscriptionIndex(16)
        self.wanted.add(args.watch, None, 1)
        self.window: list[float] = []
        self.messages = 0
        self.first_at: float | None = None
        self.steady: Counter[int] = Counter()  # latency in µs -> count, from the second second on
        self.early: Counter[int] = Counter()  # the same for the first second

    def record(self, value: Any, address: str) -> None:
        if address.startswith(self.own + "/"):
            address = address[len(self.own):]
        if not self.wanted.match(address):
            return
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.messages += 1
        sent_at = None
        if hasattr(value, "dtype") and len(value):
            sent_at = float(value[0])
        elif isinstance(value, (int, float)):
            sent_at = float(value)
        if sent_at is not None and 1e9 < sent_at < 1e11:
            latency = time.time() - sent_at
            self.window.append(latency)
            histogram = self.early if now - self.first_at < WARMUP_S else self.steady
            histogram[max(0, round(latency * 1e6))] += 1

    async def run(self) -> int:
        args = self.args
        client = self.client
        client.on(self.own + "/**", self.record)
        await client.subscribe(args.watch, self.record)
        started = time.monotonic()
        deadline = started + args.seconds if args.seconds > 0 else math.inf
        last = dict(client.stats()["received"])
        last_total = 0
        while not self.stop.event.is_set() and (args.count <= 0 or self.messages < args.count):
            now = time.monotonic()
            if now >= deadline:
                break
            if await self.stop.wait(min(1.0, deadline - now)):
                break
            stats = client.stats()
            received = stats["received"]
            latencies = sorted(self.window)
            self.window.clear()
            if not args.quiet:
                if latencies:
                    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
                    lat = f"latency p50 {p50:.2f} ms  p99 {p99:.2f} ms"
                else:
                    lat = "latency -"
                _say(f"{self.messages - last_total} msg/s  {lat}  p2p {received['p2p'] - last['p2p']}  "
                     f"relay {received['relay'] - last['relay']}")
            last = dict(received)
            last_total = self.messages
        received = client.stats()["received"]
        _say(f"done: received {self.messages} messages, p2p {received['p2p']}, relay {received['relay']}")
        if self.steady:
            _say(f"  latency after the first second: p50 {_percentile(self.steady, 50)}, "
                 f"p99 {_percentile(self.steady, 99)}")
        if self.early:
            _say(f"  latency in the first second: p50 {_percentile(self.early, 50)}, "
                 f"p99 {_percentile(self.early, 99)}")
        return 0


def _percentile(histogram: Counter, q: float) -> str:
    """Nearest-rank percentile of a histogram of µs values, in ms."""
    return f"{histogram_percentile(histogram, q) / 1000:.2f} ms"

"""``python -m clasp_fast peer``: a hybrid peer that streams synthetic samples or watches what arrives.

::

    python -m clasp_fast peer --id sensor-1 --stream /sensor/accel --rate 1000
    python -m clasp_fast peer --id viewer --watch '/sensor/**'

Without ``--relay`` the peer uses the relay on 127.0.0.1:7330, and starts an embedded one there
when none answers (so the first of the two commands hosts it). ICE host candidates are 127.0.0.1
only and no STUN server is used unless ``--any-interface`` is given.

A streamer sends each sample as a stream PUBLISH whose samples are ``[send time (s), x, y, z]``:
to the peers named with ``--to``, else to every discovered watcher, as ``/peer/{id}{address}`` (over
P2P when connected, otherwise through the relay), and when no watcher is known, as a plain PUBLISH
to relay subscribers. A watcher prints, once a second, the message rate, the latency (from the send
time in each message; both ends share this machine's clock) and how many messages came per route.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from typing import Any

# The P2P stack (aiortc, numpy) is imported when the command runs, not when the CLI starts.

__all__ = ["add_peer", "run_peer", "DEFAULT_RELAY_PORT"]

DEFAULT_RELAY_PORT = 7330
WATCH_FEATURE = "watch"
PEER_PREFIX = "/peer/"


def add_peer(subparsers) -> None:
    """Register the ``peer`` subcommand."""
    p = subparsers.add_parser(
        "peer", help="a P2P peer that streams synthetic samples (--stream) or prints what arrives (--watch)",
        description="A hybrid CLASP peer (relay + WebRTC P2P with fallback). Without --relay it uses the "
                    "relay on 127.0.0.1:PORT and starts an embedded one there when none answers.")
    p.add_argument("--id", required=True, help="this peer's client id (one address segment)")
    p.add_argument("--relay", default=None, metavar="URL",
                   help="relay URL (default ws://127.0.0.1:PORT, started here if none answers)")
    p.add_argument("--port", type=int, default=DEFAULT_RELAY_PORT,
                   help=f"port of the default relay on 127.0.0.1 (default {DEFAULT_RELAY_PORT})")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stream", metavar="ADDRESS", help="stream synthetic accelerometer samples to ADDRESS")
    mode.add_argument("--watch", metavar="PATTERN", help="print rate and latency of messages matching PATTERN")
    p.add_argument("--rate", type=float, default=100.0, help="messages per second when streaming (default 100)")
    p.add_argument("--to", action="append", default=[], metavar="ID",
                   help="stream to this peer (repeatable; default: every discovered watcher)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds (default: run until ^C)")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages (default: no limit)")
    p.add_argument("--mode", choices=("prefer_p2p", "p2p_only", "relay_only"), default="prefer_p2p",
                   help="routing mode (default prefer_p2p)")
    p.add_argument("--retry-interval", type=float, default=2.0, help="seconds before P2P is tried again")
    p.add_argument("--any-interface", action="store_true",
                   help="gather ICE host candidates on every interface instead of 127.0.0.1 only")
    p.add_argument("--quiet", action="store_true", help="print only the final summary line")
    p.set_defaults(func=lambda args: asyncio.run(run_peer(args)))


async def _relay_url(args: argparse.Namespace) -> tuple[str, Any]:
    """The relay to use, and the embedded relay started here (or None)."""
    from .client import ClaspClient
    from .errors import TransportError

    if args.relay:
        return args.relay, None
    url = f"ws://127.0.0.1:{args.port}"
    try:
        probe = await ClaspClient.connect(url, name="clasp_fast peer probe", reconnect=False, connect_timeout=2.0)
        await probe.close()
        return url, None
    except TransportError:
        pass
    from .relay import Relay

    try:
        relay = await Relay.start("127.0.0.1", args.port)
    except OSError:  # another peer started one meanwhile
        return url, None
    print(f"started the embedded relay on {relay.url}", flush=True)
    return relay.url, relay


def _rtc_config(args: argparse.Namespace) -> Any:
    from .webrtc import WebRtcConfig

    return WebRtcConfig(host_addresses=None if args.any_interface else ["127.0.0.1"],
                        keepalive_interval=0.5, keepalive_timeout=3.0, connection_timeout=10.0)


async def run_peer(args: argparse.Namespace) -> int:
    """Run the ``peer`` command; returns the exit status."""
    from .client import ClaspBuilder
    from .errors import ClaspError

    try:
        url, relay = await _relay_url(args)
    except ClaspError as exc:
        print(f"clasp-fast peer: {exc}", file=sys.stderr)
        return 1
    features = (WATCH_FEATURE,) if args.watch else ()
    builder = ClaspBuilder(url).name(f"clasp_fast peer {args.id}").with_p2p(
        client_id=args.id, rtc_config=_rtc_config(args), prefer_p2p=args.mode != "relay_only",
        fallback_to_router=args.mode != "p2p_only", retry_interval=args.retry_interval,
        presence_interval=2.0, features=features)
    try:
        client = await builder.connect()
    except ClaspError as exc:
        print(f"clasp-fast peer: cannot connect to {url}: {exc}", file=sys.stderr)
        if relay is not None:
            await relay.close()
        return 1
    print(f"peer {client.client_id} on {url} (session {client.session_id})", flush=True)
    try:
        if args.stream:
            return await _stream(client, args)
        return await _watch(client, args)
    finally:
        await client.close()
        if relay is not None:
            await relay.close()


def _deadline(args: argparse.Namespace) -> float:
    return time.monotonic() + args.seconds if args.seconds > 0 else math.inf


async def _stream(client: Any, args: argparse.Namespace) -> int:
    import numpy as np

    address = args.stream
    if not address.startswith("/"):
        print("clasp-fast peer: --stream takes an address starting with '/'", file=sys.stderr)
        return 2
    interval = 1.0 / max(args.rate, 0.001)
    deadline = _deadline(args)
    sent = {"p2p": 0, "relay": 0}
    report_at = time.monotonic() + 1.0
    next_at = time.monotonic()
    count = 0
    phase = 0.0
    while time.monotonic() < deadline and (args.count <= 0 or count < args.count):
        targets = list(args.to) or [p.client_id for p in client.p2p.peers()
                                    if p.client_id and WATCH_FEATURE in p.features]
        phase += 2 * math.pi * interval
        samples = np.array([time.time(), math.sin(phase), math.cos(phase), 9.81])
        if targets:
            for target in targets:
                route = await client.stream(f"{PEER_PREFIX}{target}{address}", samples)
                sent[route] += 1
        else:
            await client.relay.stream(address, samples)
            sent["relay"] += 1
        count += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif count % 64 == 0:
            await asyncio.sleep(0)  # behind schedule: still let the loop breathe
            next_at = max(next_at, time.monotonic() - 1.0)  # never burst more than a second's worth
        now = time.monotonic()
        if now >= report_at and not args.quiet:
            print(f"sent {count} messages  p2p {sent['p2p']}  relay {sent['relay']}  to {targets or 'subscribers'}",
                  flush=True)
            report_at = now + 1.0
    print(f"done: sent {count} messages, p2p {sent['p2p']}, relay {sent['relay']}", flush=True)
    return 0


async def _watch(client: Any, args: argparse.Namespace) -> int:
    from .address import SubscriptionIndex, validate_pattern

    pattern = args.watch
    validate_pattern(pattern)
    own = f"{PEER_PREFIX}{client.client_id}"
    wanted = SubscriptionIndex(16)
    wanted.add(pattern, None, 1)
    window: list[float] = []
    total = {"messages": 0}

    def record(value: Any, address: str) -> None:
        if address.startswith(own + "/"):
            address = address[len(own):]
        if not wanted.match(address):
            return
        total["messages"] += 1
        sent_at = None
        if hasattr(value, "dtype") and len(value):
            sent_at = float(value[0])
        elif isinstance(value, (int, float)):
            sent_at = float(value)
        if sent_at is not None and 1e9 < sent_at < 1e11:
            window.append(time.time() - sent_at)

    client.on(own + "/**", record)
    await client.subscribe(pattern, record)
    deadline = _deadline(args)
    last = dict(client.stats()["received"])
    last_total = 0
    while time.monotonic() < deadline and (args.count <= 0 or total["messages"] < args.count):
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        received = client.stats()["received"]
        rate = total["messages"] - last_total
        latencies = sorted(window)
        window.clear()
        if not args.quiet:
            if latencies:
                p50 = latencies[len(latencies) // 2] * 1000
                p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
                lat = f"latency p50 {p50:.2f} ms  p99 {p99:.2f} ms"
            else:
                lat = "latency -"
            print(f"{rate} msg/s  {lat}  p2p {received['p2p'] - last['p2p']}  relay {received['relay'] - last['relay']}"
                  f"  peers {client.stats()['p2p_connected']}", flush=True)
        last = dict(received)
        last_total = total["messages"]
    received = client.stats()["received"]
    print(f"done: received {total['messages']} messages, p2p {received['p2p']}, relay {received['relay']}", flush=True)
    return 0

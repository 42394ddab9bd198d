"""The hybrid client: a relay client plus direct P2P links, with automatic fallback.

::

    client = await (ClaspBuilder("ws://127.0.0.1:7330")
                    .with_p2p(client_id="mixer", rtc_config=WebRtcConfig(host_addresses=["127.0.0.1"]))
                    .connect())
    route = await client.set("/peer/browser-2/value", 42)   # "p2p" or "relay"

Addresses under ``/peer/{client_id}/...`` go to that peer: over P2P when a connection is up, else
through the relay (every hybrid client subscribes to ``/peer/{own client_id}/**`` on the relay, so
fallback traffic reaches it). Other addresses always use the relay. Routing modes:

* ``prefer_p2p`` (default): P2P when connected; otherwise the relay, while a connection is set up
  in the background; after a failure, P2P is tried again ``retry_interval`` seconds later.
* ``p2p_only``: a send with no P2P connection (after one connection attempt) raises ``TransportError``.
* ``relay_only``: never P2P.

Exactly once across failover (between hybrid clients, feature ``"seq"``): each reliable message to a
peer gets a message id -- a random 32-bit sender token and a per-link 32-bit sequence number -- carried
on P2P as the timestamp of a one-message BUNDLE, and on the relay as a PUBLISH (signal ``param`` for a
SET) whose ``timestamp`` is the id and whose ``id`` is :data:`ENVELOPE_ID` (the relay forwards both
fields unchanged; it would unpack a BUNDLE). The receiver acknowledges P2P ids cumulatively (an ACK
whose ``revision`` is the highest id received without a gap); when the link dies, every message not
yet acknowledged is re-sent through the relay, and the receiver drops ids it has already delivered.
Toward other peers frames stay plain (one CLASP frame per message, no envelope).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Literal

from .address import validate_pattern
from .client import ClaspClient
from .errors import ClaspError, TransportError
from .messages import MISSING, QOS_FIRE, Ack, Bundle, Publish, Set, default_qos
from .p2p import AcceptHook, ClaspP2P, Peer
from .webrtc import WebRtcConfig
from ._callbacks import CallbackRegistry, Subscription
from ._tasks import TaskSet

__all__ = ["HybridClient", "P2POptions", "Route", "RoutingMode", "ENVELOPE_ID", "PEER_PREFIX"]

log = logging.getLogger("clasp_fast.hybrid")

Route = Literal["p2p", "relay"]
RoutingMode = Literal["prefer_p2p", "p2p_only", "relay_only"]

PEER_PREFIX = "/peer/"
SEQ_FEATURE = "seq"
# Marks a relayed PUBLISH whose timestamp is a message id (ASCII "CLSQ").
ENVELOPE_ID = 0x434C5351
_ACK_DELAY = 0.02
_MAX_AHEAD = 65536
_RESEND_PACE = 128


@dataclass
class P2POptions:
    """P2P settings of a hybrid client (``ClaspBuilder.with_p2p``)."""

    enabled: bool = True
    rtc_config: WebRtcConfig | None = None
    prefer_p2p: bool = True
    fallback_to_router: bool = True
    client_id: str | None = None
    retry_interval: float = 5.0
    connect_timeout: float | None = None  # default: rtc_config.connection_timeout
    presence_interval: float = 5.0
    accept: AcceptHook | None = None
    features: tuple[str, ...] = ()  # extra features to announce

    @property
    def mode(self) -> RoutingMode:
        if not self.prefer_p2p:
            return "relay_only"
        return "prefer_p2p" if self.fallback_to_router else "p2p_only"


class _Link:
    """Send-side state toward one peer (by client id)."""

    __slots__ = ("client_id", "seq", "unacked", "peer", "attempt", "retry_at", "lost", "fallback")

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.seq = 0
        self.unacked: OrderedDict[int, Any] = OrderedDict()  # seq -> message sent over P2P, not yet acknowledged
        self.peer: Peer | None = None  # the connection whose unacked messages these are
        self.attempt: asyncio.Task | None = None
        self.retry_at = 0.0
        self.lost: Peer | None = None  # the last connection whose loss was handled
        self.fallback: asyncio.Task | None = None  # re-sending through the relay


class _Dedupe:
    """Receive-side record of the sequence numbers seen from one sender token."""

    __slots__ = ("next", "ahead")

    def __init__(self) -> None:
        self.next = 1  # every seq below has been delivered
        self.ahead: set[int] = set()

    def first_time(self, seq: int) -> bool:
        if seq < self.next or seq in self.ahead:
            return False
        if seq == self.next:
            self.next += 1
            while self.next in self.ahead:
                self.ahead.discard(self.next)
                self.next += 1
        else:
            self.ahead.add(seq)
            if len(self.ahead) > _MAX_AHEAD:  # a gap that will never fill: give up on it
                self.next = min(self.ahead)
                while self.next in self.ahead:
                    self.ahead.discard(self.next)
                    self.next += 1
        return True


class HybridClient:
    """A relay client and a P2P layer behind one API; sends to ``/peer/{id}/...`` pick their route."""

    def __init__(self, relay: ClaspClient, options: P2POptions | None = None) -> None:
        self.relay = relay
        self.options = options or P2POptions()
        self.mode: RoutingMode = self.options.mode
        rtc = self.options.rtc_config or WebRtcConfig()
        self.p2p = ClaspP2P(relay, client_id=self.options.client_id, rtc_config=rtc,
                            features=(SEQ_FEATURE, *self.options.features),
                            presence_interval=self.options.presence_interval, accept=self.options.accept)
        self.client_id = self.p2p.client_id
        self.retry_interval = self.options.retry_interval
        self.connect_timeout = self.options.connect_timeout or rtc.connection_timeout
        self._own_prefix = f"{PEER_PREFIX}{self.client_id}/"
        self._token = secrets.randbits(32) or 1
        self._links: dict[str, _Link] = {}
        self._dedupe: dict[int, _Dedupe] = {}
        self._ack_pending: dict[Peer, int] = {}
        self._ack_scheduled = False
        self._callbacks = CallbackRegistry(self._spawn, self._report, 256)
        self._relay_ids: dict[int, int] = {}  # our subscription id -> the relay client's
        self._background = TaskSet(self._report)
        self._counters = dict.fromkeys(
            ("sent_p2p", "sent_relay", "received_p2p", "received_relay", "fallbacks", "resent",
             "duplicates", "p2p_attempts", "p2p_failures"), 0)
        self._route_callbacks: list[Callable[[str, Route], Any]] = []
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> "HybridClient":
        """Connect the relay client (if needed), start discovery and subscribe to ``/peer/{client_id}/**``."""
        if not self.relay.connected:
            await self.relay.open()
        self.p2p.on_connection(self._on_peer)
        await self.p2p.connect()
        await self.relay.subscribe(self._own_prefix + "**", self._from_relay)
        return self

    async def close(self) -> None:
        """Close P2P connections, withdraw presence and close the relay connection."""
        self._closing = True
        for link in self._links.values():
            if link.attempt is not None:
                link.attempt.cancel()
        await self._background.cancel_and_wait()
        await self.p2p.close()
        await self.relay.close()

    async def __aenter__(self) -> "HybridClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        # Everything not routed here (bundle, query, ping, sync_clock, ...) is the relay client's.
        if name.startswith("_") or name in ("relay", "p2p"):
            raise AttributeError(name)
        return getattr(self.relay, name)

    @property
    def session_id(self) -> str | None:
        return self.relay.session_id

    # -- routing ------------------------------------------------------------------------

    def _target(self, address: str) -> str | None:
        if not address.startswith(PEER_PREFIX):
            return None
        end = address.find("/", len(PEER_PREFIX))
        target = address[len(PEER_PREFIX):end] if end > 0 else address[len(PEER_PREFIX):]
        return target or None

    def route_for(self, address: str) -> Route:
        """The route a send to ``address`` would take now."""
        target = self._target(address)
        if target is None or self.mode == "relay_only":
            return "relay"
        return "p2p" if self.p2p.connection(target) is not None else "relay"

    def on_route(self, callback: Callable[[str, Route], Any]) -> Callable:
        """Call ``callback(address, route)`` after every send."""
        self._route_callbacks.append(callback)
        return callback

    def _link(self, target: str) -> _Link:
        link = self._links.get(target)
        if link is None:
            link = self._links[target] = _Link(target)
        return link

    async def _send(self, message: Any, relay_send: Callable[[], Awaitable[Any]]) -> Route:
        address = message.address
        target = self._target(address)
        if target is None or self.mode == "relay_only" or target == self.client_id:
            await relay_send()
            return self._sent(address, "relay")
        link = self._link(target)
        peer = self.p2p.connection(target)
        if peer is None:
            if self.mode == "p2p_only":
                peer = await self._connect_now(link)
            else:
                self._maybe_connect(link)
        reliable = default_qos(message) != QOS_FIRE
        if peer is not None:
            outcome = await self._send_p2p(link, peer, message, reliable)
            if outcome == "p2p":
                return self._sent(address, "p2p")
            if self.mode == "p2p_only":
                raise TransportError(f"P2P only: the connection to {target!r} failed during the send",
                                     peer=target, step="send")
            if outcome == "resent":
                return self._sent(address, "relay")
        if link.fallback is not None and not link.fallback.done():
            await asyncio.shield(link.fallback)  # keep order: earlier messages are being re-sent
        if reliable and self._seq_capable(target):
            link.seq += 1
            await self._relay_envelope(message, link.seq)
        else:
            await relay_send()
        return self._sent(address, "relay")

    def _sent(self, address: str, route: Route) -> Route:
        self._counters["sent_p2p" if route == "p2p" else "sent_relay"] += 1
        for callback in self._route_callbacks:
            try:
                callback(address, route)
            except Exception:
                log.exception("route callback failed")
        return route

    def _seq_capable(self, target: str) -> bool:
        info = self.p2p.find_peer(target)
        return info is not None and SEQ_FEATURE in info.features

    async def _send_p2p(self, link: _Link, peer: Peer, message: Any, reliable: bool) -> str:
        """Send over P2P: "p2p"; "resent" when the link failed and the message went through the relay;
        "failed" when it failed and the caller must send it."""
        seq = None
        if reliable and SEQ_FEATURE in peer.features:
            link.peer = peer
            link.seq += 1
            seq = link.seq
            link.unacked[seq] = message
            wire = Bundle(messages=[message], timestamp=(self._token << 32) | seq)
        else:
            wire = message
        try:
            await peer.send(wire, reliable=True if seq is not None else None)
            return "p2p"
        except TransportError as exc:
            log.info("P2P send to %s failed: %s", link.client_id, exc)
            await asyncio.shield(self._start_fallback(link, peer, str(exc)))
        if seq is None:
            return "failed"
        if link.unacked.pop(seq, None) is not None and self.mode != "p2p_only":
            await self._relay_envelope(message, seq)  # queued after that fallback had run
            self._counters["resent"] += 1
        return "resent"

    def _maybe_connect(self, link: _Link) -> None:
        if link.attempt is not None or time.monotonic() < link.retry_at:
            return
        if self.p2p.find_peer(link.client_id) is None:
            return  # not discovered (yet): nothing to connect to
        link.attempt = self._spawn(self._attempt(link))

    async def _attempt(self, link: _Link) -> Peer | None:
        self._counters["p2p_attempts"] += 1
        try:
            return await asyncio.wait_for(self.p2p.connect_to_peer(link.client_id), self.connect_timeout)
        except (ClaspError, asyncio.TimeoutError) as exc:
            self._counters["p2p_failures"] += 1
            link.retry_at = time.monotonic() + self.retry_interval
            log.info("P2P connection to %s failed: %s", link.client_id, exc)
            return None
        finally:
            link.attempt = None

    async def _connect_now(self, link: _Link) -> Peer:
        attempt = link.attempt or self._spawn(self._attempt(link))
        link.attempt = attempt
        peer = await asyncio.shield(attempt)
        if peer is None:
            raise TransportError(f"P2P only: no P2P connection to {link.client_id!r}",
                                 peer=link.client_id, step="connect")
        return peer

    async def connect_to_peer(self, client_id: str) -> Peer:
        """Open (or return) the P2P connection to ``client_id`` now."""
        return await self._connect_now(self._link(client_id))

    # -- fallback -----------------------------------------------------------------------

    def _start_fallback(self, link: _Link, peer: Peer, reason: str | None) -> asyncio.Task:
        """Handle the loss of ``peer`` once: re-send what it did not acknowledge through the relay."""
        if link.lost is peer and link.fallback is not None:
            return link.fallback
        link.lost = peer
        pending = list(link.unacked.items()) if link.peer is peer else []
        link.unacked.clear()
        link.peer = None
        link.retry_at = time.monotonic() + self.retry_interval
        self._counters["fallbacks"] += 1
        link.fallback = self._spawn(self._resend(link, pending, reason))
        return link.fallback

    async def _resend(self, link: _Link, pending: list, reason: str | None) -> None:
        if self.mode == "p2p_only":
            return
        for count, (seq, message) in enumerate(pending, 1):
            await self._relay_envelope(message, seq)
            self._counters["resent"] += 1
            if count % _RESEND_PACE == 0:
                # The relay drops fan-out to a full session queue: let it catch up.
                await self.relay.ping(timeout=10.0)
        log.info("P2P link to %s lost (%s): %d unacknowledged messages re-sent through the relay",
                 link.client_id, reason, len(pending))

    def _on_peer_closed(self, peer: Peer, reason: str | None) -> None:
        link = self._links.get(peer.client_id or "")
        if link is not None and not self._closing:
            self._start_fallback(link, peer, reason)

    async def _relay_envelope(self, message: Any, seq: int) -> None:
        msgid = (self._token << 32) | seq
        if type(message) is Set:
            wire = Publish(address=message.address, signal="param", value=message.value, timestamp=msgid,
                           id=ENVELOPE_ID)
        else:
            wire = Publish(address=message.address, signal=message.signal, value=message.value,
                           timestamp=msgid, id=ENVELOPE_ID)
        await self.relay.publish(wire)

    # -- sending API --------------------------------------------------------------------

    async def set(self, address: str, value: Any, *, ttl: Any = None, wait: bool = False,
                  timeout: float = 5.0) -> Route:
        """Write a param; return the route taken. ``wait`` waits for the relay's ACK on relay sends
        of ordinary addresses (``/peer/`` fallback traffic is forwarded, not stored)."""
        message = Set(address=address, value=value)
        return await self._send(message, lambda: self.relay.set(address, value, ttl=ttl, wait=wait, timeout=timeout))

    async def emit(self, address: str, value: Any = MISSING) -> Route:
        """Publish an event; return the route taken."""
        message = Publish(address=address, signal="event", value=value)
        return await self._send(message, lambda: self.relay.publish(message))

    async def stream(self, address: str, samples: Any, rate: int | None = None) -> Route:
        """Publish stream samples (numpy array or sequence of floats) or one value; return the route."""
        if isinstance(samples, (list, tuple)) or hasattr(samples, "dtype"):
            message = Publish(address=address, signal="stream", samples=samples, rate=rate)
        else:
            message = Publish(address=address, signal="stream", value=samples, rate=rate)
        return await self._send(message, lambda: self.relay.publish(message))

    async def gesture(self, address: str, id: int, phase: str, value: Any = MISSING) -> Route:
        """Publish one gesture phase; return the route taken."""
        message = Publish(address=address, signal="gesture", id=id, phase=phase, value=value)
        return await self._send(message, lambda: self.relay.publish(message))

    async def publish(self, message: Publish) -> Route:
        """Send a ready-made PUBLISH; return the route taken."""
        return await self._send(message, lambda: self.relay.publish(message))

    async def get(self, address: str, timeout: float = 5.0) -> Any:
        """Read ``address``: from the peer over P2P for ``/peer/{id}/...`` when connected, else the relay."""
        target = self._target(address)
        peer = self.p2p.connection(target) if target is not None and self.mode != "relay_only" else None
        if peer is not None:
            return await peer.get(address, timeout)
        return await self.relay.get(address, timeout)

    # -- receiving ----------------------------------------------------------------------

    def on(self, pattern: str, callback: Callable | None = None, *, types: Iterable[str] | None = None):
        """Call ``callback(value, address)`` (or ``(value, address, message)``) for messages matching
        ``pattern`` from either route, each reliable message once. Decorator without ``callback``."""
        validate_pattern(pattern)

        def register(fn: Callable) -> int:
            sub = self._callbacks.add(pattern, fn, types)
            if not pattern.startswith(self._own_prefix):
                # Also wanted from the relay; our own /peer/ traffic comes through _from_relay.
                self._spawn(self._relay_subscribe(sub))
            return sub.id

        if callback is not None:
            return register(callback)

        def decorator(fn: Callable) -> Callable:
            register(fn)
            return fn

        return decorator

    async def subscribe(self, pattern: str, callback: Callable, types: Iterable[str] | None = None) -> int:
        """Like :meth:`on` with a callback, and wait until the relay has the subscription."""
        sub = self._callbacks.add(pattern, callback, types)
        if not pattern.startswith(self._own_prefix):
            await self._relay_subscribe(sub)
        return sub.id

    async def unsubscribe(self, subscription_id: int) -> None:
        if self._callbacks.remove(subscription_id) is None:
            return
        relay_id = self._relay_ids.pop(subscription_id, None)
        if relay_id is not None:
            await self.relay.unsubscribe(relay_id)

    async def _relay_subscribe(self, sub: Subscription) -> None:
        own = self._own_prefix

        def from_relay(value: Any, address: str, message: Any) -> None:
            if address.startswith(own):
                return  # delivered once by _from_relay
            self._counters["received_relay"] += 1
            sub.deliver(value, address, message, self._spawn, self._report)

        types = sorted(sub.types) if sub.types else None
        self._relay_ids[sub.id] = await self.relay.subscribe(sub.pattern, from_relay, types)

    def _dispatch(self, message: Any) -> None:
        kind = type(message)
        if kind is Set:
            value, signal = message.value, "param"
        elif kind is Publish:
            value = message.samples if message.samples is not None else message.value
            signal = message.signal or "event"
        else:  # a snapshot Param
            value, signal = message.value, "param"
        self._callbacks.dispatch(message.address, value, signal, message)

    def _from_relay(self, value: Any, address: str, message: Any) -> None:
        if type(message) is Publish and message.id == ENVELOPE_ID and message.timestamp is not None:
            if not self._first_time(message.timestamp):
                return
            if message.signal == "param":
                message = Set(address=address, value=message.value)
            else:
                message = Publish(address=address, signal=message.signal, value=message.value)
        self._counters["received_relay"] += 1
        self._dispatch(message)

    def _first_time(self, msgid: int) -> bool:
        token, seq = msgid >> 32, msgid & 0xFFFFFFFF
        record = self._dedupe.get(token)
        if record is None:
            record = self._dedupe[token] = _Dedupe()
        if record.first_time(seq):
            return True
        self._counters["duplicates"] += 1
        return False

    def _on_peer(self, peer: Peer) -> None:
        peer.add_message_hook(self._p2p_hook)
        peer.on("/**", self._from_p2p)
        peer.on_close(self._on_peer_closed)

        def on_state(state: str) -> None:
            if state == "closing":  # sends fail from now on: fall back before "closed"
                self._on_peer_closed(peer, "closing")

        peer.transport.add_state_listener(on_state)

    def _from_p2p(self, value: Any, address: str, message: Any) -> None:
        self._counters["received_p2p"] += 1
        self._dispatch(message)

    def _p2p_hook(self, peer: Peer, message: Any) -> bool:
        kind = type(message)
        if kind is Bundle and message.timestamp is not None and SEQ_FEATURE in peer.features:
            msgid = message.timestamp
            if self._first_time(msgid):
                for inner in message.messages:
                    peer.apply(inner)
            self._schedule_ack(peer, msgid >> 32)
            return True
        if kind is Ack and message.revision is not None and SEQ_FEATURE in peer.features:
            self._on_ack(peer, message.revision)
            return True
        return False

    def _schedule_ack(self, peer: Peer, token: int) -> None:
        self._ack_pending[peer] = token
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_later(_ACK_DELAY, self._send_acks)

    def _send_acks(self) -> None:
        self._ack_scheduled = False
        pending, self._ack_pending = self._ack_pending, {}
        for peer, token in pending.items():
            record = self._dedupe.get(token)
            if record is None or not peer.connected:
                continue
            try:
                peer.transport.sender.send_nowait(Ack(revision=(token << 32) | (record.next - 1)), reliable=True)
            except TransportError:
                pass  # the link is going down; the sender re-sends what it misses

    def _on_ack(self, peer: Peer, msgid: int) -> None:
        if msgid >> 32 != self._token:
            return
        link = self._links.get(peer.client_id or "")
        if link is None or link.peer is not peer:
            return
        upto = msgid & 0xFFFFFFFF
        unacked = link.unacked
        while unacked:
            seq = next(iter(unacked))
            if seq > upto:
                break
            del unacked[seq]

    # -- stats --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Messages per route (sent and received), fallbacks, re-sent and duplicate messages, and links."""
        c = self._counters
        return {
            "sent": {"p2p": c["sent_p2p"], "relay": c["sent_relay"]},
            "received": {"p2p": c["received_p2p"], "relay": c["received_relay"]},
            "fallbacks": c["fallbacks"],
            "resent": c["resent"],
            "duplicates_dropped": c["duplicates"],
            "p2p_attempts": c["p2p_attempts"],
            "p2p_failures": c["p2p_failures"],
            "unacknowledged": sum(len(link.unacked) for link in self._links.values()),
            "p2p_connected": sorted(p.client_id or p.session_id for p in self.p2p.connections),
        }

    def _spawn(self, awaitable: Awaitable) -> asyncio.Task:
        return self._background.spawn(awaitable)

    def _report(self, exc: BaseException) -> None:
        self.relay._report(exc)  # errors reach the relay client's on_error callbacks

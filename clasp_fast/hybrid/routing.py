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

A P2P link counts as dead once it is *suspect*: nothing arrived on it (keepalives included) for
``suspect_after`` seconds, or messages sent over it waited that long without an acknowledgement
making progress. From then on sends report and take the relay; the connection is closed and tried
again ``retry_interval`` seconds later. ``suspect_after`` defaults to twice the keepalive interval,
at least one second (2 s with the default ``WebRtcConfig``).

Exactly once across failover (between hybrid clients, feature ``"seq2"``; docs/hybrid.md has the
full rules): on each P2P connection the sender first declares a random 128-bit *epoch handle* and a
128-bit key, then numbers its reliable messages (one-message BUNDLEs whose timestamp is the number).
The receiver acknowledges them cumulatively (an ACK whose ``revision`` is the highest number received
without a gap). When the link is lost or suspect, what was not acknowledged is re-sent through the
relay as a PUBLISH whose ``id`` is :data:`ENVELOPE_ID`, ``timestamp`` the number and value the map
``{"v": value, "h": handle, "t": tag}``, where the 128-bit tag (HMAC-SHA256 with the key over handle,
number and address) proves it comes from the session that declared the handle over the P2P link. The
receiver drops numbers it has delivered and envelopes whose tag does not verify. Messages that never
went over P2P travel through the relay unnumbered (a PUBLISH with ``id`` :data:`ENVELOPE_ID` and no
timestamp). Toward other peers frames stay plain (one CLASP frame per message, no envelope).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Literal

from ..wire.address import validate_pattern
from ..relay_client import ClaspClient
from ..errors import ClaspError, ProtocolError, TransportError
from ..wire.messages import MISSING, QOS_FIRE, Ack, Bundle, Publish, Set, default_qos
from ..p2p.endpoint import AcceptHook, ClaspP2P, Peer
from ..transport.webrtc import WebRtcConfig
from ..runtime.dispatch import CallbackRegistry, Subscription
from ..runtime.tasks import TaskSet

__all__ = ["HybridClient", "P2POptions", "Route", "RoutingMode", "ENVELOPE_ID", "EPOCH_ADDRESS", "PEER_PREFIX"]

log = logging.getLogger("clasp_fast.hybrid")

Route = Literal["p2p", "relay"]
RoutingMode = Literal["prefer_p2p", "p2p_only", "relay_only"]

PEER_PREFIX = "/peer/"
SEQ_FEATURE = "seq2"
# Marks a hybrid envelope: a relayed PUBLISH carrying a message, or an epoch declaration (ASCII "CLSQ").
ENVELOPE_ID = 0x434C5351
# Address of the epoch declaration a sender makes first on each P2P connection (never relayed).
EPOCH_ADDRESS = "/clasp/hybrid/epoch"
_HANDLE_SIZE = 16  # bytes of an epoch handle, of its key and of a relay envelope's tag
_ACK_DELAY = 0.02
_MAX_AHEAD = 4096  # numbers received ahead of a gap, per epoch; beyond it the gap is given up
_MAX_EPOCHS = 64  # epochs of other senders remembered (LRU); each holds at most _MAX_AHEAD numbers
_MAX_UNVERIFIED = 4096  # relay envelopes of unknown epochs remembered (replays are dropped)
_RESEND_PACE = 128
_DROP = object()  # a relay envelope not to deliver


@dataclass
class P2POptions:
    """P2P settings of a hybrid client (``ClaspBuilder.with_p2p``).

    ``suspect_after``: seconds of silence on a P2P link, or of unacknowledged messages without
    progress, after which the link counts as dead and traffic moves to the relay. None: twice the
    keepalive interval of ``rtc_config``, at least 1 s. It must be longer than the keepalive interval.
    """

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
    suspect_after: float | None = None

    @property
    def mode(self) -> RoutingMode:
        if not self.prefer_p2p:
            return "relay_only"
        return "prefer_p2p" if self.fallback_to_router else "p2p_only"


def _tag(key: bytes, handle: bytes, seq: int, address: str) -> bytes:
    """The 128-bit proof that a relayed message ``seq`` of epoch ``handle`` comes from the key's holder."""
    data = handle + seq.to_bytes(8, "big") + address.encode()
    return hmac.new(key, data, hashlib.sha256).digest()[:_HANDLE_SIZE]


class _OutEpoch:
    """Numbering of our reliable messages on one P2P connection."""

    __slots__ = ("handle", "key", "seq")

    def __init__(self) -> None:
        self.handle = secrets.token_bytes(_HANDLE_SIZE)
        self.key = secrets.token_bytes(_HANDLE_SIZE)
        self.seq = 0

    def declaration(self) -> Publish:
        return Publish(address=EPOCH_ADDRESS, signal="event", value=self.handle + self.key, id=ENVELOPE_ID)


class _Link:
    """Send-side state toward one peer (by client id)."""

    __slots__ = ("client_id", "unacked", "progress_at", "peer", "epoch", "attempt", "retry_at", "lost",
                 "fallback")

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.unacked: OrderedDict[int, Any] = OrderedDict()  # seq -> message sent over P2P, not yet acknowledged
        self.progress_at = 0.0  # when an acknowledgement last made progress (or the oldest unacked was sent)
        self.peer: Peer | None = None  # the connection whose unacked messages these are
        self.epoch: _OutEpoch | None = None  # the numbering on that connection (declared on first use)
        self.attempt: asyncio.Task | None = None
        self.retry_at = 0.0
        self.lost: Peer | None = None  # the last connection given up (closed, failed or suspect)
        self.fallback: asyncio.Task | None = None  # re-sending through the relay


class _Dedupe:
    """Receive-side record of the sequence numbers delivered in one epoch: a watermark and the
    numbers above it, at most ``_MAX_AHEAD``."""

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


class _InEpoch:
    """Another sender's numbering on one P2P connection, as it declared it to us."""

    __slots__ = ("handle", "key", "session_id", "dedupe")

    def __init__(self, handle: bytes, key: bytes, session_id: str) -> None:
        self.handle = handle
        self.key = key
        self.session_id = session_id
        self.dedupe = _Dedupe()

    def verify(self, seq: int, address: str, tag: bytes) -> bool:
        return hmac.compare_digest(_tag(self.key, self.handle, seq, address), tag)


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
        suspect_after = self.options.suspect_after
        if suspect_after is None:
            suspect_after = max(1.0, 2 * rtc.keepalive_interval)
        elif not suspect_after > rtc.keepalive_interval:
            raise ValueError(f"suspect_after ({suspect_after:g} s) must be longer than the keepalive interval "
                             f"of rtc_config ({rtc.keepalive_interval:g} s)")
        self.suspect_after: float = suspect_after
        self._own_prefix = f"{PEER_PREFIX}{self.client_id}/"
        self._links: dict[str, _Link] = {}
        self._inbound: dict[Peer, _InEpoch] = {}  # the epoch each open connection declared to us
        self._epochs: OrderedDict[bytes, _InEpoch] = OrderedDict()  # by handle, least recently used first
        self._unverified: OrderedDict[tuple[bytes, int, bytes], str] = OrderedDict()  # (handle, seq, tag) -> address
        self._ack_pending: dict[Peer, _InEpoch] = {}
        self._ack_scheduled = False
        self._callbacks = CallbackRegistry(self._spawn, self._report, 256)
        self._relay_ids: dict[int, int] = {}  # our subscription id -> the relay client's
        self._background = TaskSet(self._report)
        self._counters = dict.fromkeys(
            ("sent_p2p", "sent_relay", "received_p2p", "received_relay", "fallbacks", "suspected", "resent",
             "duplicates", "rejected", "p2p_attempts", "p2p_failures"), 0)
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
        self._spawn(self._watch_links())
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
        if target is None or self.mode == "relay_only" or target == self.client_id:
            return "relay"
        return "p2p" if self._connection(self._link(target)) is not None else "relay"

    def on_route(self, callback: Callable[[str, Route], Any]) -> Callable:
        """Call ``callback(address, route)`` after every send."""
        self._route_callbacks.append(callback)
        return callback

    def _link(self, target: str) -> _Link:
        link = self._links.get(target)
        if link is None:
            link = self._links[target] = _Link(target)
        return link

    def _connection(self, link: _Link) -> Peer | None:
        """The P2P connection to send to ``link``'s peer on, or None (none, given up, or suspect now)."""
        peer = self.p2p.connection(link.client_id)
        if peer is None or peer is link.lost:
            return None
        reason = self._suspect_reason(link, peer, time.monotonic())
        if reason is not None:
            self._give_up(link, peer, reason)
            return None
        return peer

    async def _send(self, message: Any, relay_send: Callable[[], Awaitable[Any]]) -> Route:
        address = message.address
        target = self._target(address)
        if target is None or self.mode == "relay_only" or target == self.client_id:
            await relay_send()
            return self._sent(address, "relay")
        link = self._link(target)
        peer = self._connection(link)
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
            await self.relay.publish(self._envelope(message))  # forwarded, not stored
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
        if link.peer is not peer:
            if link.peer is not None and link.unacked:  # a connection replaced before its loss was seen
                self._start_fallback(link, link.peer, "replaced by a new connection")
            link.peer, link.epoch = peer, None
        declaration = None
        seq = None
        if reliable and SEQ_FEATURE in peer.features:
            epoch = link.epoch
            if epoch is None:
                epoch = link.epoch = _OutEpoch()
                declaration = epoch.declaration()
            epoch.seq += 1
            seq = epoch.seq
            if not link.unacked:
                link.progress_at = time.monotonic()
            link.unacked[seq] = message
            wire = Bundle(messages=[message], timestamp=seq)
        else:
            wire = message
        try:
            if declaration is not None:
                await peer.send(declaration, reliable=True)
            await peer.send(wire, reliable=True if seq is not None else None)
            return "p2p"
        except TransportError as exc:
            log.info("P2P send to %s failed: %s", link.client_id, exc)
            fallback = self._start_fallback(link, peer, str(exc))
            if fallback is not None:
                await asyncio.shield(fallback)
        # A numbered message was unacknowledged when the link was lost, so that fallback re-sent it.
        return "failed" if seq is None else "resent"

    def _maybe_connect(self, link: _Link) -> None:
        if link.attempt is not None or time.monotonic() < link.retry_at:
            return
        if self.p2p.find_peer(link.client_id) is None:
            return  # not discovered (yet): nothing to connect to
        link.attempt = self._spawn(self._attempt(link))

    async def _attempt(self, link: _Link) -> Peer | None:
        self._counters["p2p_attempts"] += 1
        try:
            peer = await asyncio.wait_for(self.p2p.connect_to_peer(link.client_id), self.connect_timeout)
            if peer is link.lost:
                raise TransportError("the connection was given up and is closing", peer=link.client_id,
                                     step="connect")
            return peer
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

    # -- failure detection and fallback -------------------------------------------------

    def _suspect_reason(self, link: _Link, peer: Peer, now: float) -> str | None:
        """Why the connection counts as dead although it is open, or None."""
        if "keepalive" in peer.transport.remote_features:  # the peer sends something every keepalive interval
            silent = now - peer.transport.last_received
            if silent > self.suspect_after:
                return f"nothing received for {silent:.1f} s"
        if link.peer is peer and link.unacked and now - link.progress_at > self.suspect_after:
            return f"{len(link.unacked)} messages unacknowledged for {now - link.progress_at:.1f} s"
        return None

    async def _watch_links(self) -> None:
        """Notice suspect links between sends, so their unacknowledged messages move on in time."""
        period = self.suspect_after / 4
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for link in list(self._links.values()):
                peer = link.peer
                if peer is not None and peer is not link.lost and peer.connected:
                    reason = self._suspect_reason(link, peer, now)
                    if reason is not None:
                        self._give_up(link, peer, reason)

    def _give_up(self, link: _Link, peer: Peer, reason: str) -> None:
        """Treat an open but suspect connection as lost: fall back now and close it."""
        self._counters["suspected"] += 1
        log.info("P2P link to %s is suspect (%s): using the relay", link.client_id, reason)
        if self._start_fallback(link, peer, f"suspect: {reason}") is None:
            link.lost = peer
            link.retry_at = time.monotonic() + self.retry_interval
        self._spawn(peer.close(f"suspect: {reason}"))

    def _start_fallback(self, link: _Link, peer: Peer, reason: str | None) -> asyncio.Task | None:
        """Handle the loss of ``peer`` once: re-send what it did not acknowledge through the relay.
        None when ``peer`` carries none of this link's messages (then there is nothing to do)."""
        if link.lost is peer and link.fallback is not None:
            return link.fallback
        if link.peer is not peer:
            return None
        link.lost = peer
        pending = list(link.unacked.items())
        epoch = link.epoch
        link.unacked.clear()
        link.peer = link.epoch = None
        link.retry_at = time.monotonic() + self.retry_interval
        self._counters["fallbacks"] += 1
        link.fallback = self._spawn(self._resend(link, epoch, pending, reason))
        return link.fallback

    async def _resend(self, link: _Link, epoch: _OutEpoch | None, pending: list, reason: str | None) -> None:
        if self.mode == "p2p_only" or epoch is None:
            return
        for count, (seq, message) in enumerate(pending, 1):
            await self.relay.publish(self._envelope(message, epoch, seq))
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
        if peer.state in ("closed", "failed"):  # nothing more arrives on it
            self._inbound.pop(peer, None)
            self._ack_pending.pop(peer, None)

    def _envelope(self, message: Any, epoch: _OutEpoch | None = None, seq: int | None = None) -> Publish:
        """The relay form of a reliable message: numbered (with its epoch's proof) when it went over P2P."""
        signal = "param" if type(message) is Set else message.signal
        value = message.value
        timestamp = None
        if epoch is not None and seq is not None:
            value = {"h": epoch.handle, "t": _tag(epoch.key, epoch.handle, seq, message.address)}
            if message.value is not MISSING:
                value["v"] = message.value
            timestamp = seq
        return Publish(address=message.address, signal=signal, value=value, timestamp=timestamp, id=ENVELOPE_ID)

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
        peer = None
        if target is not None and self.mode != "relay_only" and target != self.client_id:
            peer = self._connection(self._link(target))
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
        if type(message) is Publish and message.id == ENVELOPE_ID:
            if message.timestamp is not None:
                value = self._open_envelope(address, message.timestamp, message.value)
                if value is _DROP:
                    return
            message = Set(address=address, value=value) if message.signal == "param" else \
                Publish(address=address, signal=message.signal, value=value)
        self._counters["received_relay"] += 1
        self._dispatch(message)

    def _open_envelope(self, address: str, seq: int, fields: Any) -> Any:
        """The value of a numbered relay envelope to deliver now, or ``_DROP`` (duplicate or bad)."""
        handle = fields.get("h") if isinstance(fields, dict) else None
        tag = fields.get("t") if isinstance(fields, dict) else None
        if not (isinstance(handle, bytes) and len(handle) == _HANDLE_SIZE
                and isinstance(tag, bytes) and len(tag) == _HANDLE_SIZE):
            self._reject(f"relay envelope for {address}: value must be a map with 16-byte 'h' and 't', got "
                         f"{type(fields).__name__}", address)
            return _DROP
        epoch = self._epochs.get(handle)
        if epoch is None:
            # An epoch whose declaration has not arrived (or was forgotten): deliver, drop replays,
            # and let a later declaration recognise it.
            key = (handle, seq, tag)
            if key in self._unverified:
                self._counters["duplicates"] += 1
                return _DROP
            self._unverified[key] = address
            if len(self._unverified) > _MAX_UNVERIFIED:
                self._unverified.popitem(last=False)
        else:
            if not epoch.verify(seq, address, tag):
                self._reject(f"relay envelope for {address}: message {seq} claims the P2P link of session "
                             f"{epoch.session_id} but its tag does not verify", address)
                return _DROP
            self._epochs.move_to_end(handle)
            if not epoch.dedupe.first_time(seq):
                self._counters["duplicates"] += 1
                return _DROP
        return fields.get("v", MISSING)

    def _reject(self, text: str, address: str | None = None) -> None:
        self._counters["rejected"] += 1
        self._report(ProtocolError(f"{text}; dropped", address=address))

    def _declare(self, peer: Peer, value: Any) -> None:
        """A peer's epoch declaration: what its numbered messages on this connection are checked against."""
        if not isinstance(value, bytes) or len(value) != 2 * _HANDLE_SIZE:
            self._reject(f"epoch declaration from peer {peer.session_id}: value must be "
                         f"{2 * _HANDLE_SIZE} bytes, got {type(value).__name__}")
            return
        handle, key = value[:_HANDLE_SIZE], value[_HANDLE_SIZE:]
        if handle in self._epochs:
            self._reject(f"epoch declaration from peer {peer.session_id}: handle already in use")
            return
        epoch = self._inbound[peer] = self._epochs[handle] = _InEpoch(handle, key, peer.session_id)
        while len(self._epochs) > _MAX_EPOCHS:
            self._epochs.popitem(last=False)
        for seq_key in [k for k in self._unverified if k[0] == handle]:
            address = self._unverified.pop(seq_key)
            if epoch.verify(seq_key[1], address, seq_key[2]):
                epoch.dedupe.first_time(seq_key[1])  # delivered already through the relay

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
        if SEQ_FEATURE not in peer.features:
            return False
        kind = type(message)
        if kind is Bundle and message.timestamp is not None:
            epoch = self._inbound.get(peer)
            if epoch is None:
                self._report(ProtocolError(f"peer {peer.session_id} sent numbered message {message.timestamp} "
                                           f"before declaring its epoch; delivered without a duplicate check"))
                first_time = True
            else:
                first_time = epoch.dedupe.first_time(message.timestamp)
                self._schedule_ack(peer, epoch)
            if first_time:
                for inner in message.messages:
                    peer.apply(inner)
            else:
                self._counters["duplicates"] += 1
            return True
        if kind is Ack and message.revision is not None:
            self._on_ack(peer, message.revision)
            return True
        if kind is Publish and message.id == ENVELOPE_ID and message.address == EPOCH_ADDRESS:
            self._declare(peer, message.value)
            return True
        return False

    def _schedule_ack(self, peer: Peer, epoch: _InEpoch) -> None:
        self._ack_pending[peer] = epoch
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_later(_ACK_DELAY, self._send_acks)

    def _send_acks(self) -> None:
        self._ack_scheduled = False
        pending, self._ack_pending = self._ack_pending, {}
        for peer, epoch in pending.items():
            if not peer.connected:
                continue
            try:
                peer.transport.sender.send_nowait(Ack(revision=epoch.dedupe.next - 1), reliable=True)
            except TransportError:
                pass  # the link is going down; the sender re-sends what it misses

    def _on_ack(self, peer: Peer, upto: int) -> None:
        link = self._links.get(peer.client_id or "")
        if link is None or link.peer is not peer:
            return
        unacked = link.unacked
        progress = False
        while unacked:
            seq = next(iter(unacked))
            if seq > upto:
                break
            del unacked[seq]
            progress = True
        if progress:
            link.progress_at = time.monotonic()

    # -- stats --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Messages per route (sent and received), fallbacks (``suspected``: links given up by the
        ``suspect_after`` bound), re-sent, duplicate and rejected messages, and links."""
        c = self._counters
        return {
            "sent": {"p2p": c["sent_p2p"], "relay": c["sent_relay"]},
            "received": {"p2p": c["received_p2p"], "relay": c["received_relay"]},
            "fallbacks": c["fallbacks"],
            "resent": c["resent"],
            "duplicates_dropped": c["duplicates"],
            "suspected": c["suspected"],
            "rejected": c["rejected"],
            "p2p_attempts": c["p2p_attempts"],
            "p2p_failures": c["p2p_failures"],
            "unacknowledged": sum(len(link.unacked) for link in self._links.values()),
            # Receive-side duplicate tracking: epochs of other senders, unverified relay envelopes.
            "tracked": {"epochs": len(self._epochs), "unverified": len(self._unverified)},
            "p2p_connected": sorted(p.client_id or p.session_id for p in self.p2p.connections),
        }

    def _spawn(self, awaitable: Awaitable) -> asyncio.Task:
        return self._background.spawn(awaitable)

    def _report(self, exc: BaseException) -> None:
        self.relay._report(exc)  # errors reach the relay client's on_error callbacks

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

Exactly once across failover (between hybrid clients, feature ``"seq2"``): reliable messages sent
over P2P are numbered and re-sent through the relay when their link is lost; the receiver delivers
each number once (:mod:`.exactly_once`, docs/hybrid.md). Toward other peers frames stay plain (one
CLASP frame per message, no envelope).

The hybrid client owns the relay client's error sink and dispatcher (its ``on_error`` callbacks,
its subscriptions' callbacks) and hands both to its P2P layer: errors of connections reach
``on_error``, and a message matches the callbacks once, from whichever route it came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Iterator, Literal

from ..errors import ClaspError, ProtocolError, TransportError
from ..metrics import Sample
from ..p2p.endpoint import AcceptHook, ClaspP2P
from ..p2p.peer import Peer
from ..relay_client import ClaspClient
from ..runtime.dispatch import CallbackSubscription
from ..runtime.tasks import TaskSet
from ..transport.webrtc import WebRtcConfig
from ..wire.address import validate_pattern
from ..wire.messages import MISSING, QOS_FIRE, Ack, Bundle, Publish, Set, default_qos, stream_message
from ..wire.protocol import P2P_PREFIX, PEER_PREFIX, peer_target
from .exactly_once import (
    DUPLICATE,
    ENVELOPE_ID,
    EPOCH_ADDRESS,
    SEQ_FEATURE,
    InEpoch,
    OutEpoch,
    ReceiveLedger,
    SendLedger,
    envelope,
    opened,
)

__all__ = ["HybridClient", "P2POptions", "Route", "RoutingMode", "ENVELOPE_ID", "EPOCH_ADDRESS", "PEER_PREFIX"]

log = logging.getLogger("clasp_fast.hybrid")

Route = Literal["p2p", "relay"]
RoutingMode = Literal["prefer_p2p", "p2p_only", "relay_only"]

_ACK_DELAY = 0.02
_RESEND_PACE = 128


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



class _Link:
    """Send-side state toward one peer (by client id)."""

    __slots__ = ("client_id", "peer", "sent", "attempt", "retry_at", "lost", "fallback", "failovers")

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.peer: Peer | None = None  # the connection whose unacknowledged messages ``sent`` holds
        self.sent = SendLedger()
        self.attempt: asyncio.Task[Peer | None] | None = None
        self.retry_at = 0.0
        self.lost: Peer | None = None  # the last connection given up (closed, failed or suspect)
        self.fallback: asyncio.Task[None] | None = None  # re-sending through the relay
        self.failovers = 0  # P2P connections lost and taken over by the relay


class HybridClient:
    """A relay client and a P2P layer behind one API; sends to ``/peer/{id}/...`` pick their route."""

    def __init__(self, relay: ClaspClient, options: P2POptions | None = None) -> None:
        self.relay = relay
        self.options = options or P2POptions()
        self.mode: RoutingMode = self.options.mode
        # One error sink and one dispatcher for everything this client owns: the relay client's.
        self.errors = relay.errors
        self.dispatcher = relay.dispatcher
        self._tasks = TaskSet(self.errors.report)
        rtc = self.options.rtc_config or WebRtcConfig()
        self.p2p = ClaspP2P(relay, client_id=self.options.client_id, rtc_config=rtc,
                            features=(SEQ_FEATURE, *self.options.features),
                            presence_interval=self.options.presence_interval, accept=self.options.accept,
                            errors=self.errors, dispatcher=self.dispatcher)
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
        self._received = ReceiveLedger()
        self._ack_pending: dict[Peer, InEpoch] = {}
        self._ack_scheduled = False
        self._counters = dict.fromkeys(
            ("sent_p2p", "sent_relay", "received_p2p", "received_relay", "fallbacks", "suspected", "resent",
             "duplicates", "rejected", "p2p_attempts", "p2p_failures"), 0)
        self._route_callbacks: list[Callable[[str, Route], Any]] = []
        self._closing = False
        #: The P2P figures plus failovers and relay reconnects (docs/streams.md).
        self.metrics = self.p2p.metrics
        self.metrics.add_source(self._metrics_samples)

    def _metrics_samples(self) -> Iterator[Sample]:
        for link in self._links.values():
            yield "clasp_failovers_total", (link.client_id,), link.failovers
        yield "clasp_reconnects_total", ("relay",), self.relay.reconnects

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> "HybridClient":
        """Connect the relay client (if needed), start discovery and subscribe to ``/peer/{client_id}/**``."""
        self.relay.set_message_hook(self._from_relay)
        if not self.relay.connected:
            await self.relay.open()
        self.p2p.on_connection(self._on_peer)
        await self.p2p.connect()
        # Fallback traffic for this client comes through this relay subscription; it reaches the
        # callbacks through the dispatcher like everything else.
        await self.relay.subscribe(self._own_prefix + "**", _fallback_route)
        self._tasks.spawn(self._watch_links())
        return self

    async def close(self) -> None:
        """Close P2P connections, withdraw presence and close the relay connection."""
        self._closing = True
        for link in self._links.values():
            if link.attempt is not None:
                link.attempt.cancel()
        await self._tasks.cancel_and_wait()
        await self.p2p.close()
        await self.relay.close()

    async def __aenter__(self) -> "HybridClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        # Everything not routed here (bundle, query, ping, sync_clock, on_error, ...) is the relay client's.
        if name.startswith("_") or name in ("relay", "p2p"):
            raise AttributeError(name)
        return getattr(self.relay, name)

    @property
    def session_id(self) -> str | None:
        return self.relay.session_id

    # -- routing ------------------------------------------------------------------------

    def _p2p_target(self, address: str) -> str | None:
        """The client id a send to ``address`` may go to over P2P, or None (relay only)."""
        target = peer_target(address)
        if target is None or self.mode == "relay_only" or target == self.client_id:
            return None
        return target

    def route_for(self, address: str) -> Route:
        """The route a send to ``address`` would take now."""
        target = self._p2p_target(address)
        if target is None:
            return "relay"
        return "p2p" if self._connection(self._link(target)) is not None else "relay"

    def on_route(self, callback: Callable[[str, Route], Any]) -> Callable[[str, Route], Any]:
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
        target = self._p2p_target(address)
        if target is None:
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
            await self.relay.publish(envelope(message))  # forwarded, not stored
        else:
            await relay_send()
        return self._sent(address, "relay")

    def _sent(self, address: str, route: Route) -> Route:
        self._counters["sent_p2p" if route == "p2p" else "sent_relay"] += 1
        self._tasks.notify(self._route_callbacks, address, route)
        return route

    def _seq_capable(self, target: str) -> bool:
        info = self.p2p.find_peer(target)
        return info is not None and SEQ_FEATURE in info.features

    async def _send_p2p(self, link: _Link, peer: Peer, message: Any, reliable: bool) -> str:
        """Send over P2P: "p2p"; "resent" when the link failed and the message went through the relay;
        "failed" when it failed and the caller must send it."""
        if link.peer is not peer:
            if link.peer is not None and link.sent.unacked:  # a connection replaced before its loss was seen
                self._start_fallback(link, link.peer, "replaced by a new connection")
            link.peer = peer
            link.sent.take()
        declaration = None
        seq = None
        if reliable and SEQ_FEATURE in peer.features:
            seq, declaration = link.sent.number(message)
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
        link.attempt = self._tasks.spawn(self._attempt(link))

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
        attempt = link.attempt or self._tasks.spawn(self._attempt(link))
        link.attempt = attempt
        peer: Peer | None = await asyncio.shield(attempt)
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
        if link.peer is peer:
            stalled = link.sent.stalled_for(now)
            if stalled > self.suspect_after:
                return f"{len(link.sent.unacked)} messages unacknowledged for {stalled:.1f} s"
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
        self._tasks.spawn(peer.close(f"suspect: {reason}"))

    def _start_fallback(self, link: _Link, peer: Peer, reason: str | None) -> asyncio.Task[None] | None:
        """Handle the loss of ``peer`` once: re-send what it did not acknowledge through the relay.
        None when ``peer`` carries none of this link's messages (then there is nothing to do)."""
        if link.lost is peer and link.fallback is not None:
            return link.fallback
        if link.peer is not peer:
            return None
        link.lost = peer
        epoch, pending = link.sent.take()
        link.peer = None
        link.retry_at = time.monotonic() + self.retry_interval
        self._counters["fallbacks"] += 1
        link.failovers += 1
        link.fallback = self._tasks.spawn(self._resend(link, epoch, pending, reason))
        return link.fallback

    async def _resend(self, link: _Link, epoch: OutEpoch | None, pending: list[tuple[int, Any]],
                      reason: str | None) -> None:
        if self.mode == "p2p_only" or epoch is None:
            return
        for count, (seq, message) in enumerate(pending, 1):
            await self.relay.publish(envelope(message, epoch, seq))
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
            self._received.forget(peer)
            self._ack_pending.pop(peer, None)

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
        message = stream_message(address, samples, rate)
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
        target = self._p2p_target(address)
        peer = None if target is None else self._connection(self._link(target))
        if peer is not None:
            return await peer.get(address, timeout)
        return await self.relay.get(address, timeout)

    # -- receiving ----------------------------------------------------------------------

    def on(self, pattern: str, callback: Callable[..., Any] | None = None, *,
           types: Iterable[str] | None = None) -> Any:
        """Call ``callback(value, address)`` (or ``(value, address, message)``) for messages matching
        ``pattern`` from either route, each reliable message once. Decorator without ``callback``."""
        validate_pattern(pattern)

        def register(fn: Callable[..., Any]) -> int:
            sub = self.dispatcher.add(pattern, fn, types)
            if self._needs_relay_subscription(sub):
                self._tasks.spawn(self.relay.send_subscribe(sub))
            return sub.id

        if callback is not None:
            return register(callback)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            register(fn)
            return fn

        return decorator

    async def subscribe(self, pattern: str, callback: Callable[..., Any], types: Iterable[str] | None = None) -> int:
        """Like :meth:`on` with a callback, and wait until the relay has the subscription."""
        sub = self.dispatcher.add(pattern, callback, types)
        if self._needs_relay_subscription(sub):
            await self.relay.send_subscribe(sub)
        return sub.id

    async def unsubscribe(self, subscription_id: int) -> None:
        await self.relay.unsubscribe(subscription_id)

    def _needs_relay_subscription(self, sub: CallbackSubscription) -> bool:
        # This client's own /peer/ traffic comes through its /peer/{client_id}/** subscription.
        return not sub.pattern.startswith(self._own_prefix)

    def _from_relay(self, message: Any) -> Any:
        """The relay client's message hook: what the relay sends reaches the callbacks as itself, an
        envelope as the message it carries (once), P2P control traffic untouched and uncounted."""
        address = message.address
        if address.startswith(P2P_PREFIX):
            return message
        if type(message) is Publish and message.id == ENVELOPE_ID and address.startswith(self._own_prefix):
            value = message.value
            if message.timestamp is not None:
                try:
                    value = self._received.open(address, message.timestamp, value)
                except ProtocolError as exc:
                    self._reject(exc)
                    return None
                if value is DUPLICATE:
                    self._counters["duplicates"] += 1
                    return None
            message = opened(message, value)
        self._counters["received_relay"] += 1
        return message

    def _reject(self, problem: ProtocolError) -> None:
        self._counters["rejected"] += 1
        self.errors.report(ProtocolError(f"{problem.reason}; dropped", address=problem.address))

    def _on_peer(self, peer: Peer) -> None:
        peer.add_message_hook(self._from_p2p)
        peer.on_close(self._on_peer_closed)

        def on_state(state: str) -> None:
            if state == "closing":  # sends fail from now on: fall back before "closed"
                self._on_peer_closed(peer, "closing")

        peer.transport.add_state_listener(on_state)

    def _from_p2p(self, peer: Peer, message: Any) -> bool:
        """Each peer's message hook: numbered messages once, acknowledgements, epoch declarations;
        the rest goes on to the peer (which delivers to the dispatcher). True: consumed here."""
        kind = type(message)
        if kind is Bundle and message.timestamp is not None and SEQ_FEATURE in peer.features:
            epoch = self._received.epoch_of(peer)
            if epoch is None:
                self.errors.report(ProtocolError(
                    f"peer {peer.session_id} sent numbered message {message.timestamp} "
                    f"before declaring its epoch; delivered without a duplicate check"))
                first_time = True
            else:
                first_time = epoch.dedupe.first_time(message.timestamp)
                self._schedule_ack(peer, epoch)
            if first_time:
                for inner in message.messages:
                    if self._admit_p2p(peer, inner):
                        peer.apply(inner)
            else:
                self._counters["duplicates"] += 1
            return True
        if SEQ_FEATURE in peer.features:
            if kind is Ack and message.revision is not None:
                self._on_ack(peer, message.revision)
                return True
            if kind is Publish and message.id == ENVELOPE_ID and message.address == EPOCH_ADDRESS:
                try:
                    self._received.declare(peer, peer.session_id, message.value)
                except ProtocolError as exc:
                    self._reject(exc)
                return True
        if kind is Bundle:
            admitted = [inner for inner in message.messages if self._admit_p2p(peer, inner)]
            if len(admitted) == len(message.messages):
                return False
            for inner in admitted:
                peer.apply(inner)
            return True
        return not self._admit_p2p(peer, message)

    def _admit_p2p(self, peer: Peer, message: Any) -> bool:
        """Whether a message from a peer goes on to the callbacks (counted). P2P signaling and
        discovery travel through the relay only: such addresses over P2P are refused."""
        kind = type(message)
        if kind is not Set and kind is not Publish:
            return True  # GET, SNAPSHOT, PING...: the peer answers them
        if message.address.startswith(P2P_PREFIX):
            self._reject(ProtocolError(f"peer {peer.session_id} sent {message.address} over P2P, where only "
                                       "the relay carries P2P signaling and discovery", address=message.address))
            return False
        self._counters["received_p2p"] += 1
        return True

    def _schedule_ack(self, peer: Peer, epoch: InEpoch) -> None:
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
        if link is not None and link.peer is peer:
            link.sent.acknowledge(upto)

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
            "unacknowledged": sum(len(link.sent.unacked) for link in self._links.values()),
            # Receive-side duplicate tracking: epochs of other senders, unverified relay envelopes.
            "tracked": {"epochs": self._received.epochs, "unverified": self._received.unverified},
            "p2p_connected": sorted(p.client_id or p.session_id for p in self.p2p.connections),
            "metrics": self.metrics.snapshot(),
        }


def _fallback_route(value: Any, address: str) -> None:
    """The callback of the /peer/{client_id}/** relay subscription: the messages it brings reach the
    callbacks that match them through the dispatcher, so nothing is left to do here."""

"""The routing and state logic of the embedded relay, independent of any socket.

A :class:`Router` holds the sessions, their subscriptions (on the compiled
``SubscriptionIndex``), the param store and announced signals (:mod:`clasp_fast.store`),
the P2P client-id claims (:mod:`clasp_fast.claims`) and the gesture coalescer. It
receives decoded messages with :meth:`Router.receive` and answers through each
session's :class:`Outbox`, which the socket layer (``clasp_fast.relay``) implements
with per-sender lanes (:mod:`clasp_fast.fair_queue`).

Behaviour follows the reference router (docs/protocol.md §8) except where documented:

* the gesture flush timer excludes the sender like every other PUBLISH (§11.1);
* expired params are never served: reads check the expiry, and a sweep
  (:meth:`Router.expire`, run every second by the relay) removes them;
* re-using a subscription id replaces the old subscription (the reference keeps
  the old pattern alive until the connection ends, §8.2);
* the store is bounded in bytes and params; a SET beyond either bound, or too large
  to be served in a SNAPSHOT, is refused (ERROR 507 / 402) instead of evicting others;
* SNAPSHOTs are streamed: produced frame by frame as the connection drains;
* P2P signaling is checked (docs/security.md): a signal's ``from`` must be its sender
  (403); a presence param ``/clasp/p2p/presence/{id}`` is written only by session
  ``id`` (403); the client id in a presence param or announce must be claimable
  (409 taken, 301 not granted, 402 malformed); an announce's ``session_id`` must be its
  sender (403); signals, announces and presence are never accepted inside a BUNDLE
  (403), as a SET to a signal or announce address (403) or as a PUBLISH to a presence
  address (403). When a session closes, its claim ends and its presence param is
  withdrawn (a null SET echo) and removed;
* announced signals belong to their session and go when it closes; the registry is
  bounded (429 per session, 507 in all).

Authenticated mode (``RouterConfig.auth``, see :mod:`clasp_fast.auth`) checks the
HELLO token (ERROR 300 / 302 / 500, then disconnect) and the scopes of SUBSCRIBE,
GET (read) and SET, PUBLISH, ANNOUNCE (write), answering ERROR 301; QUERY lists only
readable signals; client ids need a ``claim:`` scope. A BUNDLE whose inner SET/PUBLISH
lacks a write scope is refused whole with ERROR 403 (§8.6). Unlike the reference, a
session also never *receives* a param or PUBLISH its read scopes do not cover (the
WELCOME and subscribe SNAPSHOTs and live fan-out are filtered); P2P signals, addressed
to one session, are exempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Protocol

from ..errors import AddressError, EncodeError, ProtocolError
from ..wire.address import SubscriptionIndex, validate_pattern
from ..wire.codec import encode
from ..wire.messages import (
    DEFAULT_FEATURES,
    Ack,
    Announce,
    Bundle,
    Error,
    Get,
    Hello,
    Ping,
    Pong,
    Publish,
    Query,
    Result,
    Set,
    Snapshot,
    Subscribe,
    Sync,
    Unsubscribe,
    Welcome,
)
from ..wire.protocol import (
    ANNOUNCE_ADDRESS,
    P2P_PREFIX,
    PRESENCE_PREFIX,
    SIGNAL_PREFIX,
    is_p2p_signaling,
    now_us,
    presence_address,
    presence_owner,
)
from ..wire.subscription import Subscription
from .auth import Scopes, TokenRejected, Validator
from .claims import ClientIdClaims, client_id_problem
from .store import ParamStore, SignalRegistry, StoreRefused

__all__ = ["Outbox", "Router", "RouterConfig", "Session"]

log = logging.getLogger("clasp_fast.router")

MAX_ERROR_TEXT = 1000  # characters of an ERROR message (addresses in it are shortened)


class Outbox(Protocol):
    """Where a session's outgoing frames go (implemented by the socket layer).

    ``sender`` names the session a fan-out frame comes from (None: this session itself);
    frames of one sender stay in order. ``address`` marks a frame carrying the state of a
    param (SET echo, GET reply): frames for one address stay in order across senders.
    """

    def reply(self, frame: bytes, address: str | None = None) -> None:
        """Queue a direct reply (WELCOME, ACK, ERROR, ...); never dropped silently."""

    def stream(self, frames: Iterator[bytes]) -> None:
        """Queue a reply of many frames (SNAPSHOT), produced one by one as the connection drains."""

    def broadcast(self, frame: bytes, sender: str | None = None, address: str | None = None) -> bool:
        """Queue a fan-out frame; return False when a frame was dropped because the queue is full."""

    @property
    def behind(self) -> bool:
        """True while frames pile up although the connection takes them as fast as they are
        written: routing outpaces this connection's writer (not a slow consumer)."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection (used when a session must go)."""


@dataclass
class RouterConfig:
    """Router options; defaults follow the reference router except ``rate_limit`` and the store bounds."""

    name: str = "clasp_fast relay"
    max_sessions: int = 100
    max_subscriptions: int = 1000
    rate_limit: int | None = None  # messages per second per session; None = off
    gesture_coalesce: float | None = 0.016  # seconds; None = forward every move
    default_ttl: int = 3600  # seconds after the last write, for SETs without a TTL
    max_params: int = 10_000  # new addresses beyond this are refused (507)
    max_store_bytes: int = 64 * 1024 * 1024  # params and announced signals; beyond: 507
    max_signals: int = 10_000  # announced signals in all (507)
    max_signals_per_session: int = 1000  # announced signals per session (429)
    max_gestures_per_session: int = 256  # gestures coalesced at once per session; more pass uncoalesced
    overflow_errors_after: int = 100  # drops within overflow_window before ERROR 503
    auth: Validator | None = None  # token -> Scopes; None = open mode (tokens ignored)
    overflow_window: float = 10.0


class SessionSubscription(Subscription):
    """One SUBSCRIBE of one session; the subscriber object stored in the index."""

    __slots__ = ("session", "key")

    def __init__(self, session: "Session", id: int, pattern: str, types: Iterable[str]) -> None:
        super().__init__(id, pattern, types)
        self.session = session
        self.key: int | None = None


class Session:
    """A connected client: its id, outbox, subscriptions and flow-control counters."""

    __slots__ = (
        "id", "name", "features", "outbox", "subscriptions", "p2p_capable", "scopes",
        "_rate_window", "_rate_count", "_drops", "_drop_window", "_last_overflow_error",
        "dropped", "received", "refused",
    )

    def __init__(self, outbox: Outbox, name: str, features: list[str], scopes: Scopes | None = None) -> None:
        self.id = str(uuid.uuid4())
        self.scopes = scopes  # None in open mode
        self.name = name
        self.features = list(features)
        self.outbox = outbox
        self.subscriptions: dict[int, SessionSubscription] = {}
        self.p2p_capable = False
        self._rate_window = 0.0
        self._rate_count = 0
        self._drops = 0
        self._drop_window = 0.0
        self._last_overflow_error = -1e18
        self.dropped = 0  # broadcasts to this session dropped (queue full)
        self.received = 0  # messages received after the handshake
        self.refused = 0  # messages refused by the rate limit

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, name={self.name!r})"

    def readable(self) -> Callable[[str], bool] | None:
        """The read-scope check for this session's data (None in open mode: everything)."""
        return self.scopes.can_read if self.scopes is not None else None


class Router:
    """Sessions, subscriptions, state and routing rules of a CLASP relay."""

    def __init__(self, config: RouterConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config = config or RouterConfig()
        self._clock = clock
        self.sessions: dict[str, Session] = {}
        self._index = SubscriptionIndex(4096)
        self.store = ParamStore(max_params=config.max_params, max_bytes=config.max_store_bytes,
                                default_ttl=config.default_ttl, clock=clock, on_remove=self._param_removed)
        self.signals = SignalRegistry(self.store, max_signals=config.max_signals,
                                      per_session=config.max_signals_per_session)
        self.claims = ClientIdClaims()
        self._gestures = _GestureCoalescer(self, config.gesture_coalesce, config.max_gestures_per_session)
        self._rate_error_frame = encode(Error(
            code=429, message=f"Rate limit exceeded: {config.rate_limit} messages/second"))
        self.delivered = 0  # fan-out frames handed to outboxes (the socket layer's measure of work)
        self.behind = False  # set when a delivery found its outbox behind (the socket layer resets it)

    # -- sessions ---------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """True when no further session may join (``max_sessions`` reached)."""
        return len(self.sessions) >= self.config.max_sessions

    def authenticate(self, hello: Hello) -> Scopes | None:
        """The scopes of the HELLO's token (None in open mode).

        Raises ``ProtocolError`` with code 300 (no token, invalid token), 302 (expired)
        or 500 (the validator failed); the caller answers with that ERROR and disconnects.
        """
        validator = self.config.auth
        if validator is None:
            return None
        token = hello.token
        if not token:
            raise ProtocolError("Authentication required", 300)
        try:
            scopes = validator(token)
        except TokenRejected as exc:
            raise ProtocolError(str(exc) or "Invalid token", exc.code) from None
        except Exception as exc:
            log.exception("token validator failed")
            raise ProtocolError("Internal error: token validation failed", 500) from exc
        if not isinstance(scopes, Scopes):
            log.error("token validator returned %r instead of Scopes", scopes)
            raise ProtocolError("Internal error: token validation failed", 500)
        return scopes

    def connect(self, outbox: Outbox, hello: Hello) -> Session:
        """Create a session for a HELLO; send WELCOME and the SNAPSHOT of all stored params.

        In authenticated mode the token is checked first (:meth:`authenticate`); on failure
        the ``ProtocolError`` propagates, nothing is sent and no session exists.
        """
        scopes = self.authenticate(hello)
        session = Session(outbox, hello.name, hello.features, scopes)
        self.sessions[session.id] = session
        outbox.reply(encode(Welcome(session=session.id, name=self.config.name,
                                    features=list(DEFAULT_FEATURES), time=now_us())))
        outbox.stream(self.store.snapshot_frames(self.store.addresses(), session.readable(), always=True))
        return session

    def disconnect(self, session: Session) -> None:
        """Forget a session: subscriptions, pending gestures, announced signals, its client-id
        claim and its presence param (withdrawn with a null SET echo)."""
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        for sub in session.subscriptions.values():
            self._index.remove(sub.key)
        session.subscriptions.clear()
        self._gestures.drop_session(session)
        self.signals.drop_session(session.id)
        self.claims.release(session.id)
        address = presence_address(session.id)
        state = self.store.remove(address)
        if state is not None and state.value is not None:
            withdrawal = encode(Set(address=address, value=None, revision=state.revision + 1))
            self.fan_out(address, "param", withdrawal, session, exclude_sender=True, state=True)

    def close(self) -> None:
        """Cancel timers; the socket layer closes the connections."""
        self._gestures.cancel_all()

    # -- dispatch ---------------------------------------------------------------------------

    def receive(self, session: Session, message: object) -> None:
        """Handle one decoded message from ``session`` (after its handshake)."""
        session.received += 1
        limit = self.config.rate_limit
        if limit is not None and not self._admit(session, limit):
            session.refused += 1
            # Sent like a broadcast: a flooder that does not read its ERRORs loses them
            # instead of growing its queue without bound.
            session.outbox.broadcast(self._rate_error_frame)
            return
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(self, session, message)
        # WELCOME, SNAPSHOT, PONG, ACK, ERROR, RESULT, REPLAY, FEDERATION_SYNC: ignored (§8.7)

    def _admit(self, session: Session, limit: int) -> bool:
        now = self._clock()
        if now - session._rate_window >= 1.0:
            session._rate_window = now
            session._rate_count = 0
        session._rate_count += 1
        return session._rate_count <= limit

    def _error(self, session: Session, code: int, text: str, address: str | None = None) -> None:
        if len(text) > MAX_ERROR_TEXT:
            text = text[:MAX_ERROR_TEXT - 3] + "..."
        try:
            frame = encode(Error(code=code, message=text, address=address))
        except EncodeError:  # an address of nearly a whole frame: the text alone must do
            frame = encode(Error(code=code, message=f"{text} (address of {len(address or '')} characters)"))
        session.outbox.reply(frame)

    def _encode_or_refuse(self, session: Session, message: Publish) -> bytes | None:
        """The PUBLISH re-encoded for its receivers, or None after ERROR 402 (it grew past a frame:
        a legacy v0 payload re-encoded as v1)."""
        try:
            return encode(message)
        except EncodeError as exc:
            self._error(session, 402, f"cannot forward: {exc}", message.address)
            return None

    # -- delivery ---------------------------------------------------------------------------

    def deliver(self, target: Session, frame: bytes, sender: Session | None, address: str | None = None) -> None:
        """Fan-out delivery with the slow-consumer policy of docs/protocol.md §8.8."""
        self.delivered += 1
        lane = None if sender is target or sender is None else sender.id
        outbox = target.outbox
        admitted = outbox.broadcast(frame, lane, address)
        if outbox.behind:
            self.behind = True
        if admitted:
            return
        target.dropped += 1
        now = self._clock()
        if now - target._drop_window > self.config.overflow_window:
            target._drop_window = now
            target._drops = 0
        target._drops += 1
        if (target._drops >= self.config.overflow_errors_after
                and now - target._last_overflow_error >= self.config.overflow_window):
            target._last_overflow_error = now
            self._error(target, 503, f"Buffer overflow: {target._drops} messages dropped "
                                     f"in {self.config.overflow_window:g} s (slow consumer)")

    def subscribers(self, address: str, signal: str | None) -> list[Session]:
        """Sessions with a subscription matching ``address`` that admits ``signal``, once each."""
        found: dict[str, Session] = {}
        for sub in self._index.match(address):
            if sub.admits(signal):
                found[sub.session.id] = sub.session
        return list(found.values())

    def fan_out(self, address: str, signal: str | None, frame: bytes, sender: Session,
                *, exclude_sender: bool, state: bool = False) -> None:
        """Deliver ``frame`` to every subscriber of ``address`` admitting ``signal`` and allowed to read it."""
        state_address = address if state else None
        for target in self.subscribers(address, signal):
            if exclude_sender and target is sender:
                continue
            if target.scopes is None or target.scopes.can_read(address):
                self.deliver(target, frame, sender, state_address)

    def _forbidden(self, session: Session, action: str, address: str) -> bool:
        """Answer ERROR 301 and return True when ``session`` lacks the scope (authenticated mode)."""
        scopes = session.scopes
        if scopes is None:
            return False
        allowed = scopes.can_read(address) if action == "read" else scopes.can_write(address)
        if allowed:
            return False
        self._error(session, 301, f"Forbidden: no {action} scope for {address}", address)
        return True

    # -- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------

    def _on_subscribe(self, session: Session, message: Subscribe) -> None:
        pattern = message.pattern
        try:
            validate_pattern(pattern)
        except AddressError as exc:
            self._error(session, 202, f"invalid address: {exc.reason}", pattern)
            return
        if self._forbidden(session, "read", pattern):
            return
        old = session.subscriptions.get(message.id)
        if old is None and len(session.subscriptions) >= self.config.max_subscriptions:
            self._error(session, 429, f"Subscription limit reached: {self.config.max_subscriptions} "
                                      "subscriptions per session", pattern)
            return
        if old is not None:
            self._index.remove(old.key)
        sub = SessionSubscription(session, message.id, pattern, message.types)
        sub.key = self._index.add(pattern, sub)
        session.subscriptions[message.id] = sub
        addresses = self.store.addresses(pattern)
        if addresses:
            session.outbox.stream(self.store.snapshot_frames(addresses, session.readable(), always=False))

    def _on_unsubscribe(self, session: Session, message: Unsubscribe) -> None:
        sub = session.subscriptions.pop(message.id, None)
        if sub is not None:
            self._index.remove(sub.key)

    # -- state ------------------------------------------------------------------------------

    def apply_set(self, session: Session, message: Set, *, quiet_conflicts: bool = False) -> tuple[int, bytes] | None:
        """Apply a SET to the store; return the new revision and the echo frame, or None after
        answering ERROR (400 conflicts — silent with ``quiet_conflicts`` —, 402, 507)."""
        try:
            return self.store.write(session.id, message)
        except StoreRefused as refused:
            if not (quiet_conflicts and refused.code == 400):
                self._error(session, refused.code, refused.text, message.address)
            return None

    def _on_set(self, session: Session, message: Set) -> None:
        address = message.address
        if self._forbidden(session, "write", address):
            return
        claim = None
        if address.startswith(P2P_PREFIX):
            if address.startswith(SIGNAL_PREFIX) or address == ANNOUNCE_ADDRESS:
                self._error(session, 403, f"Forbidden: {address} carries P2P signaling, which is a PUBLISH "
                                          "routed by the relay; a SET there is refused", address)
                return
            owner = presence_owner(address)
            if owner is not None:
                claim = self._check_presence(session, owner, message)
                if claim is False:
                    return
        applied = self.apply_set(session, message)
        if applied is None:
            return
        revision, echo = applied
        if claim is not None:
            if claim:
                self.claims.claim(session.id, claim)
            else:  # withdrawn
                self.claims.release(session.id)
        self.fan_out(address, "param", echo, session, exclude_sender=False, state=True)
        session.outbox.reply(encode(Ack(address=address, revision=revision)))

    def _on_get(self, session: Session, message: Get) -> None:
        address = message.address
        if self._forbidden(session, "read", address):
            return
        state = self.store.get(address)
        if state is None:
            return  # the reference router answers nothing for an unknown address
        session.outbox.reply(encode(Snapshot(params=[state.param(address)])), address)

    def expire(self) -> int:
        """Remove every expired param; return how many went. Expiry sends nothing."""
        return self.store.expire()

    def _param_removed(self, address: str) -> None:
        owner = presence_owner(address)
        if owner is not None:  # an expired presence ends its session's claim
            self.claims.release(owner)

    # -- P2P identity ---------------------------------------------------------------------

    def _check_presence(self, session: Session, owner: str, message: Set) -> str | Literal[False]:
        """Check a SET of a presence param. Return the client id to claim once applied, ``""``
        for a withdrawal, or False after answering ERROR."""
        address = message.address
        if owner != session.id:
            self._error(session, 403, f"Forbidden: the presence param {address} belongs to session "
                                      f"{owner}; a session writes only {PRESENCE_PREFIX}{{its own id}}", address)
            return False
        value = message.value
        if value is None:
            return ""
        if not isinstance(value, dict):
            self._error(session, 402, "a presence value must be a map {client_id, session_id, features} "
                                      f"or null, not {type(value).__name__}", address)
            return False
        return self._check_identity(session, value, address)

    def _check_identity(self, session: Session, value: dict, address: str) -> str | Literal[False]:
        """The ``session_id`` and ``client_id`` of a presence or announce map: the client id to
        claim (``""`` if none), or False after answering ERROR."""
        claimed_session = value.get("session_id")
        if claimed_session is not None and claimed_session != session.id:
            self._error(session, 403, f"Forbidden: session_id {claimed_session!r} is not the sender's "
                                      f"session {session.id}", address)
            return False
        client_id = value.get("client_id")
        if client_id is None:
            return ""
        problem = client_id_problem(client_id)
        if problem is not None:
            self._error(session, 402, problem, address)
            return False
        if session.scopes is not None and not session.scopes.can_claim(client_id):
            self._error(session, 301, f"Forbidden: no claim scope for client id {client_id!r}", address)
            return False
        holder = self.claims.holder(client_id)
        if holder is not None and holder != session.id:
            self._error(session, 409, f"client id {client_id!r} is claimed by another live session "
                                      f"({holder}); choose another id or wait until that session ends", address)
            return False
        return client_id

    # -- PUBLISH ----------------------------------------------------------------------------

    def _on_publish(self, session: Session, message: Publish) -> None:
        address = message.address
        if self._forbidden(session, "write", address):
            return
        if address.startswith(P2P_PREFIX):
            if address.startswith(SIGNAL_PREFIX):
                target = address[len(SIGNAL_PREFIX):]
                if target and "/" not in target:
                    self._route_signal(session, message, target)
                    return
            elif address == ANNOUNCE_ADDRESS:
                self._route_announce(session, message)
                return
            elif address.startswith(PRESENCE_PREFIX):
                self._error(session, 403, f"Forbidden: presence is a param; SET {PRESENCE_PREFIX}{{your "
                                          f"session id}} instead of a PUBLISH to {address}", address)
                return
        if message.signal == "gesture" and self._gestures.enabled:
            self._gestures.publish(session, message)
            return
        frame = self._encode_or_refuse(session, message)
        if frame is not None:
            self.fan_out(address, message.signal, frame, session, exclude_sender=True)

    def _route_signal(self, session: Session, message: Publish, target: str) -> None:
        value = message.value
        sender = value.get("from") if isinstance(value, dict) else None
        if sender != session.id:
            self._error(session, 403, f"Signal 'from' {sender!r} is not the sender's session {session.id}",
                        message.address)
            return
        peer = self.sessions.get(target)
        if peer is None:
            self._error(session, 404, f"Target session not found: {target}", message.address)
            return
        frame = self._encode_or_refuse(session, message)
        if frame is not None:
            self.deliver(peer, frame, session)

    def _route_announce(self, session: Session, message: Publish) -> None:
        address = message.address
        value = message.value
        if not isinstance(value, dict):
            self._error(session, 402, "an announce value must be a map {session_id, p2p_capable, features, "
                                      f"client_id?}}, not {type(value).__name__}", address)
            return
        claim = self._check_identity(session, value, address)
        if claim is False:
            return
        frame = self._encode_or_refuse(session, message)
        if frame is None:
            return
        if claim:
            self.claims.claim(session.id, claim)
        session.p2p_capable = True
        for sub in self._index.match(address):  # every subscriber, whatever its type filter (§10.2)
            target = sub.session
            if target is not session and (target.scopes is None or target.scopes.can_read(address)):
                self.deliver(target, frame, session)

    # -- BUNDLE and the rest ----------------------------------------------------------------

    def _on_bundle(self, session: Session, message: Bundle) -> None:
        # Every inner write is validated before anything is applied (§8.6).
        scopes = session.scopes
        for inner in message.messages:
            if not isinstance(inner, (Set, Publish)):
                continue
            address = inner.address
            if scopes is not None and not scopes.can_write(address):
                self._error(session, 403, f"Bundle rejected: no write scope for {address}", address)
                return
            if is_p2p_signaling(address):
                self._error(session, 403, f"Bundle rejected: {address} is P2P signaling (signal, announce "
                                          "or presence), which must be sent on its own", address)
                return
        revision = None
        for inner in message.messages:
            if isinstance(inner, Set):
                # A conflicting SET is dropped without an ERROR, as the reference does; a SET the
                # store cannot take (too large, store full) is answered.
                applied = self.apply_set(session, inner, quiet_conflicts=True)
                if applied is not None:
                    revision, echo = applied
                    self.fan_out(inner.address, "param", echo, session, exclude_sender=False, state=True)
            elif isinstance(inner, Publish):
                frame = self._encode_or_refuse(session, inner)
                if frame is not None:
                    self.fan_out(inner.address, inner.signal, frame, session, exclude_sender=True)
        session.outbox.reply(encode(Ack(revision=revision)))

    def _on_announce(self, session: Session, message: Announce) -> None:
        # Errors carry the namespace, the address the ACK would carry.
        if session.scopes is not None:
            for signal in message.signals:
                if not session.scopes.can_write(signal.address):
                    self._error(session, 301, f"Forbidden: no write scope for {signal.address} (ANNOUNCE)",
                                message.namespace)
                    return
        try:
            self.signals.announce(session.id, message.signals)
        except StoreRefused as refused:
            self._error(session, refused.code, refused.text, message.namespace)
            return
        session.outbox.reply(encode(Ack(address=message.namespace)))

    def _on_query(self, session: Session, message: Query) -> None:
        found, matched = self.signals.query(message.pattern, session.readable())
        session.outbox.reply(encode(Result(signals=found)))
        if len(found) < matched:
            self._error(session, 413, f"QUERY result truncated: {len(found)} of {matched} signals fit one "
                                      "RESULT frame; narrow the pattern", message.pattern)

    def _on_sync(self, session: Session, message: Sync) -> None:
        now = now_us()
        session.outbox.reply(encode(Sync(t1=message.t1, t2=now, t3=now)))

    def _on_ping(self, session: Session, message: Ping) -> None:
        session.outbox.reply(_PONG)

    _handlers: dict[type, Callable[[Router, Session, Any], None]] = {
        Subscribe: _on_subscribe,
        Unsubscribe: _on_unsubscribe,
        Set: _on_set,
        Get: _on_get,
        Publish: _on_publish,
        Bundle: _on_bundle,
        Announce: _on_announce,
        Query: _on_query,
        Sync: _on_sync,
        Ping: _on_ping,
    }


_PONG = encode(Pong())


class _GestureCoalescer:
    """Holds gesture ``move``s and forwards only the latest (docs/protocol.md §8.4).

    Keyed by (sender, address, gesture id). The flush after ``interval`` excludes the
    sender, like every other PUBLISH (the reference's timer does not: §11.1). A session
    coalesces at most ``per_session`` gestures at once; moves of further gestures pass
    uncoalesced (nothing is lost, the memory stays bounded).
    """

    def __init__(self, router: Router, interval: float | None, per_session: int) -> None:
        self._router = router
        self._interval = interval
        self._per_session = per_session
        self.enabled = interval is not None
        self._active: dict[str, set[tuple[str, int]]] = {}  # session id -> (address, gesture id)
        self._pending: dict[tuple[str, str, int], tuple[Session, Publish, asyncio.TimerHandle]] = {}

    def publish(self, session: Session, message: Publish) -> None:
        gesture = (message.address, message.id or 0)
        key = (session.id, *gesture)
        active = self._active.get(session.id)
        phase = message.phase
        if phase == "move":
            if active is None or gesture not in active:
                self._forward(session, message)
                return
            held = self._pending.get(key)
            if held is not None:
                self._pending[key] = (session, message, held[2])
            else:
                timer = asyncio.get_running_loop().call_later(self._interval or 0.0, self._flush, key)
                self._pending[key] = (session, message, timer)
            return
        self._flush(key)
        if phase == "start":
            if active is None:
                active = self._active[session.id] = set()
            if len(active) < self._per_session:
                active.add(gesture)
        elif active is not None:  # end / cancel
            active.discard(gesture)
            if not active:
                del self._active[session.id]
        self._forward(session, message)

    def _flush(self, key: tuple[str, str, int]) -> None:
        held = self._pending.pop(key, None)
        if held is not None:
            session, message, timer = held
            timer.cancel()
            if self._router.sessions.get(session.id) is session:
                self._forward(session, message)

    def _forward(self, session: Session, message: Publish) -> None:
        frame = self._router._encode_or_refuse(session, message)
        if frame is not None:
            self._router.fan_out(message.address, "gesture", frame, session, exclude_sender=True)

    def drop_session(self, session: Session) -> None:
        for gesture in self._active.pop(session.id, ()):
            held = self._pending.pop((session.id, *gesture), None)
            if held is not None:
                held[2].cancel()

    def cancel_all(self) -> None:
        for _, _, timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        self._active.clear()

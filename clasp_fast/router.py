"""The routing and state logic of the embedded relay, independent of any socket.

A :class:`Router` holds the sessions, their subscriptions (on the compiled
``SubscriptionIndex``), the param store (revisions, locks, TTL), the announced
signals and the gesture coalescer. It receives decoded messages with
:meth:`Router.receive` and answers through each session's :class:`Outbox`, which
the socket layer (``clasp_fast.relay``) implements with a bounded queue.

Behaviour follows the reference router (WIRE.md §8) except where documented:

* the gesture flush timer excludes the sender like every other PUBLISH (§11.1);
* expired params are never served: reads check the expiry, and a sweep
  (:meth:`Router.expire`, run every second by the relay) removes them;
* re-using a subscription id replaces the old subscription (the reference keeps
  the old pattern alive until the connection ends, §8.2);
* a P2P signal whose ``from`` is not the sender's session is refused with
  ERROR 403 and not forwarded (§10.2 has no such check).

Authenticated mode (``RouterConfig.auth``, see :mod:`clasp_fast.auth`) checks the
HELLO token (ERROR 300 / 302 / 500, then disconnect) and the scopes of SUBSCRIBE,
GET (read) and SET, PUBLISH (write), answering ERROR 301. A BUNDLE whose inner
SET/PUBLISH lacks a write scope is refused whole with ERROR 403 (§8.6). Unlike the
reference, a session also never *receives* a param or PUBLISH its read scopes do not
cover (the WELCOME and subscribe SNAPSHOTs and live fan-out are filtered); P2P
signals, addressed to one session, are exempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from .address import SubscriptionIndex, glob_match, validate_pattern
from .auth import Scopes, TokenRejected, Validator
from .codec import encode
from .errors import AddressError, ProtocolError
from .messages import (
    Ack,
    Announce,
    Bundle,
    Error,
    Get,
    Hello,
    Param,
    Ping,
    Pong,
    Publish,
    Query,
    Result,
    Set,
    SignalInfo,
    Snapshot,
    Subscribe,
    Sync,
    Unsubscribe,
    Welcome,
)

__all__ = ["Outbox", "Router", "RouterConfig", "Session"]

log = logging.getLogger("clasp_fast.router")

SIGNAL_PREFIX = "/clasp/p2p/signal/"
ANNOUNCE_ADDRESS = "/clasp/p2p/announce"
ROUTER_FEATURES = ["param", "event", "stream", "gesture", "timeline"]
SNAPSHOT_CHUNK = 800


def now_us() -> int:
    """Wall-clock time in microseconds since the Unix epoch (the protocol's clock)."""
    return time.time_ns() // 1000


class Outbox(Protocol):
    """Where a session's outgoing frames go (implemented by the socket layer)."""

    def reply(self, frame: bytes) -> None:
        """Queue a direct reply (WELCOME, SNAPSHOT, ACK, ERROR, ...); never dropped silently."""

    def broadcast(self, frame: bytes) -> bool:
        """Queue a fan-out frame; return False when it was dropped because the queue is full."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection (used when a session must go)."""


@dataclass
class RouterConfig:
    """Router options; defaults follow the reference router except ``rate_limit``."""

    name: str = "clasp_fast relay"
    max_sessions: int = 100
    max_subscriptions: int = 1000
    rate_limit: int | None = None  # messages per second per session; None = off
    gesture_coalesce: float | None = 0.016  # seconds; None = forward every move
    default_ttl: int = 3600  # seconds after the last write, for SETs without a TTL
    max_params: int = 10_000  # least recently written params are evicted beyond this
    overflow_errors_after: int = 100  # drops within overflow_window before ERROR 503
    auth: Validator | None = None  # token -> Scopes; None = open mode (tokens ignored)
    overflow_window: float = 10.0


class Subscription:
    """One SUBSCRIBE of one session; the subscriber object stored in the index."""

    __slots__ = ("session", "id", "pattern", "types", "key")

    def __init__(self, session: "Session", id: int, pattern: str, types: Iterable[str]) -> None:
        self.session = session
        self.id = id
        self.pattern = pattern
        self.types = frozenset(types) or None  # None = every signal type
        self.key = None

    def admits(self, signal: str | None) -> bool:
        return self.types is None or signal is None or signal in self.types


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
        self.subscriptions: dict[int, Subscription] = {}
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


class _ParamState:
    __slots__ = ("value", "revision", "writer", "timestamp", "holder", "ttl", "expires_at")

    def __init__(self) -> None:
        self.value = None
        self.revision = 0
        self.writer = None
        self.timestamp = 0
        self.holder = None
        self.ttl = None
        self.expires_at = None


class Router:
    """Sessions, subscriptions, state and routing rules of a CLASP relay."""

    def __init__(self, config: RouterConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or RouterConfig()
        self._clock = clock
        self.sessions: dict[str, Session] = {}
        self._index = SubscriptionIndex(4096)
        self._params: OrderedDict[str, _ParamState] = OrderedDict()
        self._signals: dict[str, SignalInfo] = {}
        self._gestures = _GestureCoalescer(self, self.config.gesture_coalesce)
        self._rate_error_frame = encode(Error(
            code=429, message=f"Rate limit exceeded: {self.config.rate_limit} messages/second"))

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
                                    features=ROUTER_FEATURES, time=now_us())))
        params = self._live_params(None, scopes)
        if not params:
            outbox.reply(encode(Snapshot(params=[])))
        else:
            self._send_snapshot(session, params)
        return session

    def disconnect(self, session: Session) -> None:
        """Forget a session: its subscriptions, pending gestures and its place in the tables."""
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        for sub in session.subscriptions.values():
            self._index.remove(sub.key)
        session.subscriptions.clear()
        self._gestures.drop_session(session)

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
        session.outbox.reply(encode(Error(code=code, message=text, address=address)))

    # -- delivery ---------------------------------------------------------------------------

    def deliver(self, session: Session, frame: bytes) -> None:
        """Fan-out delivery with the slow-consumer policy of WIRE.md §8.8."""
        if session.outbox.broadcast(frame):
            return
        session.dropped += 1
        now = self._clock()
        if now - session._drop_window > self.config.overflow_window:
            session._drop_window = now
            session._drops = 0
        session._drops += 1
        if (session._drops >= self.config.overflow_errors_after
                and now - session._last_overflow_error >= self.config.overflow_window):
            session._last_overflow_error = now
            self._error(session, 503, f"Buffer overflow: {session._drops} messages dropped "
                                      f"in {self.config.overflow_window:g} s (slow consumer)")

    def subscribers(self, address: str, signal: str | None) -> list[Session]:
        """Sessions with a subscription matching ``address`` that admits ``signal``, once each."""
        found: dict[str, Session] = {}
        for sub in self._index.match(address):
            if sub.admits(signal):
                found[sub.session.id] = sub.session
        return list(found.values())

    def fan_out(self, address: str, signal: str | None, frame: bytes, exclude: Session | None) -> None:
        for target in self.subscribers(address, signal):
            if target is not exclude and (target.scopes is None or target.scopes.can_read(address)):
                self.deliver(target, frame)

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
        sub = Subscription(session, message.id, pattern, message.types)
        sub.key = self._index.add(pattern, sub)
        session.subscriptions[message.id] = sub
        params = self._live_params(pattern, session.scopes)
        if params:
            self._send_snapshot(session, params)

    def _on_unsubscribe(self, session: Session, message: Unsubscribe) -> None:
        sub = session.subscriptions.pop(message.id, None)
        if sub is not None:
            self._index.remove(sub.key)

    # -- state ------------------------------------------------------------------------------

    def _live_params(self, pattern: str | None, scopes: Scopes | None) -> list[Param]:
        now = self._clock()
        params = []
        for address, state in self._params.items():
            if state.expires_at is not None and state.expires_at <= now:
                continue
            if pattern is not None and not glob_match(pattern, address):
                continue
            if scopes is not None and not scopes.can_read(address):
                continue
            params.append(Param(address=address, value=state.value, revision=state.revision,
                                writer=state.writer, timestamp=state.timestamp))
        return params

    def _send_snapshot(self, session: Session, params: list[Param]) -> None:
        for start in range(0, len(params), SNAPSHOT_CHUNK):
            self._send_snapshot_chunk(session, params[start:start + SNAPSHOT_CHUNK])

    def _send_snapshot_chunk(self, session: Session, params: list[Param]) -> None:
        try:
            frame = encode(Snapshot(params=params))
        except Exception:
            # Too large for one frame (payload > 65 535 bytes): split in halves.
            if len(params) == 1:
                return  # a single param too large to encode cannot be in the store
            half = len(params) // 2
            self._send_snapshot_chunk(session, params[:half])
            self._send_snapshot_chunk(session, params[half:])
            return
        session.outbox.reply(frame)

    def _get_state(self, address: str) -> _ParamState | None:
        state = self._params.get(address)
        if state is not None and state.expires_at is not None and state.expires_at <= self._clock():
            del self._params[address]
            return None
        return state

    def apply_set(self, session: Session, message: Set) -> int | None:
        """Apply a SET to the store; return the new revision, or None after answering ERROR 400."""
        address = message.address
        state = self._get_state(address)
        if state is not None:
            if state.holder is not None and state.holder != session.id and not message.unlock:
                self._error(session, 400, f'LockHeld {{ holder: "{state.holder}" }}', address)
                return None
            if message.revision is not None and message.revision != state.revision:
                self._error(session, 400, f"RevisionConflict {{ expected: {message.revision}, "
                                          f"actual: {state.revision} }}", address)
                return None
        else:
            state = _ParamState()
            self._params[address] = state
            if len(self._params) > self.config.max_params:
                self._params.popitem(last=False)
        self._params.move_to_end(address)
        state.value = message.value
        state.revision += 1
        state.writer = session.id
        state.timestamp = now_us()
        if message.lock:
            state.holder = session.id
        elif message.unlock and state.holder == session.id:
            state.holder = None
        ttl = message.ttl
        if ttl is not None:
            state.ttl = ttl
        if state.ttl is None:
            state.expires_at = self._clock() + self.config.default_ttl
        elif state.ttl.mode == "never":
            state.expires_at = None
        else:
            state.expires_at = self._clock() + state.ttl.secs
        return state.revision

    def _echo_set(self, session: Session, message: Set, revision: int) -> None:
        echo = Set(address=message.address, value=message.value, revision=revision,
                   lock=message.lock, unlock=message.unlock, ttl=message.ttl)
        self.fan_out(message.address, "param", encode(echo), None)

    def _on_set(self, session: Session, message: Set) -> None:
        if self._forbidden(session, "write", message.address):
            return
        revision = self.apply_set(session, message)
        if revision is None:
            return
        self._echo_set(session, message, revision)
        session.outbox.reply(encode(Ack(address=message.address, revision=revision)))

    def _on_get(self, session: Session, message: Get) -> None:
        if self._forbidden(session, "read", message.address):
            return
        state = self._get_state(message.address)
        if state is None:
            return  # the reference router answers nothing for an unknown address
        session.outbox.reply(encode(Snapshot(params=[Param(
            address=message.address, value=state.value, revision=state.revision,
            writer=state.writer, timestamp=state.timestamp)])))

    def expire(self) -> int:
        """Remove every expired param; return how many went. Expiry sends nothing."""
        now = self._clock()
        expired = [a for a, s in self._params.items() if s.expires_at is not None and s.expires_at <= now]
        for address in expired:
            del self._params[address]
        return len(expired)

    # -- PUBLISH ----------------------------------------------------------------------------

    def _on_publish(self, session: Session, message: Publish) -> None:
        address = message.address
        if self._forbidden(session, "write", address):
            return
        if address.startswith("/clasp/p2p/"):
            if address.startswith(SIGNAL_PREFIX):
                target = address[len(SIGNAL_PREFIX):]
                if target and "/" not in target:
                    self._route_signal(session, message, target)
                    return
            elif address == ANNOUNCE_ADDRESS:
                session.p2p_capable = True
                frame = encode(message)
                for sub in self._index.match(address):
                    target = sub.session
                    if target is not session and (target.scopes is None or target.scopes.can_read(address)):
                        self.deliver(target, frame)
                return
        if message.signal == "gesture" and self._gestures.enabled:
            self._gestures.publish(session, message)
            return
        self.fan_out(address, message.signal, encode(message), session)

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
        self.deliver(peer, encode(message))

    # -- BUNDLE and the rest ----------------------------------------------------------------

    def _on_bundle(self, session: Session, message: Bundle) -> None:
        # Every inner write is validated before anything is applied (§8.6).
        scopes = session.scopes
        if scopes is not None:
            for inner in message.messages:
                if isinstance(inner, (Set, Publish)) and not scopes.can_write(inner.address):
                    self._error(session, 403, f"Bundle rejected: no write scope for {inner.address}",
                                inner.address)
                    return
        revision = None
        for inner in message.messages:
            if isinstance(inner, Set):
                applied = self._apply_set_quietly(session, inner)
                if applied is not None:
                    revision = applied
                    self._echo_set(session, inner, applied)
            elif isinstance(inner, Publish):
                self.fan_out(inner.address, inner.signal, encode(inner), session)
        session.outbox.reply(encode(Ack(revision=revision)))

    def _apply_set_quietly(self, session: Session, message: Set) -> int | None:
        # Inside a BUNDLE a rejected SET is dropped without an ERROR, as the reference does.
        outbox = session.outbox
        session.outbox = _Discard()
        try:
            return self.apply_set(session, message)
        finally:
            session.outbox = outbox

    def _on_announce(self, session: Session, message: Announce) -> None:
        for signal in message.signals:
            self._signals[signal.address] = signal
        session.outbox.reply(encode(Ack(address=message.namespace)))

    def _on_query(self, session: Session, message: Query) -> None:
        found = [SignalInfo(address=s.address, signal_type=s.signal_type, datatype=s.datatype, access=s.access)
                 for a, s in self._signals.items() if glob_match(message.pattern, a)]
        session.outbox.reply(encode(Result(signals=found)))

    def _on_sync(self, session: Session, message: Sync) -> None:
        now = now_us()
        session.outbox.reply(encode(Sync(t1=message.t1, t2=now, t3=now)))

    def _on_ping(self, session: Session, message: Ping) -> None:
        session.outbox.reply(_PONG)

    _handlers = {
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


class _Discard:
    def reply(self, frame: bytes) -> None:
        pass

    def broadcast(self, frame: bytes) -> bool:
        return True

    def close(self, code: int, reason: str) -> None:
        pass


class _GestureCoalescer:
    """Holds gesture ``move``s and forwards only the latest (WIRE.md §8.4).

    Keyed by (sender, address, gesture id). The flush after ``interval`` excludes the
    sender, like every other PUBLISH (the reference's timer does not: §11.1).
    """

    def __init__(self, router: Router, interval: float | None) -> None:
        self._router = router
        self._interval = interval
        self.enabled = interval is not None
        self._active: set[tuple[str, str, int]] = set()
        self._pending: dict[tuple[str, str, int], tuple[Session, Publish, asyncio.TimerHandle]] = {}

    def publish(self, session: Session, message: Publish) -> None:
        key = (session.id, message.address, message.id or 0)
        phase = message.phase
        if phase == "move":
            if key not in self._active:
                self._forward(session, message)
                return
            held = self._pending.get(key)
            if held is not None:
                self._pending[key] = (session, message, held[2])
            else:
                timer = asyncio.get_running_loop().call_later(self._interval, self._flush, key)
                self._pending[key] = (session, message, timer)
            return
        if phase == "start":
            self._flush(key)
            self._active.add(key)
        else:  # end / cancel
            self._flush(key)
            self._active.discard(key)
        self._forward(session, message)

    def _flush(self, key: tuple[str, str, int]) -> None:
        held = self._pending.pop(key, None)
        if held is not None:
            session, message, timer = held
            timer.cancel()
            if self._router.sessions.get(session.id) is session:
                self._forward(session, message)

    def _forward(self, session: Session, message: Publish) -> None:
        self._router.fan_out(message.address, "gesture", encode(message), session)

    def drop_session(self, session: Session) -> None:
        for key in [k for k in self._pending if k[0] == session.id]:
            self._pending.pop(key)[2].cancel()
        self._active = {k for k in self._active if k[0] != session.id}

    def cancel_all(self) -> None:
        for _, _, timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        self._active.clear()

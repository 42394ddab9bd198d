"""CLASP peer to peer: ``ClaspP2P`` finds peers through a relay and connects to them over WebRTC.

::

    async with ClaspP2P("ws://127.0.0.1:7330", client_id="sensor-1",
                        rtc_config=WebRtcConfig(host_addresses=["127.0.0.1"])) as p2p:
        async with await p2p.connect_to_peer("viewer") as peer:
            await peer.set("/sensor/gain", 0.5)
            await peer.stream("/sensor/accel", numpy.zeros(64))

            @peer.on("/viewer/**")
            def changed(value, address):
                ...

Discovery (both ways, WIRE.md §10): every ``presence_interval`` seconds a peer

* sets the param ``/clasp/p2p/presence/{session_id}`` to ``{client_id, session_id, features, ttl}``
  with an absolute TTL of three intervals (``ttl``, in seconds), so peers that subscribe later find
  it in the SNAPSHOT the relay sends on subscribing to ``/clasp/p2p/presence/*``, and
* publishes the reference announce ``{session_id, p2p_capable, features, client_id}`` to
  ``/clasp/p2p/announce``, which reference peers listen to.

Peers are looked up by the client id they chose or by their session id; a peer that only speaks the
reference protocol (no presence, no ``features``) is reachable by its session id. An entry is live
for ``ttl`` seconds after its last presence or announce (at most :data:`MAX_PRESENCE_TTL`). When two
live sessions claim one client id, the claim seen first keeps it; the other is reported to
``on_error`` and ignored until the first one lapses or withdraws.

Each :class:`Peer` keeps the params it set and was sent, and answers a GET with a SNAPSHOT as a
router would (an empty SNAPSHOT when it holds no value).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from ..wire.address import validate_pattern
from ..relay_client import ClaspClient
from ..errors import ClaspError, ProtocolError, SignalingError, TransportError
from ..wire.messages import (
    MISSING,
    Bundle,
    Get,
    Message,
    Param,
    Ping,
    Pong,
    Publish,
    Set,
    Snapshot,
    Ttl,
)
from ..transport.signaling import ANNOUNCE_ADDRESS, new_correlation_id, parse_signal
from ..runtime.dispatch import CallbackRegistry
from ..runtime.tasks import TaskSet
from ..transport.webrtc import LOCAL_FEATURES, ChannelSpec, WebRtcConfig, WebRtcStats, WebRtcTransport

__all__ = ["ClaspP2P", "Peer", "PeerInfo", "PeerStats", "PRESENCE_PREFIX", "DEFAULT_RELAY_URL"]

log = logging.getLogger("clasp_fast.p2p")

DEFAULT_RELAY_URL = "ws://127.0.0.1:7330"
PRESENCE_PREFIX = "/clasp/p2p/presence/"
# What the reference announce lists (WIRE.md §10.3), then clasp_fast's own features.
BASE_FEATURES = ("webrtc", "reliable", "unreliable", "presence", *LOCAL_FEATURES)
# The longest presence TTL a peer's entry is trusted for (a larger advertised TTL is not honoured).
MAX_PRESENCE_TTL = 60
_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

AcceptHook = Callable[["PeerInfo"], "bool | Awaitable[bool]"]


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class PeerInfo:
    """What is known about a peer: its session id, client id (None for reference peers) and features."""

    session_id: str
    client_id: str | None = None
    features: tuple[str, ...] = ()
    p2p_capable: bool = True
    source: str = "announce"  # "presence", "announce" or "offer"
    last_seen: float = field(default_factory=time.monotonic)
    expires: float | None = None  # monotonic time after which the entry is stale
    claimed_at: float = field(default_factory=time.monotonic)  # when this session's client id claim began

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now


@dataclass(frozen=True)
class PeerStats:
    """Counters of one peer connection; ``transport`` holds the WebRTC-level figures."""

    session_id: str
    client_id: str | None
    state: str
    sent: dict[str, int]
    received: dict[str, int]
    params: int
    transport: WebRtcStats


MessageHook = Callable[["Peer", Any], bool]


class Peer:
    """One P2P connection to another CLASP peer."""

    def __init__(self, transport: WebRtcTransport, info: PeerInfo, owner: "ClaspP2P | None" = None) -> None:
        self.transport = transport
        self.info = info
        self._owner = owner
        self._callbacks = CallbackRegistry(self._spawn, self._report, 256)
        self._params: dict[str, Param] = {}
        self._gets: deque[tuple[str, asyncio.Future]] = deque()  # GETs waiting for an answer, oldest first
        self._hooks: list[MessageHook] = []
        self._close_callbacks: list[Callable[["Peer", str | None], Any]] = []
        self._sent = dict.fromkeys(("set", "emit", "stream", "gesture", "publish", "get", "other"), 0)
        self._received = dict.fromkeys(("set", "publish", "get", "snapshot", "unsolicited_snapshot", "bundle",
                                         "other"), 0)
        self._closed_notified = False
        self._background = TaskSet(self._task_failed)
        transport.add_state_listener(self._on_state)

    def start(self) -> None:
        """Start delivering received messages (those that arrived while connecting first).

        ``ClaspP2P`` calls this after its ``on_connection`` callbacks ran, so handlers registered
        there see every message.
        """
        receiver = self.transport.receiver
        receiver.on_message(self._on_message)
        queue = receiver._queue  # messages received before the callback was set
        while not queue.empty():
            item = queue.get_nowait()
            if not isinstance(item, Message):  # the end-of-stream marker stays for iterators
                queue.put_nowait(item)
                break
            self._on_message(item)

    # -- identity -----------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.info.session_id

    @property
    def client_id(self) -> str | None:
        return self.info.client_id

    @property
    def features(self) -> tuple[str, ...]:
        """Features the peer listed in its offer/answer, its announce and its presence."""
        return tuple(dict.fromkeys((*self.transport.remote_features, *self.info.features)))

    @property
    def state(self) -> str:
        return self.transport.state

    @property
    def connected(self) -> bool:
        return self.transport.state == "connected"

    def __repr__(self) -> str:
        return f"<Peer client_id={self.client_id!r} session={self.session_id} {self.state}>"

    # -- sending ------------------------------------------------------------------------

    async def send(self, message: Any, *, reliable: bool | None = None) -> None:
        """Send a ready-made message (or encoded frame); the channel follows its QoS unless ``reliable`` says.
        A SET sent this way is held like one from :meth:`set`."""
        if type(message) is Set:
            self._store(message.address, message.value, self.transport.signaling.session_id)
        await self.transport.sender.send(message, reliable=reliable)
        self._sent["other"] += 1

    async def set(self, address: str, value: Any, *, ttl: Ttl | None = None) -> int:
        """Write a param on the peer (reliable channel); return the revision this side now holds."""
        revision = self._store(address, value, self.transport.signaling.session_id)
        await self.transport.sender.send(Set(address=address, value=value, ttl=ttl))
        self._sent["set"] += 1
        return revision

    async def emit(self, address: str, value: Any = MISSING) -> None:
        """Send an event (reliable channel)."""
        await self.transport.sender.send(Publish(address=address, signal="event", value=value))
        self._sent["emit"] += 1

    async def stream(self, address: str, samples: Any, *, rate: int | None = None) -> None:
        """Send stream samples (a numpy array or sequence of floats) or one value on the unreliable channel."""
        if isinstance(samples, (list, tuple)) or hasattr(samples, "dtype"):
            message = Publish(address=address, signal="stream", samples=samples, rate=rate)
        else:
            message = Publish(address=address, signal="stream", value=samples, rate=rate)
        await self.transport.sender.send(message)
        self._sent["stream"] += 1

    async def gesture(self, address: str, id: int, phase: str, value: Any = MISSING) -> None:
        """Send one gesture phase (``start``, ``move``, ``end``, ``cancel``) on the unreliable channel."""
        await self.transport.sender.send(Publish(address=address, signal="gesture", id=id, phase=phase, value=value))
        self._sent["gesture"] += 1

    async def publish(self, message: Publish) -> None:
        """Send a ready-made PUBLISH."""
        await self.transport.sender.send(message)
        self._sent["publish"] += 1

    async def get(self, address: str, timeout: float = 5.0) -> Any:
        """Ask the peer for its current value of ``address``.

        Raises ``KeyError`` when the peer holds no value (it answered with an empty SNAPSHOT) and
        ``TransportError`` (step ``get``) when no answer came in time -- reference peers never answer.

        A SNAPSHOT carries no request id, so answers are matched by order and content: answers come
        in the order of the GETs (ordered reliable channel), and a SNAPSHOT answers the oldest
        waiting GET only if it fits it -- every param in it has the requested address, or it is
        empty (no value). A SNAPSHOT that fits no waiting GET answers nothing and is reported. A GET
        that ends (answer, timeout, cancellation, closed connection) leaves no state behind.
        """
        future = asyncio.get_running_loop().create_future()
        request = (address, future)
        self._gets.append(request)
        try:
            await self.transport.sender.send(Get(address=address))
            self._sent["get"] += 1
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TransportError(f"no answer to GET {address} within {timeout:g} s",
                                 peer=self.session_id, step="get") from None
        finally:
            with contextlib.suppress(ValueError):
                self._gets.remove(request)

    def flush(self) -> None:
        """Hand pending batches to the DataChannels now."""
        self.transport.sender.flush()

    # -- channels -----------------------------------------------------------------------

    async def create_data_channel(
        self,
        prefix: str,
        *,
        ordered: bool = True,
        max_retransmits: int | None = None,
        max_packet_life_time: int | None = None,
        label: str | None = None,
        timeout: float = 10.0,
    ) -> ChannelSpec:
        """Open a DataChannel for messages under ``prefix`` with its own reliability; wait until it is open.

        ``ordered=False, max_retransmits=0`` is unreliable, ``max_retransmits=N`` or
        ``max_packet_life_time=ms`` partially reliable, the defaults fully reliable. Both sides route
        messages under ``prefix`` to it (the peer learns the prefix from the channel's protocol field).
        """
        spec = ChannelSpec(label or f"clasp{prefix}", prefix=prefix, ordered=ordered,
                           max_retransmits=max_retransmits, max_packet_life_time=max_packet_life_time)
        await self.transport.add_channel(spec, timeout)
        return spec

    # -- receiving ----------------------------------------------------------------------

    def on(self, pattern: str, callback: Callable | None = None, *, types: Iterable[str] | None = None):
        """Call ``callback(value, address)`` (or ``(value, address, message)``) for SETs and PUBLISHes
        from the peer matching ``pattern``. Without ``callback`` it is a decorator; with one it returns
        the subscription id (for :meth:`off`)."""
        validate_pattern(pattern)
        if callback is not None:
            return self._callbacks.add(pattern, callback, types).id

        def decorator(fn: Callable) -> Callable:
            self._callbacks.add(pattern, fn, types)
            return fn

        return decorator

    def off(self, subscription_id: int) -> None:
        """Remove a subscription made with :meth:`on`."""
        self._callbacks.remove(subscription_id)

    def add_message_hook(self, hook: MessageHook) -> None:
        """Call ``hook(peer, message)`` first for each received message; a True result consumes it."""
        self._hooks.append(hook)

    def on_close(self, callback: Callable[["Peer", str | None], Any]) -> Callable:
        """Call ``callback(peer, reason)`` once when the connection ends."""
        self._close_callbacks.append(callback)
        return callback

    @property
    def params(self) -> dict[str, Any]:
        """The values this side holds: params it set on the peer and params the peer set."""
        return {address: param.value for address, param in self._params.items()}

    def _store(self, address: str, value: Any, writer: str | None) -> int:
        old = self._params.get(address)
        revision = 1 if old is None else old.revision + 1
        self._params[address] = Param(address=address, value=value, revision=revision, writer=writer,
                                      timestamp=_now_us())
        return revision

    def _on_message(self, message: Any) -> None:
        for hook in self._hooks:
            try:
                if hook(self, message):
                    return
            except Exception as exc:
                self._report(exc)
                return
        self.apply(message)

    def apply(self, message: Any) -> None:
        """Handle one message from the peer: store, dispatch, answer (used after message hooks)."""
        kind = type(message)
        if kind is Set:
            self._received["set"] += 1
            self._store(message.address, message.value, self.session_id)
            self._dispatch(message.address, message.value, "param", message)
        elif kind is Publish:
            self._received["publish"] += 1
            value = message.samples if message.samples is not None else message.value
            self._dispatch(message.address, value, message.signal or "event", message)
        elif kind is Get:
            self._received["get"] += 1
            param = self._params.get(message.address)
            reply = Snapshot(params=[param] if param is not None else [])
            self._spawn(self.transport.sender.send(reply, reliable=True))
        elif kind is Snapshot:
            self._received["snapshot"] += 1
            self._on_snapshot(message)
        elif kind is Bundle:
            self._received["bundle"] += 1
            for inner in message.messages:
                self.apply(inner)
        elif kind is Ping:
            self._spawn(self.transport.sender.send(Pong(), reliable=True))
        else:
            self._received["other"] += 1

    def _on_snapshot(self, message: Snapshot) -> None:
        # The matching rule is in get()'s docstring.
        if self._gets:
            address, future = self._gets[0]
            if all(param.address == address for param in message.params):
                self._gets.popleft()
                if future.done():  # timed out a moment ago: this was its answer
                    return
                if message.params:
                    future.set_result(message.params[0].value)
                else:
                    future.set_exception(KeyError(f"peer {self.session_id} holds no value for {address}"))
                return
        self._received["unsolicited_snapshot"] += 1
        addresses = ", ".join(param.address for param in message.params) or "no params"
        self._report(ProtocolError(f"peer {self.session_id} sent a SNAPSHOT ({addresses}) that answers no "
                                   f"waiting GET; ignored"))

    def _dispatch(self, address: str, value: Any, signal: str, message: Any) -> None:
        self._callbacks.dispatch(address, value, signal, message)

    def _spawn(self, awaitable: Awaitable) -> asyncio.Task:
        return self._background.spawn(awaitable)

    def _task_failed(self, exc: BaseException) -> None:
        # A send that fails because the connection is going away is not worth reporting.
        if not isinstance(exc, TransportError) or self.connected:
            self._report(exc)

    def _report(self, exc: Exception) -> None:
        if self._owner is not None:
            self._owner._report(exc)
        else:
            log.warning("peer %s: %s", self.session_id, exc)

    def _on_state(self, state: str) -> None:
        if state in ("closed", "failed") and not self._closed_notified:
            self._closed_notified = True
            for _, future in self._gets:
                if not future.done():
                    future.set_exception(TransportError("connection closed", peer=self.session_id, step="get"))
            for callback in self._close_callbacks:
                try:
                    result = callback(self, self.transport.close_reason)
                    if inspect.isawaitable(result):
                        self._spawn(result)
                except Exception as exc:
                    self._report(exc)

    # -- stats and teardown -------------------------------------------------------------

    def stats(self) -> PeerStats:
        return PeerStats(session_id=self.session_id, client_id=self.client_id, state=self.state,
                         sent=dict(self._sent), received=dict(self._received), params=len(self._params),
                         transport=self.transport.stats())

    async def close(self, reason: str = "User requested disconnect") -> None:
        """Flush what is pending, tell the peer (``disconnected`` signal) and close the connection."""
        await self.transport.close(reason)

    async def wait_closed(self) -> None:
        await self.transport.wait_closed()

    async def __aenter__(self) -> "Peer":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


class ClaspP2P:
    """Discovery, signaling and WebRTC connections to other CLASP peers through a relay.

    ``signaling`` is the relay URL or an already connected :class:`ClaspClient` (which is then
    shared, not closed); ``token`` is sent in HELLO to a relay in authenticated mode.
    ``accept(info)`` decides on incoming offers (default: accept all); a refused
    offerer gets a ``disconnected`` signal with reason ``"refused"``.
    """

    def __init__(
        self,
        signaling: str | ClaspClient = DEFAULT_RELAY_URL,
        *,
        client_id: str | None = None,
        rtc_config: WebRtcConfig | None = None,
        name: str | None = None,
        token: str | None = None,
        accept: AcceptHook | None = None,
        features: Iterable[str] = (),
        presence_interval: float = 5.0,
        discovery_timeout: float = 5.0,
    ) -> None:
        if isinstance(signaling, ClaspClient):
            self.client: ClaspClient | None = signaling
            self._owns_client = False
            self.url = signaling.url
        else:
            self.client = None
            self._owns_client = True
            self.url = signaling
        self.client_id = client_id or f"py-{uuid.uuid4().hex[:12]}"
        if "/" in self.client_id or not self.client_id:
            raise ValueError(f"client_id must be one non-empty address segment, got {self.client_id!r}")
        self.rtc_config = rtc_config or WebRtcConfig()
        self.name = name or f"clasp_fast p2p {self.client_id}"
        self.token = token
        self.features = tuple(dict.fromkeys((*BASE_FEATURES, *features)))
        self.presence_interval = presence_interval
        self.presence_ttl = max(1, int(round(presence_interval * 3)))
        self.discovery_timeout = discovery_timeout
        self._accept = accept
        self._peers: dict[str, PeerInfo] = {}
        self._claim_conflicts: set[str] = set()  # sessions reported as second claimants of a client id
        self._connections: dict[str, Peer] = {}
        self._transports: dict[str, WebRtcTransport] = {}  # the current connection per peer session
        self._answering: dict[str, WebRtcTransport] = {}  # by correlation id: offers not answered yet
        self._correlation_ids: dict[str, None] = {}  # every id we offered or were offered (bounded)
        self._pending: dict[str, asyncio.Future] = {}
        self._attempts: dict[str, asyncio.Task] = {}
        self._refusals: dict[str, str] = {}
        self._on_connection: list[Callable[[Peer], Any]] = []
        self._on_disconnection: list[Callable[[Peer, str | None], Any]] = []
        self._on_error: list[Callable[[Exception], Any]] = []
        # Accepted incoming connections not yet taken by incoming(); a peer leaves when it closes,
        # so connections nobody iterates over are not kept alive.
        self._incoming: deque[Peer] = deque()
        self._incoming_changed = asyncio.Event()
        self._peer_changed = asyncio.Event()
        self._background = TaskSet(self._report)
        self._closed = False
        self._started = False
        self._presence_address: str | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self.client.session_id if self.client is not None else None

    async def connect(self) -> "ClaspP2P":
        """Connect to the relay (unless a client was given), subscribe, announce and publish presence."""
        if self._started:
            return self
        self._started = True
        if self.client is None:
            self.client = await ClaspClient.connect(self.url, name=self.name, token=self.token)
        client = self.client
        client.on_error(self._report)
        client.on_connect(self._on_relay_reconnect)
        try:
            await client.subscribe(PRESENCE_PREFIX + "*", self._on_presence)
            await client.subscribe(ANNOUNCE_ADDRESS, self._on_announce)
            self._spawn(self._pump_signals())
            # Waits for the relay's ACK: a relay that refuses the client id (ERROR 409 taken,
            # 301 not granted by the token) makes connect() raise that ProtocolError.
            await self._publish_presence(wait=True)
        except BaseException:
            await self.close()
            raise
        self._spawn(self._refresh_presence())
        return self

    async def close(self) -> None:
        """Close every peer connection, withdraw presence and (if this object opened it) the relay client."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._attempts.values()):
            task.cancel()
        for session_id in list(self._pending):
            self._finish_pending(session_id, exc=TransportError("ClaspP2P closed", peer=session_id, step="close"))
        peers = list(self._connections.values())
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
        for transport in [*self._transports.values(), *self._answering.values()]:
            await transport.close()
        client = self.client
        if client is not None and client.connected and self._presence_address is not None:
            try:
                await client.set(self._presence_address, None, ttl=Ttl.absolute(1), wait=False)
            except ClaspError:
                pass
        await self._background.cancel_and_wait()
        self._incoming_changed.set()
        if client is not None and self._owns_client:
            await client.close()

    async def __aenter__(self) -> "ClaspP2P":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # -- callbacks ----------------------------------------------------------------------

    def on_connection(self, callback: Callable[[Peer], Any]) -> Callable[[Peer], Any]:
        """Call ``callback(peer)`` for every new connection (incoming or outgoing); usable as a decorator."""
        self._on_connection.append(callback)
        return callback

    def on_disconnection(self, callback: Callable[[Peer, str | None], Any]) -> Callable:
        """Call ``callback(peer, reason)`` when a connection ends; usable as a decorator."""
        self._on_disconnection.append(callback)
        return callback

    def on_error(self, callback: Callable[[Exception], Any]) -> Callable[[Exception], Any]:
        """Call ``callback(exc)`` for errors nobody awaits (failed incoming connections, bad signals)."""
        self._on_error.append(callback)
        return callback

    def set_accept(self, hook: AcceptHook | None) -> None:
        """Decide on incoming offers with ``hook(info) -> bool`` (may be async); None accepts all."""
        self._accept = hook

    def _notify(self, callbacks: list[Callable], *args: Any) -> None:
        self._background.notify(callbacks, *args)

    def _report(self, exc: Exception) -> None:
        if not self._on_error:
            log.info("%s", exc)
        self._notify(self._on_error, exc)

    def _spawn(self, awaitable: Awaitable) -> asyncio.Task:
        return self._background.spawn(awaitable)

    # -- discovery ----------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        """Known peers (from presence, announces and offers), stale entries left out."""
        now = time.monotonic()
        return [info for info in self._peers.values() if info.live(now)]

    def find_peer(self, id: str) -> PeerInfo | None:
        """The known peer whose session id or client id is ``id``.

        When two live sessions claim the same client id, the claim seen first wins: ``id`` keeps
        resolving to that session (the later claimant is reported once to :meth:`on_error`).
        """
        info = self._peers.get(id)
        if info is not None:
            return info
        matches = [p for p in self.peers() if p.client_id == id]
        return min(matches, key=lambda p: p.claimed_at) if matches else None

    async def wait_for_peer(self, id: str, timeout: float | None = None) -> PeerInfo:
        """Wait until a peer with client id or session id ``id`` is known."""
        deadline = asyncio.get_running_loop().time() + (self.discovery_timeout if timeout is None else timeout)
        while True:
            info = self.find_peer(id)
            if info is not None:
                return info
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TransportError(f"no peer with client id or session id {id!r} found", peer=id, step="discovery")
            self._peer_changed.clear()
            try:
                await asyncio.wait_for(self._peer_changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _learn(self, session_id: str, client_id: Any, features: Any, source: str, expires: float | None) -> None:
        if not isinstance(session_id, str) or not session_id or session_id == self.session_id:
            return
        now = time.monotonic()
        info = self._peers.get(session_id)
        is_new = info is None
        if info is None:
            info = self._peers[session_id] = PeerInfo(session_id=session_id, source=source)
        if isinstance(client_id, str) and client_id and (client_id != info.client_id or not info.live(now)):
            # A new claim (a lapsed claim that comes back is new too): it ranks after the live ones.
            info.client_id = client_id
            info.claimed_at = now
        if isinstance(features, (list, tuple)):
            info.features = tuple(f for f in features if isinstance(f, str))
        info.last_seen = now
        if source == "presence":
            info.source = source
            info.expires = expires
        elif info.source != "presence":
            # A client id claimed only by announces lapses like presence unless it is repeated.
            info.expires = now + self.presence_ttl if info.client_id else None
        if info.client_id:
            self._check_claim(info)
        self._peer_changed.set()
        if is_new and source == "announce":
            # A newcomer: announce back so reference peers (which only listen to announces) see us.
            self._spawn(self._announce())

    def _check_claim(self, info: PeerInfo) -> None:
        """Report once when ``info`` claims a client id that another live session claimed first."""
        if info.session_id in self._claim_conflicts:
            return
        first = self.find_peer(info.client_id)
        if first is None or first is info:
            return
        self._claim_conflicts.add(info.session_id)
        error = ProtocolError(
            f"two live sessions claim client id {info.client_id!r}: {first.session_id} (seen first, kept) "
            f"and {info.session_id} (ignored)")
        log.warning("%s", error)
        self._report(error)

    def _forget(self, session_id: str) -> None:
        self._claim_conflicts.discard(session_id)
        if self._peers.pop(session_id, None) is not None:
            self._peer_changed.set()

    def _forget_stale(self) -> None:
        """Drop entries stale for a whole presence TTL (peers that left without withdrawing)."""
        limit = time.monotonic() - self.presence_ttl
        for session_id, info in list(self._peers.items()):
            if info.expires is not None and info.expires < limit and session_id not in self._connections:
                self._forget(session_id)

    def _on_presence(self, value: Any, address: str) -> None:
        session_id = address[len(PRESENCE_PREFIX):]
        if value is None:
            self._forget(session_id)
            return
        if not isinstance(value, dict):
            self._report(ProtocolError(f"presence value must be a map, got {type(value).__name__}; ignored",
                                       address=address))
            return
        ttl = value.get("ttl")  # the sender's refresh period decides when its entry is stale
        if type(ttl) is not int or not 1 <= ttl <= MAX_PRESENCE_TTL:
            ttl = self.presence_ttl
        self._learn(session_id, value.get("client_id"), value.get("features"), "presence", time.monotonic() + ttl)

    def _on_announce(self, value: Any, address: str) -> None:
        if not isinstance(value, dict):
            self._report(ProtocolError(f"announce value must be a map, got {type(value).__name__}; ignored",
                                       address=address))
            return
        self._learn(value.get("session_id"), value.get("client_id"), value.get("features"), "announce", None)

    async def _announce(self) -> None:
        client = self.client
        if client is None or not client.connected:
            return
        await client.emit(ANNOUNCE_ADDRESS, {"session_id": client.session_id, "p2p_capable": True,
                                             "features": list(self.features), "client_id": self.client_id})

    async def _publish_presence(self, wait: bool = False) -> None:
        client = self.client
        if client is None or not client.connected:
            return
        address = PRESENCE_PREFIX + client.session_id
        if self._presence_address not in (None, address):
            # The relay client reconnected under a new session id. A clasp_fast relay has already
            # removed the old entry and refuses this write (only a session writes its own presence).
            self._spawn(self._withdraw_quietly(self._presence_address))
        self._presence_address = address
        value = {"client_id": self.client_id, "session_id": client.session_id, "features": list(self.features),
                 "ttl": self.presence_ttl}
        await client.set(address, value, ttl=Ttl.absolute(self.presence_ttl), wait=wait)
        await self._announce()

    async def _withdraw_quietly(self, address: str) -> None:
        try:
            await self.client.set(address, None, ttl=Ttl.absolute(1))
        except ClaspError:
            pass

    async def _refresh_presence(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.presence_interval)
            self._forget_stale()
            try:
                await self._publish_presence()
            except ClaspError as exc:
                log.info("presence refresh failed: %s", exc)

    def _on_relay_reconnect(self) -> None:
        if not self._closed:
            self._spawn(self._publish_presence())

    # -- connecting ---------------------------------------------------------------------

    def connection(self, id: str) -> Peer | None:
        """The open connection to the peer with client id or session id ``id``, if any."""
        peer = self._connections.get(id)
        if peer is None:
            owner = self.find_peer(id)
            if owner is not None:  # a later claimant of the same client id is not this peer
                peer = self._connections.get(owner.session_id)
            else:
                peer = next((c for c in self._connections.values() if c.client_id == id), None)
        return peer if peer is not None and peer.connected else None

    @property
    def connections(self) -> list[Peer]:
        return [peer for peer in self._connections.values() if peer.connected]

    async def connect_to_peer(self, id: str, *, timeout: float | None = None) -> Peer:
        """Connect to the peer with client id or session id ``id`` (or return the open connection).

        An unknown id that looks like a session id is tried directly (reference peers); any other
        unknown id is waited for up to ``discovery_timeout``. Raises ``TransportError`` naming the
        peer and the step (discovery, offer, answer, ice, channel open) on failure or refusal.
        """
        if self.client is None:
            raise TransportError("ClaspP2P is not connected; call connect() first", peer=id, step="discovery")
        existing = self.connection(id)
        if existing is not None:
            return existing
        info = self.find_peer(id)
        if info is None:
            if _SESSION_ID.match(id):
                info = self._peers.setdefault(id, PeerInfo(session_id=id, source="offer"))
            else:
                info = await self.wait_for_peer(id, timeout)
        session_id = info.session_id
        existing = self.connection(session_id)
        if existing is not None:
            return existing
        future = self._pending.get(session_id)
        if future is None:
            future = self._pending[session_id] = asyncio.get_running_loop().create_future()
            self._attempts[session_id] = self._spawn(self._offer(info, future))
        return await asyncio.shield(future)

    async def _offer(self, info: PeerInfo, future: asyncio.Future) -> None:
        session_id = info.session_id
        correlation_id = new_correlation_id(self.session_id or "", session_id)
        self._remember(correlation_id)
        transport = WebRtcTransport(self.rtc_config, self.client.signaling, session_id, pump_signals=False,
                                    correlation_id=correlation_id)
        self._transports[session_id] = transport
        try:
            await transport.start()
        except asyncio.CancelledError:
            if self._transports.get(session_id) is transport:
                del self._transports[session_id]
            reason = self._refusals.pop(session_id, None)
            if reason is not None:
                self._finish_pending(session_id, exc=TransportError(
                    f"the peer refused the connection: {reason}", peer=session_id, step="offer"))
            # Otherwise a glare handover: the answering side completes the same future.
            return
        except Exception as exc:
            if self._transports.get(session_id) is transport:
                del self._transports[session_id]
            self._finish_pending(session_id, exc=exc)
            return
        finally:
            if self._attempts.get(session_id) is asyncio.current_task():
                del self._attempts[session_id]
        self._adopt(transport, info, incoming=False)

    def _finish_pending(self, session_id: str, peer: Peer | None = None, exc: Exception | None = None) -> None:
        future = self._pending.pop(session_id, None)
        if future is None or future.done():
            return
        if peer is not None:
            future.set_result(peer)
        else:
            future.set_exception(exc)
            future.exception()  # nobody may be waiting

    def _adopt(self, transport: WebRtcTransport, info: PeerInfo, *, incoming: bool) -> Peer:
        peer = Peer(transport, info, self)
        self._connections[info.session_id] = peer
        peer.on_close(self._on_peer_closed)
        self._finish_pending(info.session_id, peer=peer)
        self._notify(self._on_connection, peer)
        peer.start()
        if incoming:
            self._incoming.append(peer)
            self._incoming_changed.set()
        return peer

    def _on_peer_closed(self, peer: Peer, reason: str | None) -> None:
        if self._connections.get(peer.session_id) is peer:
            del self._connections[peer.session_id]
        if self._transports.get(peer.session_id) is peer.transport:
            del self._transports[peer.session_id]
        with contextlib.suppress(ValueError):
            self._incoming.remove(peer)
        self._notify(self._on_disconnection, peer, reason)

    async def _pump_signals(self) -> None:
        async for raw in self.client.signaling:
            signal = parse_signal(raw)
            if signal is None:
                continue
            try:
                self._on_signal(signal)
            except Exception as exc:
                self._report(exc)

    def _remember(self, correlation_id: str) -> None:
        self._correlation_ids[correlation_id] = None
        if len(self._correlation_ids) > 1024:
            del self._correlation_ids[next(iter(self._correlation_ids))]

    def _transport_for(self, sender: str, correlation_id: str) -> WebRtcTransport | None:
        transport = self._transports.get(sender)
        if transport is not None and transport.correlation_id == correlation_id:
            return transport
        transport = self._answering.get(correlation_id)
        return transport if transport is not None and transport.peer == sender else None

    def _on_signal(self, signal: dict[str, object]) -> None:
        sender = str(signal["from"])
        kind = signal["type"]
        correlation_id = str(signal["correlation_id"])
        if kind == "offer":
            self._on_offer(signal, self._transports.get(sender))
            return
        # Each signal goes to the connection it names, whatever its timing: an offer's transport
        # exists (and queues signals) from the moment the offer arrives.
        transport = self._transport_for(sender, correlation_id)
        if transport is None:
            # A disconnected for a connection that has ended is expected; it must not end a newer one.
            if kind != "disconnected" and correlation_id not in self._correlation_ids:
                self._report(SignalingError(
                    f"{kind} from {sender} for unknown correlation id {correlation_id!r} ignored",
                    peer=sender, step=str(kind)))
            return
        if kind == "disconnected":
            attempt = self._attempts.get(sender)
            if (transport.state == "connecting" and not transport.negotiated and attempt is not None
                    and transport is self._transports.get(sender)):
                self._refusals[sender] = str(signal.get("reason") or "disconnected")
                attempt.cancel()
                return
        transport.handle_signal(signal)

    def _on_offer(self, offer: dict[str, object], current: WebRtcTransport | None) -> None:
        sender = str(offer["from"])
        correlation_id = str(offer["correlation_id"])
        if correlation_id in self._correlation_ids:
            return  # a repeated offer
        self._remember(correlation_id)
        if any(t.peer == sender for t in self._answering.values()):
            return  # another offer from that session is being handled
        if current is not None and current.state in ("new", "connecting") and current.role != "answerer":
            # Both sides offered at once: the smaller session id stays the offerer.
            if (self.session_id or "") < sender:
                return
            attempt = self._attempts.pop(sender, None)
            if attempt is not None:
                attempt.cancel()
            self._transports.pop(sender, None)
        elif current is not None and current.state in ("new", "connecting"):
            return  # an offer while answering another one
        info = self._peers.get(sender)
        if info is None:
            info = self._peers[sender] = PeerInfo(session_id=sender, source="offer")
        if isinstance(offer.get("features"), (list, tuple)) and not info.features:
            info.features = tuple(f for f in offer["features"] if isinstance(f, str))
        transport = WebRtcTransport(self.rtc_config, self.client.signaling, sender, pump_signals=False)
        self._answering[correlation_id] = transport
        self._spawn(self._answer(offer, info, current, transport))

    async def _may_answer(self, info: PeerInfo, correlation_id: str, previous: WebRtcTransport | None) -> bool:
        """Whether to answer an offer: not when a live connection to its sender still answers
        (the relay may not check "from"), nor when ``accept`` refuses (the offerer is told)."""
        sender = info.session_id
        if previous is not None and previous.state == "connected":
            if await previous.probe():
                self._report(SignalingError(
                    f"offer from {sender} ignored: the open connection to that session still answers, "
                    "so the offer did not come from its peer", peer=sender, step="offer"))
                return False
            # Not told with "disconnected": the peer would take it for its new connection.
            await previous.abort("replaced by a new connection")
        if self._accept is not None:
            decision = self._accept(info)
            if inspect.isawaitable(decision):
                decision = await decision
            if not decision:
                await self.client.signaling.send_signal(sender, {
                    "type": "disconnected", "correlation_id": correlation_id, "reason": "refused"})
                return False
        return True

    async def _answer(
        self, offer: dict[str, object], info: PeerInfo, previous: WebRtcTransport | None, transport: WebRtcTransport
    ) -> None:
        sender = info.session_id
        correlation_id = str(offer["correlation_id"])
        answer = False
        try:
            answer = await self._may_answer(info, correlation_id, previous)
        finally:
            if self._answering.get(correlation_id) is transport:
                del self._answering[correlation_id]
            if answer:  # in the same step, so no signal finds neither
                self._transports[sender] = transport
            else:
                await transport.abort("offer not answered")
        if not answer:
            return
        try:
            await transport.start(offer)
        except Exception as exc:
            if self._transports.get(sender) is transport:
                del self._transports[sender]
            self._report(exc)
            self._finish_pending(sender, exc=exc)
            return
        self._adopt(transport, info, incoming=True)

    # -- incoming peers -----------------------------------------------------------------

    def incoming(self) -> AsyncIterator[Peer]:
        """Accepted incoming connections as they open; ends when this object closes.

        Connections wait here until taken; one that closes before it is taken is dropped.
        """
        return self

    def __aiter__(self) -> AsyncIterator[Peer]:
        return self

    async def __anext__(self) -> Peer:
        while not self._incoming:
            if self._closed:
                raise StopAsyncIteration
            self._incoming_changed.clear()
            await self._incoming_changed.wait()
        return self._incoming.popleft()

"""``ClaspP2P``: finds peers through a :class:`~clasp_fast.p2p.discovery.Discovery` and connects to
them over WebRTC, signaling through any :class:`~clasp_fast.signaling.SignalingChannel`.

::

    async with ClaspP2P("ws://127.0.0.1:7330", client_id="sensor-1",
                        rtc_config=WebRtcConfig(host_addresses=["127.0.0.1"])) as p2p:
        async with await p2p.connect_to_peer("viewer") as peer:
            await peer.set("/sensor/gain", 0.5)
            await peer.stream("/sensor/accel", numpy.zeros(64))

            @peer.on("/viewer/**")
            def changed(value, address):
                ...

Through a relay (a URL or a connected ``ClaspClient``) signals travel as PUBLISHes and peers are
found by their presence params and announces (:class:`~clasp_fast.p2p.discovery.RelayDiscovery`).
Any other signaling channel works too -- ``ClaspP2P(InMemorySignaling(...), discovery=...)``,
a byte stream -- with a discovery of its own (by default none: peers are known by session id).

Peers are looked up by the client id they chose or by their session id; a peer that only speaks the
reference protocol (no presence, no ``features``) is reachable by its session id. An entry from
presence or an announce is live for ``ttl`` seconds after it was last heard (at most
:data:`~clasp_fast.p2p.directory.MAX_PRESENCE_TTL`). When two live sessions claim one client id,
the claim seen first keeps it; the other is reported to ``on_error`` and ignored until the first
one lapses or withdraws.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import uuid
import weakref
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator

from ..conflation import ConflationPolicy
from ..errors import SignalingError, TransportError
from ..fanout import FanoutGroup, Overflow
from ..metrics import Metrics, MetricsServer, Sample
from ..relay_client import ClaspClient
from ..runtime.dispatch import Dispatcher
from ..runtime.sink import ErrorCallback, ErrorSink
from ..runtime.tasks import TaskSet
from ..transport.signaling import SignalingChannel, new_correlation_id, parse_signal
from ..transport.webrtc import LOCAL_FEATURES, WebRtcConfig, WebRtcTransport
from ..wire.protocol import ANNOUNCE_FEATURES, DEFAULT_RELAY_URL, PRESENCE_FEATURE, PRESENCE_PREFIX
from .directory import PeerDirectory, PeerInfo
from .discovery import Discovery, RelayDiscovery, StaticDiscovery
from .peer import Peer, PeerStats

__all__ = ["ClaspP2P", "Peer", "PeerInfo", "PeerStats", "AcceptHook", "PRESENCE_PREFIX", "DEFAULT_RELAY_URL"]

log = logging.getLogger("clasp_fast.p2p")

# What the reference announce lists (docs/protocol.md §10.3), then clasp_fast's own features.
BASE_FEATURES = (*ANNOUNCE_FEATURES, PRESENCE_FEATURE, *LOCAL_FEATURES)
_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REMEMBERED_CORRELATION_IDS = 1024

AcceptHook = Callable[[PeerInfo], "bool | Awaitable[bool]"]


class _Session:
    """What this side holds for one peer session."""

    __slots__ = ("transport", "peer", "connecting", "attempt", "refusal")

    def __init__(self) -> None:
        self.transport: WebRtcTransport | None = None  # the current connection (set up or up)
        self.peer: Peer | None = None  # the open connection handed to the application
        self.connecting: asyncio.Future[Peer] | None = None  # what connect_to_peer callers wait for
        self.attempt: asyncio.Task[None] | None = None  # our offer, while it runs
        self.refusal: str | None = None  # why the peer refused our offer

    @property
    def idle(self) -> bool:
        return self.transport is None and self.peer is None and self.connecting is None and self.attempt is None


class ClaspP2P:
    """Discovery, signaling and WebRTC connections to other CLASP peers.

    ``signaling`` is a relay URL, an already connected :class:`ClaspClient` (then shared, not
    closed) or any :class:`SignalingChannel`; ``discovery`` decides how peers are found (default:
    presence and announces through the relay, or none for another channel). ``token`` is sent in
    HELLO to a relay in authenticated mode. ``accept(info)`` decides on incoming offers (default:
    accept all); a refused offerer gets a ``disconnected`` signal with reason ``"refused"``.

    ``errors`` and ``dispatcher`` are for an owner that builds this object (the hybrid client):
    errors then reach the owner's ``on_error`` callbacks and every peer's messages its callbacks.
    """

    def __init__(
        self,
        signaling: str | ClaspClient | SignalingChannel = DEFAULT_RELAY_URL,
        *,
        client_id: str | None = None,
        rtc_config: WebRtcConfig | None = None,
        name: str | None = None,
        token: str | None = None,
        accept: AcceptHook | None = None,
        features: Iterable[str] = (),
        presence_interval: float = 5.0,
        discovery_timeout: float = 5.0,
        discovery: Discovery | None = None,
        errors: ErrorSink | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.client: ClaspClient | None = None
        self.url: str | None = None
        self._signaling: SignalingChannel | None = None
        if isinstance(signaling, ClaspClient):
            self.client = signaling
            self.url = signaling.url
        elif isinstance(signaling, str):
            self.url = signaling
        elif isinstance(signaling, SignalingChannel):
            self._signaling = signaling
        else:
            raise TypeError(f"signaling must be a relay URL, a ClaspClient or a SignalingChannel, "
                            f"got {type(signaling).__name__}")
        self._owns_client = isinstance(signaling, str)
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
        self.errors = errors if errors is not None else ErrorSink(log)
        self._dispatcher = dispatcher
        self._accept = accept
        self._discovery = discovery
        self._tasks = TaskSet(self.errors.report)
        self._directory = PeerDirectory(
            self.errors, self.presence_ttl, own_session=lambda: self.session_id,
            in_use=lambda session_id: self._sessions.get(session_id, _IDLE).peer is not None)
        self._sessions: dict[str, _Session] = {}
        self._answering: dict[str, WebRtcTransport] = {}  # by correlation id: offers not answered yet
        self._correlation_ids: dict[str, None] = {}  # every id we offered or were offered (bounded)
        self._on_connection: list[Callable[[Peer], Any]] = []
        self._on_disconnection: list[Callable[[Peer, str | None], Any]] = []
        # Accepted incoming connections not yet taken by incoming(); a peer leaves when it closes,
        # so connections nobody iterates over are not kept alive.
        self._incoming: deque[Peer] = deque()
        self._incoming_changed = asyncio.Event()
        self._closed = False
        self._started = False
        #: Counters and gauges of every open connection (docs/streams.md); :meth:`serve_metrics` exposes them.
        self.metrics = Metrics()
        self.metrics.add_source(self._metrics_samples)
        self.metrics_server: MetricsServer | None = None
        self._groups: weakref.WeakSet[FanoutGroup] = weakref.WeakSet()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        if self._signaling is not None:
            return self._signaling.session_id or None
        return self.client.session_id if self.client is not None else None

    @property
    def signaling(self) -> SignalingChannel | None:
        """The signaling channel (for a relay: the client's, once connected)."""
        return self._signaling

    async def connect(self) -> "ClaspP2P":
        """Start: connect to the relay (unless a client or channel was given), then discovery."""
        if self._started:
            return self
        self._started = True
        try:
            if self._signaling is None:
                if self.client is None:
                    assert self.url is not None
                    self.client = await ClaspClient.connect(self.url, name=self.name, token=self.token)
                client = self.client
                self._signaling = client.signaling
                if client.errors is not self.errors:
                    client.on_error(self.errors.report)
                if self._discovery is None:
                    self._discovery = RelayDiscovery(client)
            elif self._discovery is None:
                self._discovery = StaticDiscovery()
            self._tasks.spawn(self._pump_signals())
            await self._discovery.start(self, self._directory)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close every peer connection, withdraw from discovery and (if this object opened it) the relay client."""
        if self._closed:
            return
        self._closed = True
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = None
        sessions = list(self._sessions.items())
        for _, session in sessions:
            if session.attempt is not None:
                session.attempt.cancel()
        for session_id, _ in sessions:
            self._finish_pending(session_id, exc=TransportError("ClaspP2P closed", peer=session_id, step="close"))
        peers = [session.peer for _, session in sessions if session.peer is not None]
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
        for transport in [*(s.transport for s in self._sessions.values() if s.transport is not None),
                          *self._answering.values()]:
            await transport.close()
        if self._discovery is not None:
            await self._discovery.close()
        await self._tasks.cancel_and_wait()
        self._incoming_changed.set()
        if self.client is not None and self._owns_client:
            await self.client.close()

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

    def on_disconnection(self, callback: Callable[[Peer, str | None], Any]) -> Callable[[Peer, str | None], Any]:
        """Call ``callback(peer, reason)`` when a connection ends; usable as a decorator."""
        self._on_disconnection.append(callback)
        return callback

    def on_error(self, callback: ErrorCallback) -> ErrorCallback:
        """Call ``callback(exc)`` for errors nobody awaits (failed incoming connections, bad signals,
        malformed frames from peers)."""
        return self.errors.add(callback)

    def set_accept(self, hook: AcceptHook | None) -> None:
        """Decide on incoming offers with ``hook(info) -> bool`` (may be async); None accepts all."""
        self._accept = hook

    # -- discovery ----------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        """Known peers (from discovery and offers), stale entries left out."""
        return self._directory.peers()

    def find_peer(self, id: str) -> PeerInfo | None:
        """The known peer whose session id or client id is ``id``.

        When two live sessions claim the same client id, the claim seen first wins: ``id`` keeps
        resolving to that session (the later claimant is reported once to :meth:`on_error`).
        """
        return self._directory.find(id)

    async def wait_for_peer(self, id: str, timeout: float | None = None) -> PeerInfo:
        """Wait until a peer with client id or session id ``id`` is known."""
        return await self._directory.wait_for(id, self.discovery_timeout if timeout is None else timeout)

    # -- connecting ---------------------------------------------------------------------

    def connection(self, id: str) -> Peer | None:
        """The open connection to the peer with client id or session id ``id``, if any."""
        peer = self._peer_of(id)
        if peer is None:
            owner = self.find_peer(id)
            if owner is not None:  # a later claimant of the same client id is not this peer
                peer = self._peer_of(owner.session_id)
            else:
                peer = next((s.peer for s in self._sessions.values()
                             if s.peer is not None and s.peer.client_id == id), None)
        return peer if peer is not None and peer.connected else None

    def _peer_of(self, session_id: str) -> Peer | None:
        session = self._sessions.get(session_id)
        return None if session is None else session.peer

    @property
    def connections(self) -> list[Peer]:
        return [s.peer for s in self._sessions.values() if s.peer is not None and s.peer.connected]

    # -- fan-out, metrics ---------------------------------------------------------------

    def group(
        self,
        ids: Iterable[str],
        policy: ConflationPolicy | str | Iterable[str] | None = None,
        *,
        overflow: Overflow = "conflate",
        max_buffered: int = 64 * 1024,
        max_backlog: int = 10_000,
    ) -> FanoutGroup:
        """A :class:`~clasp_fast.fanout.FanoutGroup` over the open connections to ``ids`` (client or
        session ids): ``group.send(message)`` encodes once and offers the frame to each peer, each
        with its own backpressure; ``policy`` (patterns or a ConflationPolicy) says what a backed-up
        peer may have conflated, ``overflow="drop"`` also drops its Fire-QoS messages meanwhile.

        Raises TransportError naming every id that is not an open connection (nothing is built).
        A peer leaves the group when its connection closes.
        """
        ids = list(ids)
        if policy is not None and not isinstance(policy, ConflationPolicy):
            policy = ConflationPolicy(policy)
        peers = {id: self.connection(id) for id in ids}
        unknown = [id for id, peer in peers.items() if peer is None]
        if unknown:
            known = ", ".join(repr(p.client_id or p.session_id) for p in self.connections) or "none"
            raise TransportError(f"no open connection to {', '.join(map(repr, unknown))} for a fan-out group "
                                 f"(connected: {known})", peer=unknown[0], step="fan-out")
        group = FanoutGroup(policy, overflow=overflow, max_buffered=max_buffered, max_backlog=max_backlog)
        for id, peer in peers.items():
            assert peer is not None
            group.add(id, peer.transport.sender)
        self._groups.add(group)
        return group

    def _leave_groups(self, peer: Peer) -> None:
        for group in self._groups:
            group.discard_sender(peer.transport.sender)

    def _metrics_samples(self) -> Iterator[Sample]:
        connections = self.connections
        for peer in connections:
            yield from peer.transport.metrics_samples(peer.client_id or peer.session_id)
        for group in self._groups:
            for lane in group.stats():
                yield "clasp_conflated_total", ("p2p", lane.member, f"fanout:{lane.channel}"), lane.conflated
                yield "clasp_drops_total", ("p2p", lane.member, f"fanout:{lane.channel}", "fanout_fire"), lane.dropped
                yield "clasp_queue_depth", ("p2p", lane.member, f"fanout:{lane.channel}"), lane.waiting
        yield "clasp_peers", (), len(connections)

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        """The figures of every open connection as plain data (the same as the metrics endpoint)."""
        return self.metrics.snapshot()

    async def serve_metrics(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve :attr:`metrics` on ``http://host:port/metrics`` until :meth:`close` (MetricsError when
        the port is in use or prometheus_client, the ``metrics`` extra, is missing)."""
        if self.metrics_server is not None:
            raise RuntimeError(f"metrics are served already on {self.metrics_server.url}")
        self.metrics_server = await self.metrics.serve(port, host)
        return self.metrics_server

    async def connect_to_peer(self, id: str, *, timeout: float | None = None) -> Peer:
        """Connect to the peer with client id or session id ``id`` (or return the open connection).

        An unknown id that looks like a session id is tried directly (reference peers); any other
        unknown id is waited for up to ``discovery_timeout``. Raises ``TransportError`` naming the
        peer and the step (discovery, offer, answer, ice, channel open) on failure or refusal.
        """
        if self._signaling is None or self._closed:
            raise TransportError("ClaspP2P is not connected; call connect() first", peer=id, step="discovery")
        existing = self.connection(id)
        if existing is not None:
            return existing
        info = self.find_peer(id)
        if info is None:
            if _SESSION_ID.match(id):
                info = self._directory.add(id, "offer")
            else:
                info = await self.wait_for_peer(id, timeout)
        session_id = info.session_id
        existing = self.connection(session_id)
        if existing is not None:
            return existing
        session = self._session(session_id)
        if session.connecting is None:
            session.connecting = asyncio.get_running_loop().create_future()
            session.attempt = self._tasks.spawn(self._offer(info, session))
        return await asyncio.shield(session.connecting)

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
        return session

    def _tidy(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None and session.idle and session.refusal is None:
            del self._sessions[session_id]

    def _new_transport(self, session_id: str, correlation_id: str | None = None) -> WebRtcTransport:
        assert self._signaling is not None
        return WebRtcTransport(self.rtc_config, self._signaling, session_id, pump_signals=False,
                               correlation_id=correlation_id, errors=self.errors)

    async def _offer(self, info: PeerInfo, session: _Session) -> None:
        session_id = info.session_id
        correlation_id = new_correlation_id(self.session_id or "", session_id)
        self._remember(correlation_id)
        transport = session.transport = self._new_transport(session_id, correlation_id)
        try:
            await transport.start()
        except asyncio.CancelledError:
            if session.transport is transport:
                session.transport = None
            reason, session.refusal = session.refusal, None
            if reason is not None:
                self._finish_pending(session_id, exc=TransportError(
                    f"the peer refused the connection: {reason}", peer=session_id, step="offer"))
            # Otherwise a glare handover: the answering side completes the same future.
            return
        except Exception as exc:
            if session.transport is transport:
                session.transport = None
            self._finish_pending(session_id, exc=exc)
            return
        finally:
            if session.attempt is asyncio.current_task():
                session.attempt = None
            self._tidy(session_id)
        self._adopt(transport, info, incoming=False)

    def _finish_pending(self, session_id: str, peer: Peer | None = None, exc: BaseException | None = None) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.connecting is None:
            return
        future, session.connecting = session.connecting, None
        if not future.done():
            if peer is not None:
                future.set_result(peer)
            else:
                future.set_exception(exc or TransportError("no connection", peer=session_id))
                future.exception()  # nobody may be waiting
        self._tidy(session_id)

    def _adopt(self, transport: WebRtcTransport, info: PeerInfo, *, incoming: bool) -> Peer:
        peer = Peer(transport, info, errors=self.errors, dispatcher=self._dispatcher)
        self._session(info.session_id).peer = peer
        peer.on_close(self._on_peer_closed)
        self._finish_pending(info.session_id, peer=peer)
        self._tasks.notify(self._on_connection, peer)
        peer.start()
        if incoming:
            self._incoming.append(peer)
            self._incoming_changed.set()
        return peer

    def _on_peer_closed(self, peer: Peer, reason: str | None) -> None:
        self._leave_groups(peer)
        session = self._sessions.get(peer.session_id)
        if session is not None:
            if session.peer is peer:
                session.peer = None
            if session.transport is peer.transport:
                session.transport = None
            self._tidy(peer.session_id)
        with contextlib.suppress(ValueError):
            self._incoming.remove(peer)
        self._tasks.notify(self._on_disconnection, peer, reason)

    # -- signals ------------------------------------------------------------------------

    async def _pump_signals(self) -> None:
        assert self._signaling is not None
        async for raw in self._signaling:
            signal = parse_signal(raw)
            if signal is None:
                continue
            try:
                self._on_signal(signal)
            except Exception as exc:
                self.errors.report(exc)

    def _remember(self, correlation_id: str) -> None:
        self._correlation_ids[correlation_id] = None
        if len(self._correlation_ids) > _REMEMBERED_CORRELATION_IDS:
            del self._correlation_ids[next(iter(self._correlation_ids))]

    def _transport_for(self, sender: str, correlation_id: str) -> WebRtcTransport | None:
        session = self._sessions.get(sender)
        transport = None if session is None else session.transport
        if transport is not None and transport.correlation_id == correlation_id:
            return transport
        transport = self._answering.get(correlation_id)
        return transport if transport is not None and transport.peer == sender else None

    def _on_signal(self, signal: dict[str, object]) -> None:
        sender = str(signal["from"])
        kind = signal["type"]
        correlation_id = str(signal["correlation_id"])
        session = self._sessions.get(sender)
        if kind == "offer":
            self._on_offer(signal, None if session is None else session.transport)
            return
        # Each signal goes to the connection it names, whatever its timing: an offer's transport
        # exists (and queues signals) from the moment the offer arrives.
        transport = self._transport_for(sender, correlation_id)
        if transport is None:
            # A disconnected for a connection that has ended is expected; it must not end a newer one.
            if kind != "disconnected" and correlation_id not in self._correlation_ids:
                self.errors.report(SignalingError(
                    f"{kind} from {sender} for unknown correlation id {correlation_id!r} ignored",
                    peer=sender, step=str(kind)))
            return
        if kind == "disconnected" and session is not None:
            attempt = session.attempt
            if (transport.state == "connecting" and not transport.negotiated and attempt is not None
                    and transport is session.transport):
                session.refusal = str(signal.get("reason") or "disconnected")
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
            session = self._session(sender)
            attempt, session.attempt = session.attempt, None
            if attempt is not None:
                attempt.cancel()
            session.transport = None
        elif current is not None and current.state in ("new", "connecting"):
            return  # an offer while answering another one
        info = self._directory.add(sender, "offer")
        features = offer.get("features")
        if isinstance(features, (list, tuple)) and not info.features:
            info.features = tuple(f for f in features if isinstance(f, str))
        transport = self._new_transport(sender)
        self._answering[correlation_id] = transport
        self._tasks.spawn(self._answer(offer, info, current, transport))

    async def _may_answer(self, info: PeerInfo, correlation_id: str, previous: WebRtcTransport | None) -> bool:
        """Whether to answer an offer: not when a live connection to its sender still answers
        (the relay may not check "from"), nor when ``accept`` refuses (the offerer is told)."""
        sender = info.session_id
        if previous is not None and previous.state == "connected":
            if await previous.probe():
                self.errors.report(SignalingError(
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
                assert self._signaling is not None
                await self._signaling.send_signal(sender, {
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
                self._session(sender).transport = transport
            else:
                await transport.abort("offer not answered")
        if not answer:
            return
        try:
            await transport.start(offer)
        except Exception as exc:
            session = self._sessions.get(sender)
            if session is not None and session.transport is transport:
                session.transport = None
            self.errors.report(exc)
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


_IDLE = _Session()

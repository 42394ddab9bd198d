"""One P2P connection to another CLASP peer: sending, callbacks by pattern, params and GET."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..clock import PeerClock
from ..conflation import ConflatingHandler, ConflationPolicy
from ..errors import EncodeError, ProtocolError, TransportError
from ..runtime.dispatch import Dispatcher, make_dispatcher, wants_message
from ..runtime.sink import ErrorSink
from ..runtime.tasks import TaskSet
from ..transport.webrtc import ChannelSpec, WebRtcStats, WebRtcTransport
from ..wire.address import validate_pattern
from ..wire.messages import (
    MISSING,
    Bundle,
    Get,
    Param,
    Ping,
    Pong,
    Publish,
    Set,
    Snapshot,
    Ttl,
    delivered,
    stream_message,
)
from ..wire.protocol import now_us
from .directory import PeerInfo

__all__ = ["MessageHook", "Peer", "PeerStats"]

log = logging.getLogger("clasp_fast.p2p")

#: Answers (PONG, GET's SNAPSHOT) a peer may leave unread before further requests go unanswered.
MAX_PENDING_ANSWERS = 65_536

#: ``hook(peer, message)`` sees each received message first; a True result consumes it.
MessageHook = Callable[["Peer", Any], bool]


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


class Peer:
    """One P2P connection to another CLASP peer.

    Errors nobody awaits go to ``errors`` (the owning ``ClaspP2P``'s sink; without one, a sink of
    its own that logs). Callbacks registered with :meth:`on` live in ``dispatcher``: the peer's own
    unless its owner passes one (a hybrid client delivers every peer's messages to its callbacks).
    Each peer keeps the params it set and was sent, and answers a GET with a SNAPSHOT as a router
    would (an empty SNAPSHOT when it holds no value).
    """

    def __init__(self, transport: WebRtcTransport, info: PeerInfo, *, errors: ErrorSink | None = None,
                 dispatcher: Dispatcher | None = None) -> None:
        self.transport = transport
        self.info = info
        self.errors = errors if errors is not None else ErrorSink(log)
        self._tasks = TaskSet(self._task_failed)
        self.dispatcher = dispatcher if dispatcher is not None else make_dispatcher(
            self._tasks.spawn, self.errors.report, 256)
        self._params: dict[str, Param] = {}
        self._gets: deque[tuple[str, asyncio.Future[Any]]] = deque()  # GETs waiting for an answer, oldest first
        self._hooks: list[MessageHook] = []
        self._close_callbacks: list[Callable[["Peer", str | None], Any]] = []
        self._sent = dict.fromkeys(("set", "emit", "stream", "gesture", "publish", "get", "other"), 0)
        self._received = dict.fromkeys(("set", "publish", "get", "snapshot", "unsolicited_snapshot", "bundle",
                                         "unanswered", "other"), 0)
        self._answers: deque[Any] = deque()  # PONGs and GET answers not yet handed to the channel
        self._closed_notified = False
        transport.add_state_listener(self._on_state)

    def start(self) -> None:
        """Start delivering received messages (those that arrived while connecting first).

        ``ClaspP2P`` calls this after its ``on_connection`` callbacks ran, so handlers registered
        there see every message.
        """
        self.transport.receiver.on_message(self._on_message)

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
        await self.transport.sender.send(message, reliable=reliable)
        if type(message) is Set:
            self._store(message.address, message.value, self.transport.signaling.session_id)
        self._sent["other"] += 1

    async def send_many(self, messages: Iterable[Any], *, reliable: bool | None = None) -> int:
        """Send ready-made messages (or encoded frames) in order in one call, as :meth:`send` would
        one by one (``WebRtcSender.send_many``); returns how many were sent. The SETs among them
        are held like those of :meth:`set` once sent: when item N cannot be encoded (``EncodeError``
        with ``item`` N), those before it."""
        items = list(messages)
        try:
            sent = await self.transport.sender.send_many(items, reliable=reliable)
        except EncodeError as exc:
            if exc.item is not None:
                self._hold_sets(items[:exc.item])
                self._sent["other"] += exc.item
            raise
        self._hold_sets(items)
        self._sent["other"] += sent
        return sent

    def _hold_sets(self, messages: list[Any]) -> None:
        session = self.transport.signaling.session_id
        for message in messages:
            if type(message) is Set:
                self._store(message.address, message.value, session)

    async def set(self, address: str, value: Any, *, ttl: Ttl | None = None) -> int:
        """Write a param on the peer (reliable channel); return the revision this side now holds."""
        await self.transport.sender.send(Set(address=address, value=value, ttl=ttl))
        revision = self._store(address, value, self.transport.signaling.session_id)
        self._sent["set"] += 1
        return revision

    async def emit(self, address: str, value: Any = MISSING) -> None:
        """Send an event (reliable channel)."""
        await self.transport.sender.send(Publish(address=address, signal="event", value=value))
        self._sent["emit"] += 1

    async def stream(self, address: str, samples: Any, *, rate: int | None = None) -> None:
        """Send stream samples (a numpy array or sequence of floats) or one value on the unreliable channel."""
        await self.transport.sender.send(stream_message(address, samples, rate))
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

    def on(self, pattern: str, callback: Callable[..., Any] | None = None, *,
           types: Iterable[str] | None = None, conflate: bool | ConflationPolicy = False) -> Any:
        """Call ``callback(value, address)`` (or ``(value, address, message)``) for SETs and PUBLISHes
        from the peer matching ``pattern``. Without ``callback`` it is a decorator; with one it returns
        the subscription id (for :meth:`off`).

        ``conflate`` (True: the values under ``pattern``; or a ConflationPolicy): for a callback
        slower than the stream, messages wait in a latest-value queue and the callback gets one at
        a time (awaited when it is a coroutine function), always the newest value of each address
        (docs/streams.md)."""
        validate_pattern(pattern)

        def register(fn: Callable[..., Any]) -> int:
            if conflate is not False:
                fn = self._conflating(fn, ConflationPolicy(pattern) if conflate is True else conflate)
            return self.dispatcher.add(pattern, fn, types).id

        if callback is not None:
            return register(callback)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            register(fn)
            return fn

        return decorator

    def _conflating(self, callback: Callable[..., Any], policy: ConflationPolicy) -> Callable[..., Any]:
        """``callback`` behind a :class:`ConflatingHandler`, as a dispatcher callback."""
        if not isinstance(policy, ConflationPolicy):
            raise TypeError(f"conflate must be True or a ConflationPolicy, got {type(policy).__name__}")
        with_message = wants_message(callback)

        def call(item: tuple[Any, str, Any]) -> Any:
            value, address, message = item
            return callback(value, address, message) if with_message else callback(value, address)

        handler = ConflatingHandler(call, policy, on_error=self.errors.report)

        def on_message(value: Any, address: str, message: Any) -> None:
            handler(message, (value, address, message))

        return on_message

    def off(self, subscription_id: int) -> None:
        """Remove a subscription made with :meth:`on`."""
        self.dispatcher.remove(subscription_id)

    def add_message_hook(self, hook: MessageHook) -> None:
        """Call ``hook(peer, message)`` first for each received message; a True result consumes it."""
        self._hooks.append(hook)

    def on_close(self, callback: Callable[["Peer", str | None], Any]) -> Callable[["Peer", str | None], Any]:
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
                                      timestamp=now_us())
        return revision

    def _on_message(self, message: Any) -> None:
        for hook in self._hooks:
            try:
                if hook(self, message):
                    return
            except Exception as exc:
                self.errors.report(exc)
                return
        self.apply(message)

    def apply(self, message: Any) -> None:
        """Handle one message from the peer: store, dispatch, answer (used after message hooks)."""
        kind = type(message)
        if kind is Set:
            self._received["set"] += 1
            self._store(message.address, message.value, self.session_id)
            self.dispatcher.dispatch(message.address, message.value, "param", message)
        elif kind is Publish:
            self._received["publish"] += 1
            value, signal = delivered(message)
            self.dispatcher.dispatch(message.address, value, signal, message)
        elif kind is Get:
            self._received["get"] += 1
            param = self._params.get(message.address)
            self._answer(Snapshot(params=[param] if param is not None else []))
        elif kind is Snapshot:
            self._received["snapshot"] += 1
            self._on_snapshot(message)
        elif kind is Bundle:
            self._received["bundle"] += 1
            for inner in message.messages:
                self.apply(inner)
        elif kind is Ping:
            self._answer(Pong())
        else:
            self._received["other"] += 1

    def _answer(self, reply: Any) -> None:
        """Send a PONG or a GET's SNAPSHOT on the reliable channel, in the order asked.

        Straight onto the channel while it has room; above its high-water mark the answers queue
        here and one task sends them as room comes, so a flood of PINGs costs no task per PING.
        A peer that asks more than ``MAX_PENDING_ANSWERS`` times without reading its answers is
        reported and its further requests go unanswered until the queue drains.
        """
        if not self._answers:
            try:
                self.transport.sender.send_nowait(reply, reliable=True)
                return
            except TransportError:
                pass  # above the high-water mark (or closing: the task below reports nothing then)
        if len(self._answers) >= MAX_PENDING_ANSWERS:
            self._received["unanswered"] += 1
            if self._received["unanswered"] == 1:
                self.errors.report(ProtocolError(
                    f"peer {self.session_id} sent {MAX_PENDING_ANSWERS} PINGs/GETs without reading the answers; "
                    f"further ones go unanswered until it does"))
            return
        self._answers.append(reply)
        if len(self._answers) == 1:
            self._tasks.spawn(self._send_answers())

    async def _send_answers(self) -> None:
        try:
            while self._answers:
                await self.transport.sender.send(self._answers[0], reliable=True)
                self._answers.popleft()
        finally:
            self._answers.clear()  # only non-empty when a send failed: the connection is going away

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
        self.errors.report(ProtocolError(f"peer {self.session_id} sent a SNAPSHOT ({addresses}) that answers no "
                                         f"waiting GET; ignored"))

    def _task_failed(self, exc: BaseException) -> None:
        # A send that fails because the connection is going away is not worth reporting.
        if not isinstance(exc, TransportError) or self.connected:
            self.errors.report(exc)

    def _on_state(self, state: str) -> None:
        if state in ("closed", "failed") and not self._closed_notified:
            self._closed_notified = True
            for _, future in self._gets:
                if not future.done():
                    future.set_exception(TransportError("connection closed", peer=self.session_id, step="get"))
            self._tasks.notify(self._close_callbacks, self, self.transport.close_reason)

    # -- stats and teardown -------------------------------------------------------------

    @property
    def clock(self) -> PeerClock | None:
        """The peer's clock (``offset_us``, ``rtt_us``, ``uncertainty_us``), estimated continuously over
        the control channel; None until the first exchange, and with a peer that does not answer
        clock probes (the browser module, an older peer)."""
        return self.transport.clock

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

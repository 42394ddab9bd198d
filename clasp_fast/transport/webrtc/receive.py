"""The receive path of a connection: DataChannel messages decoded slice by slice and handed to the
application as messages, with how each arrived (:class:`Delivery`)."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any, AsyncIterator, Callable, NamedTuple, Sequence

from ...conflation import ConflatingHandler, ConflationPolicy
from ...wire.codec import decode_slice, frame_count
from ...errors import DecodeError, TransportError
from ...runtime.sink import ErrorCallback, ErrorSink
from ..sctp import FastSctpTransport
from .channels import Channel, Channels, DeliveryFields
from .config import WebRtcConfig

__all__ = [
    "RECEIVE_BACKLOG_BYTES",
    "RECEIVE_SLICE_FRAMES",
    "Delivery",
    "DeliveryFields",
    "WebRtcReceiver",
    "current_delivery",
]

#: Frames of one received DataChannel message decoded and delivered per event-loop iteration; the
#: rest of a larger batch follows in later iterations (in order, and before any later message on
#: that channel), so one peer's huge batch does not hold up other peers and timers for its length.
RECEIVE_SLICE_FRAMES = 256
#: Under aiortc's own SCTP (``fast_sctp=False``): undecoded bytes a connection's channels may hold
#: while they work through batches slice by slice; beyond it they decode what they hold at once.
#: Under the fast SCTP path the backlog counts against the SCTP receive window instead, which bounds it.
RECEIVE_BACKLOG_BYTES = 1024 * 1024


class Delivery(NamedTuple):
    """How a received message arrived.

    ``peer``: the sending peer's session id; ``channel``: the DataChannel's label; ``frames``:
    frames in the DataChannel message that carried it (malformed ones included: 1 when the peer
    does not batch); ``size``: that DataChannel message's length in bytes.
    """

    peer: str
    channel: str
    frames: int
    size: int


_current_delivery: ContextVar[DeliveryFields | None] = ContextVar("clasp_fast_current_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The :class:`Delivery` of the received message being handled right now, else None.

    Valid inside message callbacks (``WebRtcReceiver.on_message``, ``Peer.on``, ``ClaspP2P.on``,
    the hybrid client's) and in tasks they start (a context variable).
    """
    fields = _current_delivery.get()
    return None if fields is None else Delivery._make(fields)


_END = object()


class WebRtcReceiver:
    """The receiving half: an async iterator of decoded messages, or a callback.

    Iteration ends when the connection closes. With :meth:`on_message` set, messages go to the
    callback instead of the queue; with neither reading, at most ``receive_queue_limit`` messages
    wait and later ones are dropped (counted in ``stats().dropped_received``). Malformed frames are
    reported to the connection's error sink (:meth:`on_error` adds a callback to it: a
    :class:`DecodeError` with the byte offset inside the DataChannel message and the field) and
    skipped; rejected signals, exceptions raised by the message callback and messages the SCTP
    layer refused are reported there too.

    The decoding: a received DataChannel message is decoded and delivered at most
    :data:`RECEIVE_SLICE_FRAMES` frames per event-loop iteration; what is left waits in its
    channel's backlog, ahead of that channel's later messages.
    """

    def __init__(
        self,
        config: WebRtcConfig,
        peer: str,
        counters: dict[str, int],
        channels: Channels,
        errors: ErrorSink,
        loop: asyncio.AbstractEventLoop,
        *,
        sctp: Callable[[], Any],
        heard: Callable[[], None],
    ) -> None:
        self.config = config
        self.peer = peer
        self.errors = errors
        self._counters = counters
        self._channels = channels
        self._loop = loop
        self._sctp = sctp  # the peer connection's SCTP transport (None before the channels exist)
        self._heard = heard  # something arrived from the peer
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._callback: Callable[[object], Any] | None = None
        self._ended = False

    # -- the application's side ----------------------------------------------------------

    def on_message(
        self, callback: Callable[[object], Any] | None, *, conflate: ConflationPolicy | None = None
    ) -> ConflatingHandler | None:
        """Deliver each received message to ``callback(message)`` instead of the iterator.

        Messages already waiting for the iterator go to the callback first. An exception the
        callback raises goes to the :meth:`on_error` callbacks; later messages still arrive.

        ``conflate``: for a callback slower than the peer (a coroutine function, or one that takes
        long): messages wait in a latest-value queue (returned, a :class:`ConflatingHandler`) and
        the callback gets one at a time; values the policy opts in are replaced by newer ones
        while they wait, so the callback always works on the latest (docs/streams.md).
        """
        handler = None
        if conflate is not None and callback is not None:
            callback = handler = ConflatingHandler(callback, conflate,
                                                   on_error=lambda exc: self.report(exc, decode=False))
        self._callback = callback
        queue = self._queue
        while callback is not None and not queue.empty():
            item = queue.get_nowait()
            if item is _END:
                queue.put_nowait(item)
                return handler
            self._deliver([item[0]], item[1])  # type: ignore[index]
        return handler

    def on_error(self, callback: ErrorCallback) -> None:
        """Call ``callback(error)`` for each malformed frame or message received (and the
        connection's other errors nobody awaits)."""
        self.errors.add(callback)

    async def _next(self) -> tuple[object, DeliveryFields] | object:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
        return item

    async def recv(self) -> object:
        """The next message; raises TransportError once the connection has closed."""
        item = await self._next()
        if item is _END:
            raise TransportError("connection closed", peer=self.peer, step="receive")
        return item[0]  # type: ignore[index]

    def __aiter__(self) -> AsyncIterator[object]:
        return self

    async def __anext__(self) -> object:
        item = await self._next()
        if item is _END:
            raise StopAsyncIteration
        return item[0]  # type: ignore[index]

    async def deliveries(self) -> AsyncIterator[tuple[object, Delivery]]:
        """Iterate ``(message, Delivery)`` pairs instead of bare messages, until the connection closes."""
        while True:
            item = await self._next()
            if item is _END:
                return
            yield item[0], Delivery._make(item[1])  # type: ignore[index]

    # -- from the channels ---------------------------------------------------------------

    def data_received(self, ch: Channel, data: bytes | str) -> None:
        """A DataChannel message from the peer on ``ch``."""
        try:
            self._heard()
            ch.datachannel_messages_received += 1
            if isinstance(data, str):
                self.report(DecodeError(f"text DataChannel message on {ch.spec.label!r}: CLASP travels as binary",
                                        0, "message"))
                return
            size = len(data)
            ch.bytes_received += size
            if ch.backlog:
                # An earlier message of this channel is still being decoded: this one waits its turn.
                ch.backlog.append((data, 0, None))
                self._hold(ch, size)
                fast = isinstance(self._sctp(), FastSctpTransport)
                if not fast and self._channels.backlog_bytes() > RECEIVE_BACKLOG_BYTES:
                    self.finish_backlogs()
                return
            end, delivery = self._decode_slice(ch, data, 0, None)
            if end < size:
                ch.backlog.append((data, end, delivery))
                self._hold(ch, size - end)
                self._loop.call_soon(self._continue_backlog, ch)
        except Exception as exc:  # never let the receive path raise into the SCTP layer
            self.report(exc, decode=False)

    def report(self, error: BaseException, *, decode: bool = True) -> None:
        """Report ``error`` to the error sink; ``decode``: a malformed frame (counted)."""
        if decode:
            self._counters["decode_errors"] += 1
        self.errors.report(error)

    def end(self) -> None:
        """The connection has closed: deliver what the channels hold, then end the iteration."""
        if not self._ended:
            self.finish_backlogs()
            self._ended = True
            self._queue.put_nowait(_END)

    def _decode_slice(
        self, ch: Channel, data: bytes, start: int, delivery: DeliveryFields | None
    ) -> tuple[int, DeliveryFields]:
        """Decode and deliver the next RECEIVE_SLICE_FRAMES frames of ``data``; the offset after them."""
        messages, errors, end = decode_slice(data, start, RECEIVE_SLICE_FRAMES)
        count = len(messages)
        if delivery is None:
            size = len(data)
            frames = count + len(errors) if end == size else frame_count(data)
            delivery = (self.peer, ch.spec.label, frames, size)
        ch.messages_received += count
        if count:
            self._deliver(messages, delivery)
        for error in errors:
            self.report(error)
        return end, delivery

    def _continue_backlog(self, ch: Channel) -> None:
        if not ch.backlog:
            return  # finished at once meanwhile
        data, start, delivery = ch.backlog.popleft()
        end, delivery = self._decode_slice(ch, data, start, delivery)
        self._hold(ch, start - end)
        if end < len(data):
            ch.backlog.appendleft((data, end, delivery))
        if ch.backlog:
            self._loop.call_soon(self._continue_backlog, ch)

    def _finish_backlog(self, ch: Channel) -> None:
        """Decode and deliver everything ``ch`` holds, without yielding."""
        while ch.backlog:
            data, start, delivery = ch.backlog.popleft()
            end = start
            while end < len(data):
                end, delivery = self._decode_slice(ch, data, end, delivery)
            self._hold(ch, start - end)

    def finish_backlogs(self) -> None:
        """Decode and deliver everything the channels hold, without yielding."""
        for ch in self._channels:
            self._finish_backlog(ch)

    def _hold(self, ch: Channel, amount: int) -> None:
        """Count ``amount`` more (negative: fewer) undecoded bytes in ``ch``'s backlog.

        Under the fast SCTP path they count against the SCTP receive window: a peer that sends
        faster than this side works through its batches is held back by the window it is
        advertised, or, ignoring it, has its DATA dropped until the backlog shrinks.
        """
        ch.backlog_bytes += amount
        sctp = self._sctp()
        if isinstance(sctp, FastSctpTransport):
            sctp.hold_received(amount)

    def _deliver(self, messages: Sequence[object], delivery: DeliveryFields) -> None:
        callback = self._callback
        if callback is not None:
            token = _current_delivery.set(delivery)
            try:
                for message in messages:
                    try:
                        callback(message)
                    except Exception as exc:  # a failing user callback must not stop the receive path
                        self.report(exc, decode=False)
            finally:
                _current_delivery.reset(token)
            return
        limit = self.config.receive_queue_limit
        queue = self._queue
        for message in messages:
            if queue.qsize() >= limit:
                self._counters["dropped_received"] += 1
                continue
            queue.put_nowait((message, delivery))


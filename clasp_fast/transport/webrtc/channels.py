"""The DataChannels of one connection: each with its batcher, flush scheduling and backpressure, and
the table that routes a message to its channel."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable, Iterator, Protocol, cast

from aiortc import InvalidStateError, RTCDataChannel

from ...conflation import LatestValueQueue
from ...runtime.busy_poll import NO_BUSY_POLL, BusyPoll, NoBusyPoll
from ...wire.codec import Batcher
from ...errors import TransportError
from ...wire.messages import QOS_FIRE, Message, default_qos
from ..sctp import BUFFERED_AMOUNT_ATTRIBUTE, FastSctpTransport
from .config import RELIABLE_LABEL, UNRELIABLE_LABEL, ChannelSpec, WebRtcConfig

__all__ = ["CHANNEL_COUNTS", "Channel", "Channels", "DeliveryFields", "Receiving", "open_spec", "remote_spec"]

#: How a received DataChannel message arrived (peer, channel label, frames, size): a plain tuple,
#: made into a :class:`~.receive.Delivery` only when asked for.
DeliveryFields = tuple[str, str, int, int]  # Delivery's fields: peer, channel, frames, size

_FRAME_TYPES = (bytes, bytearray, memoryview)

#: What each channel counts; the connection's figures are the sums (:meth:`Channels.totals`).
CHANNEL_COUNTS = ("messages_sent", "bytes_sent", "datachannel_messages_sent",
                  "messages_received", "bytes_received", "datachannel_messages_received")


class Receiving(Protocol):
    """Where the channels' received DataChannel messages go (the connection's receive path)."""

    def data_received(self, channel: "Channel", data: bytes | str) -> None: ...


class _NotYet:
    def data_received(self, channel: "Channel", data: bytes | str) -> None:
        raise RuntimeError("a channel received data before the connection set its receive path")


_NOT_YET = _NotYet()


class Channel:
    """One DataChannel with its batcher, flush scheduling and backpressure.

    It knows only its :class:`Channels` table: the configuration, whether the
    connection takes sends, the receive path its data goes to, and where errors and the close go.
    """

    def __init__(self, table: "Channels", spec: ChannelSpec, dc: RTCDataChannel) -> None:
        self.table = table
        self.spec = spec
        self.dc = dc
        self.batcher: Batcher = Batcher(0)
        self.flush_scheduled = False
        self.drained = asyncio.Event()
        self.drained.set()
        self.opened = asyncio.Event()
        # Received messages still being decoded slice by slice: (data, next offset, delivery fields).
        self.backlog: deque[tuple[bytes, int, DeliveryFields | None]] = deque()
        self.backlog_bytes = 0
        # Counts of this channel, kept only here: the connection's are the sums (Channels.totals()).
        self.messages_sent = 0
        self.bytes_sent = 0
        self.datachannel_messages_sent = 0
        self.messages_received = 0
        self.bytes_received = 0
        self.datachannel_messages_received = 0
        # Latest-value conflation (only with a policy: other channels keep the plain path).
        self.policy = table.config.policy_for(spec)
        self.waiting: LatestValueQueue[tuple[object, int | None, bool]] | None = None
        self.kept = 0  # non-conflatable items in ``waiting``
        if self.policy is not None:
            self.waiting = LatestValueQueue(table.config.conflation_fence)
        if dc.readyState == "open":
            self.opened.set()
        dc.on("open", self.opened.set)
        dc.on("message", self._on_message)
        dc.on("error", self._on_error)
        dc.on("bufferedamountlow", self._on_buffered_amount_low)
        dc.on("close", self._on_close)
        # Under the fast SCTP path: messages go out past RTCDataChannel.send's checks, and a batch
        # leaves at once when the association is idle.
        self._fast_sctp = dc.transport if isinstance(dc.transport, FastSctpTransport) else None

    def configure_batching(self, enabled: bool) -> None:
        config = self.table.config
        if not enabled:
            limit = 0
        elif self.spec.reliable:
            limit = config.max_batch_size
        else:
            limit = config.unreliable_batch_size
        self.batcher = Batcher(limit)
        # The sender's quick check before full(); under the fast SCTP path it reads the attribute
        # bufferedAmount returns (a seam checked before the path is taken), past the property.
        held = "bufferedAmount" if self._fast_sctp is None else BUFFERED_AMOUNT_ATTRIBUTE
        self.batcher.set_high_water_mark(self.dc, held, config.high_water_mark)
        self.dc.bufferedAmountLowThreshold = config.batch_flush_threshold

    # -- sending -------------------------------------------------------------------------

    def buffered(self) -> int:
        return self.dc.bufferedAmount + self.batcher.pending_size

    @property
    def conflated(self) -> int:
        """Values replaced by a newer one while this channel was backed up."""
        return 0 if self.waiting is None else self.waiting.conflated

    def full(self) -> bool:
        """Above the high-water mark (or, conflating, too many messages waiting behind values)."""
        config = self.table.config
        return (self.dc.bufferedAmount + self.batcher.pending_size > config.high_water_mark
                or self.kept > config.conflation_max_kept)

    def offer(self, item: object, qos: int | None, conflate: tuple[str, int] | None = None) -> None:
        """Send ``item`` (message or frame) on a conflating channel: at once while the link keeps up,
        else into the latest-value queue (``conflate``: a frame's (address, kind), as the caller knows it)."""
        waiting = self.waiting
        assert waiting is not None
        if not waiting and self.dc.bufferedAmount <= self.table.config.conflation_threshold:
            self.add(item, qos)
            return
        kind: int | None
        address: str | None
        if conflate is not None:
            address, kind = conflate
            if not self.policy.matches(address):  # type: ignore[union-attr]
                kind = None  # the channel's own patterns decide
        elif isinstance(item, _FRAME_TYPES):
            address, kind = None, None
        else:
            address, kind = getattr(item, "address", None), self.policy.kind(item)  # type: ignore[union-attr]
        if kind is None:
            self.kept += 1
        waiting.push((item, qos, kind is None), address, kind)

    def pump(self, everything: bool = False) -> None:
        """Hand waiting items to the batcher while the link has room (``everything``: all of them)."""
        waiting = self.waiting
        if not waiting:
            return
        threshold = self.table.config.conflation_threshold
        while waiting and (everything or self.dc.bufferedAmount <= threshold):
            item, qos, kept = waiting.pop()
            if kept:
                self.kept -= 1
            self.add(item, qos)

    async def wait_for_room(self) -> None:
        table = self.table
        config = table.config
        while self.full():
            if config.backpressure == "fail":
                raise TransportError(
                    f"channel {self.spec.label!r} has {self.buffered()} bytes buffered "
                    f"(high-water mark {config.high_water_mark})",
                    peer=table.peer,
                    step="send",
                )
            table.check_open()
            self.drained.clear()
            await self.drained.wait()
        table.check_open()

    def add(self, item: object, qos: int | None) -> None:
        """Add ``item`` (a message or a complete frame) to the batch; send what is due."""
        # Anything but a message or a frame: the compiled batcher raises EncodeError naming it.
        if self.batcher.add_item(item, -1 if qos is None else qos, self.flush_scheduled):
            self.added()

    def added(self) -> None:
        """After ``batcher.add_item()`` returned True: send the message it pushed out, then the
        batch if full, else schedule its flush."""
        batcher = self.batcher
        if (left := batcher.take_left()) is not None:
            self.send_now(left)
        if batcher.full:
            if (batch := batcher.take()) is not None:
                self.send_now(batch)
        elif not self.flush_scheduled and batcher.pending_size:
            self.schedule_flush()

    def schedule_flush(self) -> None:
        """Flush the pending batch now if the link is idle — nothing of this channel held in aiortc,
        nothing queued or unacknowledged on the association (Nagle's rule) — else at the next loop
        iteration (unless aiortc still holds data then)."""
        if self._fast_sctp is not None and self._fast_sctp.idle() and self._flush_if_drained():
            return
        self.flush_scheduled = True
        self.table.loop.call_soon(self._flush_soon)

    def send_now(self, data: bytes) -> None:
        dc = self.dc
        sctp = self._fast_sctp
        if sctp is None:
            dc.send(data)
        elif dc.readyState == "open":
            sctp.send_message(dc, data)  # a batch: never empty
        else:
            raise InvalidStateError
        self.bytes_sent += len(data)
        self.datachannel_messages_sent += 1
        busy_poll = self.table.busy_poll
        if busy_poll is not NO_BUSY_POLL:
            busy_poll.touch()

    def _flush_soon(self) -> None:
        self.flush_scheduled = False
        if self.batcher.pending_size:
            self._flush_if_drained()

    def _flush_if_drained(self) -> bool:
        """Hand the pending batch to aiortc if the channel is open and holds no more than its
        ``bufferedAmountLowThreshold`` there; False (nothing done) if not. Adaptive: while aiortc
        still holds data for this channel, frames keep accumulating and "bufferedamountlow" flushes them."""
        dc = self.dc
        if dc.readyState != "open" or dc.bufferedAmount > dc.bufferedAmountLowThreshold:
            return False
        if (batch := self.batcher.take()) is not None:
            self.send_now(batch)
        return True

    def flush(self) -> None:
        """Hand everything pending (values waiting included) to aiortc now."""
        if self.dc.readyState != "open":
            return
        if self.waiting:
            self.pump(everything=True)
        if self.batcher.pending_size and (batch := self.batcher.take()) is not None:
            self.send_now(batch)

    def _on_buffered_amount_low(self) -> None:
        if self.dc.readyState == "open":
            if self.waiting:
                self.pump()
            if self.batcher.pending_size and (batch := self.batcher.take()) is not None:
                self.send_now(batch)
        if not self.drained.is_set() and not self.full():
            self.drained.set()

    def _on_close(self) -> None:
        self.drained.set()
        self.table.closed(self)

    # -- receiving -----------------------------------------------------------------------

    def _on_message(self, data: bytes | str) -> None:
        self.table.receiver.data_received(self, data)

    def _on_error(self, error: Exception) -> None:
        self.table.failed(self, error)


class Channels:
    """The DataChannels of one connection by label, and the route of each outgoing message.

    Routing: a channel named by label, else the extra channel with the longest prefix covering
    the address, else ``clasp-reliable`` or ``clasp`` by the reliability asked for or the QoS
    (a frame's own QoS bits, a message's default).
    """

    def __init__(
        self,
        config: WebRtcConfig,
        peer: str,
        loop: asyncio.AbstractEventLoop,
        *,
        check_open: Callable[[], None],
        on_error: Callable[[Channel, Exception], None],
        on_closed: Callable[[Channel], None],
        busy_poll: BusyPoll | NoBusyPoll = NO_BUSY_POLL,
    ) -> None:
        self.config = config
        self.busy_poll = busy_poll
        self.peer = peer
        self.loop = loop
        self.check_open = check_open
        self.receiver: Receiving = _NOT_YET
        self._on_error = on_error
        self._on_closed = on_closed
        self._channels: dict[str, Channel] = {}
        self._routes: list[tuple[str, Channel]] = []
        self.reliable: Channel | None = None
        self.unreliable: Channel | None = None
        self._waiters: list[asyncio.Future[None]] = []
        # The counts of channels a later one of the same label replaced.
        self._replaced = dict.fromkeys(CHANNEL_COUNTS, 0)

    # -- the table -----------------------------------------------------------------------

    def add(self, spec: ChannelSpec, dc: RTCDataChannel) -> Channel:
        if (replaced := self._channels.get(spec.label)) is not None:
            for name in CHANNEL_COUNTS:
                self._replaced[name] += getattr(replaced, name)
        channel = self._channels[spec.label] = Channel(self, spec, dc)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        return channel

    async def wait_for(self, label: str) -> Channel:
        """The channel ``label`` once it exists (the peer's channels appear during set-up)."""
        while label not in self._channels:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            await waiter
        return self._channels[label]

    def totals(self) -> dict[str, int]:
        """The connection's counts of :data:`CHANNEL_COUNTS`: its channels' sums (counted per
        channel only, one increment per send or receive)."""
        totals = dict(self._replaced)
        for channel in self._channels.values():
            for name in CHANNEL_COUNTS:
                totals[name] += getattr(channel, name)
        return totals

    def __contains__(self, label: object) -> bool:
        return label in self._channels

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._channels.values()))

    def __getitem__(self, label: str) -> Channel:
        return self._channels[label]

    def data_channels(self) -> dict[str, RTCDataChannel]:
        return {label: channel.dc for label, channel in self._channels.items()}

    def configure(self, batching: bool, *channels: Channel) -> None:
        """Set batching on ``channels`` (all when none are named) and rebuild the routes."""
        for channel in channels or self._channels.values():
            channel.configure_batching(batching)
        routes = [(ch.spec.prefix, ch) for ch in self._channels.values() if ch.spec.prefix]
        routes.sort(key=lambda item: len(item[0]), reverse=True)
        self._routes = routes
        self.reliable = self._channels.get(RELIABLE_LABEL)
        self.unreliable = self._channels.get(UNRELIABLE_LABEL)

    # -- sending -------------------------------------------------------------------------

    def route(self, item: object, reliable: bool | None, qos: int | None, label: str | None) -> Channel:
        """The channel ``item`` (a message or a frame) goes on; TransportError when none can take it."""
        self.check_open()
        if label is not None:
            try:
                return self._channels[label]
            except KeyError:
                raise TransportError(f"no channel labelled {label!r}", peer=self.peer, step="send") from None
        if reliable is None:
            if isinstance(item, _FRAME_TYPES):
                if len(item) < 4:
                    raise TransportError("a frame is at least 4 bytes", peer=self.peer, step="send")
                frame_qos = item[1] >> 6 if qos is None else qos
                reliable = frame_qos != QOS_FIRE
            else:
                address = getattr(item, "address", None)
                if address is not None and self._routes:
                    for prefix, ch in self._routes:
                        if address == prefix or address.startswith(prefix if prefix.endswith("/") else prefix + "/"):
                            return ch
                reliable = (default_qos(cast(Message, item)) if qos is None else qos) != QOS_FIRE
        channel = self.reliable if reliable else self.unreliable
        assert channel is not None  # both exist once the connection is up
        return channel

    def flush(self) -> None:
        """Hand every pending batch to aiortc now."""
        for channel in self._channels.values():
            channel.flush()

    def release_senders(self) -> None:
        """Wake every send waiting for room (the connection is ending)."""
        for channel in self._channels.values():
            channel.drained.set()

    def buffered(self) -> bool:
        """Whether aiortc still holds data handed to an open channel."""
        return any(ch.dc.bufferedAmount for ch in self._channels.values() if ch.dc.readyState == "open")

    def reset(self) -> None:
        """Close every channel (SCTP stream resets)."""
        for channel in self._channels.values():
            channel.dc.close()

    def reliable_closed(self) -> bool:
        """Whether every reliable channel has closed (both directions reset)."""
        return all(ch.dc.readyState == "closed" for ch in self._channels.values() if ch.spec.reliable)

    # -- events of the channels ----------------------------------------------------------

    def failed(self, channel: Channel, error: Exception) -> None:
        self._on_error(channel, error)

    def closed(self, channel: Channel) -> None:
        self._on_closed(channel)

    def backlog_bytes(self) -> int:
        """Undecoded received bytes the channels hold (received batches decoded slice by slice)."""
        return sum(channel.backlog_bytes for channel in self._channels.values())


def open_spec(spec: ChannelSpec, create: Callable[..., RTCDataChannel]) -> RTCDataChannel:
    """Create the DataChannel of ``spec`` with ``create`` (``RTCPeerConnection.createDataChannel``)."""
    return create(spec.label, ordered=spec.ordered, maxRetransmits=spec.max_retransmits,
                  maxPacketLifeTime=spec.max_packet_life_time, protocol=spec.prefix or "")


def remote_spec(dc: RTCDataChannel) -> ChannelSpec:
    """The spec of a channel the peer opened (its prefix travels in the protocol field)."""
    return ChannelSpec(dc.label, prefix=dc.protocol if dc.protocol.startswith("/") else None, ordered=dc.ordered,
                       max_retransmits=dc.maxRetransmits, max_packet_life_time=dc.maxPacketLifeTime)


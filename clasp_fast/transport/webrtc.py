"""CLASP frames peer to peer over WebRTC DataChannels (aiortc), with compiled send batching.

Set-up follows WIRE.md §10.5 over any :class:`~clasp_fast.signaling.SignalingChannel`::

    config = WebRtcConfig(host_addresses=["127.0.0.1"])
    sender, receiver = await WebRtcTransport.connect(config, signaling, peer="session-b")
    await sender.send(Set(address="/lumen/layer/0/opacity", value=0.5))
    async for message in receiver:
        ...

Routing: messages whose default QoS (WIRE.md §2.1) is Fire travel on ``clasp`` (unordered, no
retransmits), Confirm/Commit on ``clasp-reliable``; extra channels carry the messages under their
address prefix. Toward peers whose offer/answer lists ``"batch"`` in ``features`` several complete
frames share one DataChannel message (DESIGN.md "Batching on the wire"); toward other peers every
message holds exactly one frame. Received messages may always hold several frames.

Receiving: a received DataChannel message is decoded and delivered at most
:data:`RECEIVE_SLICE_FRAMES` frames per event-loop iteration, in order; :class:`Delivery` says on
which channel, from which peer and in how big a DataChannel message a message arrived
(:func:`current_delivery` inside callbacks, :meth:`WebRtcReceiver.deliveries` for iteration).

Liveness: between clasp_fast peers (feature ``"keepalive"``) a negotiated control channel
``clasp-control`` carries PING/PONG every ``keepalive_interval`` seconds; they measure the round-trip
time, and silence on every channel for ``keepalive_timeout`` seconds closes the connection with
reason ``"timeout"``. With other peers, loss is noticed through aiortc's ICE consent checks (about 30 s).

Teardown never drops what the peer already sent (docs/p2p-lifecycle.md). Either way new sends stop,
what is pending goes to SCTP and we wait until the peer acknowledged it. :meth:`WebRtcTransport.close`
then sends ``disconnected`` and keeps delivering until the peer has closed its side. On the peer's
``disconnected`` (it sends nothing more) we close our DataChannels: SCTP stream resets, which the
peer's stack answers only after the data it still holds, so our channels close behind that data;
then our ``disconnected`` goes out. Every wait ends when the reliable channels have closed, the
association has gone or ``close_timeout`` passed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Literal, NamedTuple

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from . import ice
from .._codec import Batcher, decode_slice, frame_count
from ..wire.codec import decode_all, encode
from ..wire.messages import QOS_FIRE, Ping, Pong, default_qos
from ..errors import DecodeError, ProtocolError, SignalingError, TransportError
from .sctp import FastSctpTransport, peer_connection_class
from .signaling import SignalingChannel, new_correlation_id, parse_signal

__all__ = [
    "ChannelSpec",
    "WebRtcConfig",
    "WebRtcTransport",
    "WebRtcSender",
    "WebRtcReceiver",
    "WebRtcStats",
    "CandidatePairInfo",
    "Delivery",
    "current_delivery",
    "RECEIVE_SLICE_FRAMES",
    "UNRELIABLE_LABEL",
    "RELIABLE_LABEL",
    "CONTROL_LABEL",
    "SCTP_USER_DATA_MAX",
    "LOCAL_FEATURES",
    "parse_candidate",
]

logger = logging.getLogger(__name__)

UNRELIABLE_LABEL = "clasp"
RELIABLE_LABEL = "clasp-reliable"
CONTROL_LABEL = "clasp-control"
# Negotiated stream id of the control channel (both sides create it; no DCEP exchange).
CONTROL_CHANNEL_ID = 1023

# User data in one SCTP DATA chunk in aiortc 1.16: (1189 - 12 - 16) // 4 * 4 (rtcsctptransport.py).
SCTP_USER_DATA_MAX = 1160

LOCAL_FEATURES = ("batch", "keepalive")

#: Frames of one received DataChannel message decoded and delivered per event-loop iteration; the
#: rest of a larger batch follows in later iterations (in order, and before any later message on
#: that channel), so one peer's huge batch does not hold up other peers and timers for its length.
RECEIVE_SLICE_FRAMES = 256
#: Under aiortc's own SCTP (``fast_sctp=False``): undecoded bytes a connection's channels may hold
#: while they work through batches slice by slice; beyond it they decode what they hold at once.
#: Under the fast SCTP path the backlog counts against the SCTP receive window instead, which bounds it.
RECEIVE_BACKLOG_BYTES = 1024 * 1024

State = Literal["new", "connecting", "connected", "closing", "closed", "failed"]


@dataclass(frozen=True)
class ChannelSpec:
    """A DataChannel and the messages it carries.

    ``prefix`` routes messages whose address is the prefix or lies under it to this channel
    (the longest matching prefix wins). Reliability: the defaults are ordered and fully reliable;
    ``ordered=False, max_retransmits=0`` is unreliable; ``max_retransmits=N`` or
    ``max_packet_life_time=ms`` is partially reliable.
    """

    label: str
    prefix: str | None = None
    ordered: bool = True
    max_retransmits: int | None = None
    max_packet_life_time: int | None = None

    @property
    def reliable(self) -> bool:
        return self.max_retransmits is None and self.max_packet_life_time is None

    def __post_init__(self) -> None:
        if self.max_retransmits is not None and self.max_packet_life_time is not None:
            raise ValueError(f"channel {self.label!r}: give max_retransmits or max_packet_life_time, not both")
        if self.prefix is not None and not self.prefix.startswith("/"):
            raise ValueError(f"channel {self.label!r}: prefix must start with '/', got {self.prefix!r}")


DEFAULT_CHANNELS = (
    ChannelSpec(UNRELIABLE_LABEL, ordered=False, max_retransmits=0),
    ChannelSpec(RELIABLE_LABEL),
)


@dataclass
class WebRtcConfig:
    """Options of a WebRTC transport.

    ``ice_servers``: STUN/TURN URLs (``"stun:host:3478"``) or ``{"urls", "username", "credential"}``
    maps (the browser's RTCIceServer shape); none by default, so nothing is sent off the machine.
    ``host_addresses``: the only addresses host candidates are gathered on (``["127.0.0.1"]`` keeps a
    connection on loopback); None gathers on every non-loopback interface as aioice does.
    ``udp_receive_buffer``: ``SO_RCVBUF`` of the ICE sockets (None keeps aioice's 256 KiB).
    """

    ice_servers: list[str | dict[str, Any]] = field(default_factory=list)
    host_addresses: list[str] | None = None
    udp_receive_buffer: int | None = ice.DEFAULT_UDP_RECEIVE_BUFFER
    extra_channels: list[ChannelSpec] = field(default_factory=list)
    # Batching toward peers that advertise "batch".
    batching: bool = True
    max_batch_size: int = 16 * 1024
    unreliable_batch_size: int = SCTP_USER_DATA_MAX
    # Frames keep accumulating while a channel has more than this many bytes waiting in aiortc.
    batch_flush_threshold: int = 0
    # Backpressure: a send waits (or fails, backpressure="fail") above this many buffered bytes.
    high_water_mark: int = 1024 * 1024
    backpressure: Literal["wait", "fail"] = "wait"
    connection_timeout: float = 30.0
    keepalive_interval: float = 1.0
    keepalive_timeout: float = 5.0
    close_timeout: float = 2.0
    receive_queue_limit: int = 100_000
    # Data channels over clasp_fast.sctp's bundling data path; False keeps aiortc's own SCTP.
    fast_sctp: bool = True

    def __post_init__(self) -> None:
        if self.backpressure not in ("wait", "fail"):
            raise ValueError(f"backpressure must be 'wait' or 'fail', got {self.backpressure!r}")
        if not 0 < self.unreliable_batch_size <= SCTP_USER_DATA_MAX:
            raise ValueError(
                f"unreliable_batch_size must be 1..{SCTP_USER_DATA_MAX} (one SCTP packet), got {self.unreliable_batch_size}"
            )
        if self.max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive, got {self.max_batch_size}")
        for name in ("connection_timeout", "keepalive_interval", "keepalive_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.keepalive_timeout <= self.keepalive_interval:
            raise ValueError("keepalive_timeout must be longer than keepalive_interval")

    def rtc_configuration(self) -> RTCConfiguration:
        servers = []
        for entry in self.ice_servers:
            if isinstance(entry, str):
                servers.append(RTCIceServer(urls=entry))
            elif isinstance(entry, dict) and "urls" in entry:
                servers.append(
                    RTCIceServer(urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential"))
                )
            else:
                raise ValueError(f"ice_servers entries are URLs or {{urls, username, credential}} maps, got {entry!r}")
        # An explicit empty list: aiortc would otherwise fall back to a public STUN server.
        return RTCConfiguration(iceServers=servers)


@dataclass(frozen=True)
class CandidatePairInfo:
    """The ICE candidate pair carrying the connection; types are host, srflx, prflx or relay."""

    local_address: tuple[str, int]
    remote_address: tuple[str, int]
    local_type: str
    remote_type: str


@dataclass(frozen=True)
class WebRtcStats:
    """Counters of one connection. ``messages_*`` count CLASP frames, ``datachannel_*`` DataChannel messages."""

    state: str
    selected_pair: CandidatePairInfo | None
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    datachannel_messages_sent: int
    datachannel_messages_received: int
    decode_errors: int
    dropped_received: int
    rtt: float | None


ErrorCallback = Callable[[Exception], Any]


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


# The fields of the Delivery being handled, as a plain tuple: a Delivery is made only when asked for.
_DeliveryFields = tuple
_current_delivery: ContextVar[_DeliveryFields | None] = ContextVar("clasp_fast_current_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The :class:`Delivery` of the received message being handled right now, else None.

    Valid inside message callbacks (``WebRtcReceiver.on_message``, ``Peer.on``, ``ClaspP2P.on``,
    the hybrid client's) and in tasks they start (a context variable).
    """
    fields = _current_delivery.get()
    return None if fields is None else Delivery._make(fields)


class _Channel:
    """One DataChannel with its batcher, flush scheduling and backpressure."""

    def __init__(self, transport: "WebRtcTransport", spec: ChannelSpec, dc: RTCDataChannel) -> None:
        self.transport = transport
        self.spec = spec
        self.dc = dc
        self.batcher: Batcher = Batcher(0)
        self.flush_scheduled = False
        self.drained = asyncio.Event()
        self.drained.set()
        self.opened = asyncio.Event()
        # Received messages still being decoded slice by slice: (data, next offset, delivery fields).
        self.backlog: deque[tuple[bytes, int, _DeliveryFields | None]] = deque()
        self.backlog_bytes = 0
        if dc.readyState == "open":
            self.opened.set()
        dc.on("open", self.opened.set)
        dc.on("message", self._on_message)
        dc.on("error", self._on_error)
        dc.on("bufferedamountlow", self._on_buffered_amount_low)
        dc.on("close", self._on_close)

    def configure_batching(self, enabled: bool) -> None:
        config = self.transport.config
        if not enabled:
            limit = 0
        elif self.spec.reliable:
            limit = config.max_batch_size
        else:
            limit = config.unreliable_batch_size
        self.batcher = Batcher(limit)
        self.dc.bufferedAmountLowThreshold = config.batch_flush_threshold

    # -- sending -------------------------------------------------------------------------

    def buffered(self) -> int:
        return self.dc.bufferedAmount + self.batcher.pending_size

    async def wait_for_room(self) -> None:
        config = self.transport.config
        while self.buffered() > config.high_water_mark:
            if config.backpressure == "fail":
                raise TransportError(
                    f"channel {self.spec.label!r} has {self.buffered()} bytes buffered "
                    f"(high-water mark {config.high_water_mark})",
                    peer=self.transport.peer,
                    step="send",
                )
            self.transport._check_open()
            self.drained.clear()
            await self.drained.wait()
        self.transport._check_open()

    def add(self, item: object, qos: int | None, is_frame: bool) -> None:
        if is_frame:
            ready = self.batcher.add_frame(item)
        else:
            ready = self.batcher.add_message(item, -1 if qos is None else qos)
        if ready is not None:
            self.send_now(ready)
        if self.batcher.full:
            self.send_now(self.batcher.take())
        elif self.batcher.pending_size and not self.flush_scheduled:
            self.flush_scheduled = True
            self.transport._loop.call_soon(self._flush_soon)

    def send_now(self, data: bytes) -> None:
        self.dc.send(data)
        stats = self.transport._counters
        stats["bytes_sent"] += len(data)
        stats["datachannel_messages_sent"] += 1

    def _flush_soon(self) -> None:
        self.flush_scheduled = False
        if self.dc.readyState != "open":
            return
        # Adaptive: while aiortc still holds data for this channel, keep appending; the
        # "bufferedamountlow" event flushes what accumulated.
        if self.batcher.pending_size and self.dc.bufferedAmount <= self.dc.bufferedAmountLowThreshold:
            self.send_now(self.batcher.take())

    def flush(self) -> None:
        if self.batcher.pending_size and self.dc.readyState == "open":
            self.send_now(self.batcher.take())

    def _on_buffered_amount_low(self) -> None:
        if self.dc.readyState == "open":
            self.flush()
        if self.buffered() <= self.transport.config.high_water_mark:
            self.drained.set()

    def _on_close(self) -> None:
        self.drained.set()
        self.transport._channel_closed(self)

    # -- receiving -----------------------------------------------------------------------

    def _on_message(self, data: bytes | str) -> None:
        try:
            self.transport._on_datachannel_message(self, data)
        except Exception as exc:  # never let the receive path raise into the SCTP layer
            self.transport.receiver._report(exc, decode=False)

    def _on_error(self, error: Exception) -> None:
        # The SCTP layer refused a message over the advertised maximum size on this channel (and
        # closes the channel): the peer broke the protocol, so the whole connection closes.
        transport = self.transport
        transport.receiver._report(error, decode=False)
        if isinstance(error, ProtocolError) and transport.state == "connected":
            transport._spawn(transport._shutdown(f"protocol error: {error}", "closed"))


class WebRtcSender:
    """The sending half of a connection: ``await sender.send(message_or_frame)``."""

    def __init__(self, transport: "WebRtcTransport") -> None:
        self.transport = transport

    async def send(
        self,
        message_or_frame: object,
        *,
        reliable: bool | None = None,
        qos: int | None = None,
        channel: str | None = None,
    ) -> None:
        """Send one message (encoded here) or one complete frame (bytes).

        The channel is chosen by ``channel`` (a label), else by the address prefix of an extra
        channel, else by ``reliable``, else by QoS (``qos`` or the message's default; a frame's
        own QoS bits). Waits while the channel is above the high-water mark.
        """
        target = self.transport._route(message_or_frame, reliable, qos, channel)
        await target.wait_for_room()
        target.add(message_or_frame, qos, isinstance(message_or_frame, (bytes, bytearray, memoryview)))
        self.transport._counters["messages_sent"] += 1

    def send_nowait(
        self, message_or_frame: object, *, reliable: bool | None = None, qos: int | None = None, channel: str | None = None
    ) -> None:
        """Like :meth:`send` but never waits: raises TransportError above the high-water mark."""
        target = self.transport._route(message_or_frame, reliable, qos, channel)
        self.transport._check_open()
        if target.buffered() > self.transport.config.high_water_mark:
            raise TransportError(
                f"channel {target.spec.label!r} is above its high-water mark", peer=self.transport.peer, step="send"
            )
        target.add(message_or_frame, qos, isinstance(message_or_frame, (bytes, bytearray, memoryview)))
        self.transport._counters["messages_sent"] += 1

    def flush(self) -> None:
        """Hand every pending batch to aiortc now."""
        for ch in self.transport._channels.values():
            ch.flush()

    async def close(self, reason: str = "User requested disconnect") -> None:
        await self.transport.close(reason)


_END = object()


class WebRtcReceiver:
    """The receiving half: an async iterator of decoded messages, or a callback.

    Iteration ends when the connection closes. With :meth:`on_message` set, messages go to the
    callback instead of the queue; with neither reading, at most ``receive_queue_limit`` messages
    wait and later ones are dropped (counted in ``stats().dropped_received``). Malformed frames are
    reported to :meth:`on_error` callbacks (a :class:`DecodeError` with the byte offset inside the
    DataChannel message and the field) and skipped; rejected signals, exceptions raised by the
    message callback and messages the SCTP layer refused are reported there too.
    """

    def __init__(self, transport: "WebRtcTransport") -> None:
        self.transport = transport
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._callback: Callable[[object], Any] | None = None
        self._error_callbacks: list[ErrorCallback] = []
        self._ended = False

    def on_message(self, callback: Callable[[object], Any] | None) -> None:
        """Deliver each received message to ``callback(message)`` instead of the iterator.

        Messages already waiting for the iterator go to the callback first. An exception the
        callback raises goes to the :meth:`on_error` callbacks; later messages still arrive.
        """
        self._callback = callback
        queue = self._queue
        while callback is not None and not queue.empty():
            item = queue.get_nowait()
            if item is _END:
                queue.put_nowait(item)
                return
            self._deliver([item[0]], item[1])

    def on_error(self, callback: ErrorCallback) -> None:
        """Call ``callback(error)`` for each malformed frame or message received."""
        self._error_callbacks.append(callback)

    def _deliver(self, messages: list, delivery: _DeliveryFields) -> None:
        callback = self._callback
        if callback is not None:
            token = _current_delivery.set(delivery)
            try:
                for message in messages:
                    try:
                        callback(message)
                    except Exception as exc:  # a failing user callback must not stop the receive path
                        self._report(exc, decode=False)
            finally:
                _current_delivery.reset(token)
            return
        limit = self.transport.config.receive_queue_limit
        queue = self._queue
        for message in messages:
            if queue.qsize() >= limit:
                self.transport._counters["dropped_received"] += 1
                continue
            queue.put_nowait((message, delivery))

    def _report(self, error: Exception, *, decode: bool = True) -> None:
        if decode:
            self.transport._counters["decode_errors"] += 1
        for callback in self._error_callbacks:
            try:
                callback(error)
            except Exception:
                logger.exception("error callback failed")
        if not self._error_callbacks:
            logger.warning("peer %s: %s", self.transport.peer, error)

    def _end(self) -> None:
        if not self._ended:
            self.transport._finish_backlogs()
            self._ended = True
            self._queue.put_nowait(_END)

    async def _next(self) -> tuple[object, _DeliveryFields] | object:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
        return item

    async def recv(self) -> object:
        """The next message; raises TransportError once the connection has closed."""
        item = await self._next()
        if item is _END:
            raise TransportError("connection closed", peer=self.transport.peer, step="receive")
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


def _candidate_json(candidate, ufrag: str | None) -> str:
    """The §10.3 JSON text of an RTCIceCandidateInit for an aiortc candidate."""
    return json.dumps(
        {
            "candidate": "candidate:" + candidate_to_sdp(candidate),
            "sdpMid": candidate.sdpMid,
            "sdpMLineIndex": candidate.sdpMLineIndex,
            "usernameFragment": ufrag,
        },
        separators=(",", ":"),
    )


def parse_candidate(text: str):
    """An aiortc ``RTCIceCandidate`` from the §10.3 JSON string; ValueError when unusable."""
    try:
        init = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ICE candidate is not JSON: {exc}") from None
    if not isinstance(init, dict) or not isinstance(init.get("candidate"), str):
        raise ValueError("ICE candidate JSON has no 'candidate' string")
    line = init["candidate"]
    if line.startswith("a="):
        line = line[2:]
    if line.startswith("candidate:"):
        line = line[len("candidate:"):]
    try:
        candidate = candidate_from_sdp(line)
    except (AssertionError, ValueError, IndexError) as exc:
        raise ValueError(f"unparseable ICE candidate {init['candidate']!r}: {exc}") from None
    mid = init.get("sdpMid")
    index = init.get("sdpMLineIndex")
    candidate.sdpMid = mid if isinstance(mid, str) else None
    candidate.sdpMLineIndex = index if isinstance(index, int) else None
    return candidate


class WebRtcTransport:
    """One WebRTC peer connection carrying CLASP frames.

    Most code uses :meth:`connect`. A P2P layer that reads the signaling channel itself creates the
    transport with ``pump_signals=False``, feeds it with :meth:`handle_signal`, and calls
    :meth:`start` (offerer) or :meth:`start` with the received ``offer`` map (answerer).
    """

    def __init__(
        self,
        config: WebRtcConfig,
        signaling: SignalingChannel,
        peer: str,
        *,
        pump_signals: bool = True,
        on_error: ErrorCallback | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.config = config
        self.signaling = signaling
        self.peer = peer
        self.role: Literal["offerer", "answerer"] | None = None
        # The offerer's id may be chosen by the caller (a P2P layer routing signals by it).
        self.correlation_id: str | None = correlation_id
        self.remote_features: tuple[str, ...] = ()
        self.state: State = "new"
        self.close_reason: str | None = None
        self.sender = WebRtcSender(self)
        self.receiver = WebRtcReceiver(self)
        if on_error is not None:
            self.receiver.on_error(on_error)
        self._loop = asyncio.get_running_loop()
        self._pc = peer_connection_class(config.fast_sctp)(config.rtc_configuration())
        self._pc.on("connectionstatechange", self._on_pc_state)
        self._pc.on("datachannel", self._on_remote_datachannel)
        self._channels: dict[str, _Channel] = {}
        self._routes: list[tuple[str, _Channel]] = []
        self._reliable: _Channel | None = None
        self._unreliable: _Channel | None = None
        self._channel_waiters: list[asyncio.Future] = []
        self._control: RTCDataChannel | None = None
        self._pump_signals = pump_signals
        self._signals: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._answer_applied = asyncio.Event()
        # Remote candidates in arrival order; applied once the remote description is set.
        self._remote_candidates: asyncio.Queue[str] = asyncio.Queue()
        self._remote_description_set = asyncio.Event()
        self._remote_connected = asyncio.Event()
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._peer_closed = asyncio.Event()  # every channel closed or the association gone
        self._disconnected_sent = False
        self._remote_disconnect: str | None = None  # a "disconnected" that came during set-up
        self._peer_disconnected = False  # the peer's "disconnected" came while we were closing
        self._state_listeners: list[Callable[[str], Any]] = []
        self._step = "offer"
        # Seconds from start() to each set-up step: "offer"/"answer" (sent or applied), "reliable_open", "connected".
        self.timings: dict[str, float] = {}
        self._started_at = 0.0
        self._last_received = time.monotonic()
        self._pings: list[float] = []
        self._rtt: float | None = None
        self._counters = dict.fromkeys(
            (
                "bytes_sent",
                "bytes_received",
                "messages_sent",
                "messages_received",
                "datachannel_messages_sent",
                "datachannel_messages_received",
                "decode_errors",
                "dropped_received",
                "ignored_signals",
            ),
            0,
        )

    # -- public API ----------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        config: WebRtcConfig,
        signaling: SignalingChannel,
        peer: str | None = None,
        *,
        role: Literal["offerer", "answerer"] = "offerer",
        offer: dict[str, object] | None = None,
        on_error: ErrorCallback | None = None,
    ) -> tuple[WebRtcSender, WebRtcReceiver]:
        """Connect to ``peer`` and return ``(sender, receiver)`` once every channel is open.

        The offerer needs ``peer``. The answerer waits on ``signaling`` for an offer (from ``peer``
        when given; signals that come before it are dropped, as WIRE.md §10.5 does), unless the
        offer map is passed in. Raises TransportError naming the peer and the step on timeout.
        """
        if role == "offerer":
            if peer is None:
                raise ValueError("the offerer must name the peer to connect to")
            transport = cls(config, signaling, peer, on_error=on_error)
            await transport.start()
            return transport.sender, transport.receiver
        if role != "answerer":
            raise ValueError(f"role must be 'offerer' or 'answerer', got {role!r}")
        if offer is None:
            offer = await cls._wait_for_offer(signaling, peer, config.connection_timeout)
        transport = cls(config, signaling, str(offer["from"]), on_error=on_error)
        await transport.start(offer)
        return transport.sender, transport.receiver

    @staticmethod
    async def _wait_for_offer(signaling: SignalingChannel, peer: str | None, timeout: float) -> dict[str, object]:
        async def wait() -> dict[str, object]:
            while True:
                signal = parse_signal(await signaling.recv_signal())
                if signal is not None and signal["type"] == "offer" and (peer is None or signal["from"] == peer):
                    return signal

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise TransportError(f"no offer within {timeout:g} s", peer=peer, step="offer") from None

    async def start(self, offer: dict[str, object] | None = None) -> None:
        """Run the offerer procedure (``offer`` None) or the answerer procedure for ``offer``."""
        if self.state != "new":
            raise TransportError("transport already started", peer=self.peer, step="start")
        self._set_state("connecting")
        self._started_at = time.perf_counter()
        # Role and correlation id are known before any queued signal is looked at.
        if offer is None:
            self.role = "offerer"
            self.correlation_id = self.correlation_id or new_correlation_id(self.signaling.session_id, self.peer)
        else:
            self.role = "answerer"
            self.correlation_id = str(offer["correlation_id"])
        if self._pump_signals:
            self._spawn(self._pump())
        self._spawn(self._process_signals())
        self._spawn(self._apply_remote_candidates())
        establishing = self._spawn(self._establish(offer))
        try:
            await asyncio.wait_for(asyncio.shield(establishing), self.config.connection_timeout)
        except asyncio.TimeoutError:
            step = self._step
            await self._shutdown(None, "failed")
            raise TransportError(
                f"connection not established within {self.config.connection_timeout:g} s", peer=self.peer, step=step
            ) from None
        except asyncio.CancelledError:
            step = self._step
            if establishing.cancelled() and self.state in ("closing", "closed", "failed"):
                # close() or a remote "disconnected" ended the set-up.
                await self._closed.wait()
                raise TransportError(
                    f"closed during set-up ({self.close_reason or 'closed'})", peer=self.peer, step=step
                ) from None
            await self._shutdown(None, "failed")
            raise
        except BaseException:
            await self._shutdown(None, "failed")
            raise
        self._last_received = time.monotonic()
        if "keepalive" in self.remote_features:
            self._spawn(self._keepalive())
        self._mark("connected")
        self._set_state("connected")
        if self._remote_disconnect is not None:
            self._spawn(self._shutdown(None, "closed", graceful=True, remote_reason=self._remote_disconnect))

    def _mark(self, step: str) -> None:
        self.timings[step] = time.perf_counter() - self._started_at

    def handle_signal(self, signal: dict[str, object]) -> None:
        """Feed a signal received on the signaling channel (for callers with ``pump_signals=False``)."""
        self._signals.put_nowait(signal)

    def add_state_listener(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(state)`` on every state change (connecting, connected, closing, closed, failed)."""
        self._state_listeners.append(callback)

    async def add_channel(self, spec: ChannelSpec, timeout: float = 10.0) -> None:
        """Open one more DataChannel on a connected transport and wait until it is open.

        The peer learns ``spec.prefix`` from the channel's protocol field and routes that prefix to it too.
        """
        self._check_open()
        if spec.label in self._channels or spec.label == CONTROL_LABEL:
            raise ValueError(f"a channel labelled {spec.label!r} exists already")
        dc = self._pc.createDataChannel(spec.label, ordered=spec.ordered, maxRetransmits=spec.max_retransmits,
                                        maxPacketLifeTime=spec.max_packet_life_time, protocol=spec.prefix or "")
        self._add_channel(spec, dc)
        channel = self._channels[spec.label]
        try:
            await asyncio.wait_for(channel.opened.wait(), timeout)
        except asyncio.TimeoutError:
            raise TransportError(f"channel {spec.label!r} did not open within {timeout:g} s",
                                 peer=self.peer, step="channel open") from None
        channel.configure_batching(self.batching)
        self._rebuild_routes()

    def channel_for(
        self, message_or_frame: object, *, reliable: bool | None = None, qos: int | None = None
    ) -> str:
        """The label of the channel :meth:`WebRtcSender.send` would use for this message or frame."""
        return self._route(message_or_frame, reliable, qos, None).spec.label

    @property
    def negotiated(self) -> bool:
        """True once offer and answer are both applied: from then on the peer may send data."""
        return self._remote_description_set.is_set()

    @property
    def last_received(self) -> float:
        """``time.monotonic()`` when something last arrived from the peer (any channel, keepalives too)."""
        return self._last_received

    @property
    def batching(self) -> bool:
        """True when frames are batched toward this peer."""
        return self.config.batching and "batch" in self.remote_features

    @property
    def channels(self) -> dict[str, RTCDataChannel]:
        return {label: ch.dc for label, ch in self._channels.items()}

    @property
    def peer_connection(self) -> RTCPeerConnection:
        return self._pc

    def local_candidates(self) -> list[str]:
        """The local ICE candidates (SDP ``candidate:`` lines)."""
        sctp = self._pc.sctp
        if sctp is None:
            return []
        return ["candidate:" + candidate_to_sdp(c) for c in sctp.transport.transport.iceGatherer.getLocalCandidates()]

    def ice_connection(self):
        """The aioice ``Connection`` under this peer connection (None before channels exist)."""
        sctp = self._pc.sctp
        return None if sctp is None else sctp.transport.transport.iceGatherer._connection

    def selected_candidate_pair(self) -> CandidatePairInfo | None:
        connection = self.ice_connection()
        pair = None if connection is None else connection._nominated.get(1)
        if pair is None:
            return None
        return CandidatePairInfo(
            local_address=(pair.local_candidate.host, pair.local_candidate.port),
            remote_address=(pair.remote_candidate.host, pair.remote_candidate.port),
            local_type=pair.local_candidate.type,
            remote_type=pair.remote_candidate.type,
        )

    def stats(self) -> WebRtcStats:
        c = self._counters
        return WebRtcStats(
            state=self.state,
            selected_pair=self.selected_candidate_pair(),
            bytes_sent=c["bytes_sent"],
            bytes_received=c["bytes_received"],
            messages_sent=c["messages_sent"],
            messages_received=c["messages_received"],
            datachannel_messages_sent=c["datachannel_messages_sent"],
            datachannel_messages_received=c["datachannel_messages_received"],
            decode_errors=c["decode_errors"],
            dropped_received=c["dropped_received"],
            rtt=self._rtt,
        )

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self, reason: str = "User requested disconnect") -> None:
        """End the connection without losing data either way.

        Hands pending batches to SCTP and waits until the peer acknowledged them, sends
        ``disconnected`` with ``reason``, closes the DataChannels and keeps delivering what the peer
        still sends until its side has closed; then closes the peer connection. Everything before
        the final close is bounded by ``config.close_timeout``.
        """
        if self.state in ("closing", "closed", "failed"):
            await self._closed.wait()
            return
        await self._shutdown(reason, "closed", graceful=True)

    # -- set-up --------------------------------------------------------------------------

    async def _establish(self, offer: dict[str, object] | None) -> None:
        pc = self._pc
        if offer is None:
            for spec in (*DEFAULT_CHANNELS, *self.config.extra_channels):
                dc = pc.createDataChannel(
                    spec.label,
                    ordered=spec.ordered,
                    maxRetransmits=spec.max_retransmits,
                    maxPacketLifeTime=spec.max_packet_life_time,
                    protocol=spec.prefix or "",
                )
                self._add_channel(spec, dc)
            description = await pc.createOffer()
            self._install_gathering_policy()
            await pc.setLocalDescription(description)
            self._step = "offer"
            await self._send_signal({"type": "offer", "sdp": description.sdp, "features": list(LOCAL_FEATURES)})
            self._mark("offer")
            await self._trickle_candidates()
            self._step = "answer"
            await self._answer_applied.wait()
            self._mark("answer")
        else:
            self.remote_features = _features(offer)
            self._step = "offer"
            await pc.setRemoteDescription(RTCSessionDescription(sdp=str(offer["sdp"]), type="offer"))
            self._remote_description_set.set()
            self._install_gathering_policy()
            description = await pc.createAnswer()
            await pc.setLocalDescription(description)
            self._step = "answer"
            await self._send_signal({"type": "answer", "sdp": description.sdp, "features": list(LOCAL_FEATURES)})
            self._mark("answer")
            await self._trickle_candidates()
            self._create_control_channel()
        self._step = "ice"
        reliable = await self._channel_opened(RELIABLE_LABEL)
        self._step = "channel open"
        await reliable.opened.wait()
        self._mark("reliable_open")
        await self._send_signal({"type": "connected"})
        self._connected.set()
        wanted = [spec.label for spec in DEFAULT_CHANNELS]
        if self.role == "offerer":
            wanted += [spec.label for spec in self.config.extra_channels]
        for label in wanted:
            await (await self._channel_opened(label)).opened.wait()
        if self._control is not None and self._control.readyState != "open":
            opened = asyncio.Event()
            self._control.on("open", opened.set)
            if self._control.readyState != "open":
                await opened.wait()
        for ch in self._channels.values():
            ch.configure_batching(self.batching)
        self._rebuild_routes()

    def _install_gathering_policy(self) -> None:
        ice.install_gathering_policy(
            self.ice_connection(),
            host_addresses=self.config.host_addresses,
            udp_receive_buffer=self.config.udp_receive_buffer,
        )

    async def _trickle_candidates(self) -> None:
        sctp = self._pc.sctp
        gatherer = sctp.transport.transport.iceGatherer
        ufrag = gatherer.getLocalParameters().usernameFragment
        mid = sctp.mid if sctp.mid is not None else "0"
        for candidate in gatherer.getLocalCandidates():
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = 0
            await self._send_signal({"type": "ice_candidate", "candidate": _candidate_json(candidate, ufrag)})

    def _create_control_channel(self) -> None:
        if "keepalive" not in self.remote_features or self._control is not None:
            return
        dc = self._pc.createDataChannel(CONTROL_LABEL, negotiated=True, id=CONTROL_CHANNEL_ID)
        dc.on("message", self._on_control_message)
        self._control = dc

    async def _channel_opened(self, label: str) -> _Channel:
        while label not in self._channels:
            waiter = self._loop.create_future()
            self._channel_waiters.append(waiter)
            await waiter
        return self._channels[label]

    def _add_channel(self, spec: ChannelSpec, dc: RTCDataChannel) -> None:
        ch = _Channel(self, spec, dc)
        self._channels[spec.label] = ch
        for waiter in self._channel_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._channel_waiters.clear()

    def _on_remote_datachannel(self, dc: RTCDataChannel) -> None:
        if dc.label == CONTROL_LABEL:
            return
        spec = ChannelSpec(
            dc.label,
            prefix=dc.protocol if dc.protocol.startswith("/") else None,
            ordered=dc.ordered,
            max_retransmits=dc.maxRetransmits,
            max_packet_life_time=dc.maxPacketLifeTime,
        )
        self._add_channel(spec, dc)
        if self._connected.is_set():
            self._channels[dc.label].configure_batching(self.batching)
            self._rebuild_routes()

    def _rebuild_routes(self) -> None:
        routes = [(ch.spec.prefix, ch) for ch in self._channels.values() if ch.spec.prefix]
        routes.sort(key=lambda item: len(item[0]), reverse=True)
        self._routes = routes
        self._reliable = self._channels.get(RELIABLE_LABEL)
        self._unreliable = self._channels.get(UNRELIABLE_LABEL)

    # -- signals -------------------------------------------------------------------------

    async def _send_signal(self, fields: dict[str, object]) -> None:
        signal = {**fields, "correlation_id": self.correlation_id}
        try:
            await self.signaling.send_signal(self.peer, signal)
        except SignalingError:
            raise
        except Exception as exc:
            raise SignalingError(f"could not send {fields['type']}: {exc}", peer=self.peer, step=str(fields["type"])) from exc

    async def _pump(self) -> None:
        while True:
            self.handle_signal(await self.signaling.recv_signal())

    async def _process_signals(self) -> None:
        while True:
            raw = await self._signals.get()
            signal = parse_signal(raw)
            if signal is None or signal["from"] != self.peer:
                self._counters["ignored_signals"] += 1
                continue
            kind = signal["type"]
            if kind == "disconnected":
                reason = signal.get("reason")
                reason = str(reason) if reason else "remote disconnected"
                if self.state == "closing":
                    # We are ending it too: once both sides said so, nothing new is coming either way.
                    self._peer_disconnected = True
                    if self._disconnected_sent:
                        self._reset_channels()
                    return
                if self.negotiated and self.state == "connecting":
                    # The peer may see the channels open first and have sent data already:
                    # finish setting up, then end as from a connected state.
                    self._remote_disconnect = reason
                    return
                # Once connected, the peer's data may still be in flight behind its signal.
                self._spawn(self._shutdown(None, "closed", graceful=True, remote_reason=reason))
                return
            if signal["correlation_id"] != self.correlation_id:
                self._counters["ignored_signals"] += 1
                if kind == "ice_candidate":
                    self.receiver._report(SignalingError(
                        f"ICE candidate for unknown correlation id {signal['correlation_id']!r} not applied",
                        peer=self.peer, step="ice_candidate"), decode=False)
                continue
            try:
                if kind == "answer" and self.role == "offerer" and not self._answer_applied.is_set():
                    self.remote_features = _features(signal)
                    await self._pc.setRemoteDescription(RTCSessionDescription(sdp=str(signal["sdp"]), type="answer"))
                    self._create_control_channel()
                    self._answer_applied.set()
                    self._remote_description_set.set()
                elif kind == "ice_candidate":
                    self._remote_candidates.put_nowait(str(signal["candidate"]))
                elif kind == "connected":
                    self._remote_connected.set()
                else:
                    self._counters["ignored_signals"] += 1
            except Exception as exc:  # a bad SDP or candidate from the peer
                logger.warning("signal %s from %s rejected: %s", kind, self.peer, exc)
                self._counters["ignored_signals"] += 1
                self.receiver._report(exc, decode=False)

    async def _apply_remote_candidates(self) -> None:
        """Apply every remote candidate in arrival order, from the moment the remote description is set."""
        await self._remote_description_set.wait()
        while True:
            text = await self._remote_candidates.get()
            try:
                await self._add_remote_candidate(text)
            except Exception as exc:  # a candidate aiortc cannot use
                logger.warning("ICE candidate from %s rejected: %s", self.peer, exc)
                self._counters["ignored_signals"] += 1
                self.receiver._report(exc, decode=False)

    async def _add_remote_candidate(self, text: str) -> None:
        try:
            candidate = parse_candidate(text)
        except ValueError as exc:
            self._counters["ignored_signals"] += 1
            logger.warning("ignored ICE candidate from %s: %s", self.peer, exc)
            return
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            sctp = self._pc.sctp
            candidate.sdpMid = sctp.mid if sctp is not None and sctp.mid is not None else "0"
        await self._pc.addIceCandidate(candidate)

    # -- data path -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state != "connected":
            raise TransportError(f"connection is {self.state}", peer=self.peer, step="send")

    def _route(self, item: object, reliable: bool | None, qos: int | None, label: str | None) -> _Channel:
        if self.state != "connected":
            raise TransportError(f"connection is {self.state}", peer=self.peer, step="send")
        if label is not None:
            try:
                return self._channels[label]
            except KeyError:
                raise TransportError(f"no channel labelled {label!r}", peer=self.peer, step="send") from None
        if reliable is None:
            if isinstance(item, (bytes, bytearray, memoryview)):
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
                reliable = (default_qos(item) if qos is None else qos) != QOS_FIRE
        return self._reliable if reliable else self._unreliable

    def _on_datachannel_message(self, ch: _Channel, data: bytes | str) -> None:
        counters = self._counters
        self._last_received = time.monotonic()
        counters["datachannel_messages_received"] += 1
        if isinstance(data, str):
            self.receiver._report(
                DecodeError(f"text DataChannel message on {ch.spec.label!r}: CLASP travels as binary", 0, "message")
            )
            return
        counters["bytes_received"] += len(data)
        if ch.backlog:
            # An earlier message of this channel is still being decoded: this one waits its turn.
            ch.backlog.append((data, 0, None))
            self._hold(ch, len(data))
            if (
                not isinstance(self._pc.sctp, FastSctpTransport)
                and sum(c.backlog_bytes for c in self._channels.values()) > RECEIVE_BACKLOG_BYTES
            ):
                self._finish_backlogs()
            return
        end, delivery = self._decode_slice(ch, data, 0, None)
        if end < len(data):
            ch.backlog.append((data, end, delivery))
            self._hold(ch, len(data) - end)
            self._loop.call_soon(self._continue_backlog, ch)

    def _decode_slice(
        self, ch: _Channel, data: bytes, start: int, delivery: _DeliveryFields | None
    ) -> tuple[int, _DeliveryFields]:
        """Decode and deliver the next RECEIVE_SLICE_FRAMES frames of ``data``; the offset after them."""
        messages, errors, end = decode_slice(data, start, RECEIVE_SLICE_FRAMES)
        if delivery is None:
            size = len(data)
            delivery = (self.peer, ch.spec.label, len(messages) + len(errors) if end == size else frame_count(data), size)
        self._counters["messages_received"] += len(messages)
        if messages:
            self.receiver._deliver(messages, delivery)
        for error in errors:
            self.receiver._report(error)
        return end, delivery

    def _continue_backlog(self, ch: _Channel) -> None:
        if not ch.backlog:
            return  # finished at once meanwhile
        data, start, delivery = ch.backlog.popleft()
        end, delivery = self._decode_slice(ch, data, start, delivery)
        self._hold(ch, start - end)
        if end < len(data):
            ch.backlog.appendleft((data, end, delivery))
        if ch.backlog:
            self._loop.call_soon(self._continue_backlog, ch)

    def _finish_backlog(self, ch: _Channel) -> None:
        """Decode and deliver everything ``ch`` holds, without yielding."""
        while ch.backlog:
            data, start, delivery = ch.backlog.popleft()
            end = start
            while end < len(data):
                end, delivery = self._decode_slice(ch, data, end, delivery)
            self._hold(ch, start - end)

    def _hold(self, ch: _Channel, amount: int) -> None:
        """Count ``amount`` more (negative: fewer) undecoded bytes in ``ch``'s backlog.

        Under the fast SCTP path they count against the SCTP receive window: a peer that sends
        faster than this side works through its batches is held back by the window it is
        advertised, or, ignoring it, has its DATA dropped until the backlog shrinks.
        """
        ch.backlog_bytes += amount
        sctp = self._pc.sctp
        if isinstance(sctp, FastSctpTransport):
            sctp.hold_received(amount)

    def _finish_backlogs(self) -> None:
        for ch in self._channels.values():
            self._finish_backlog(ch)

    def _on_control_message(self, data: bytes | str) -> None:
        self._last_received = time.monotonic()
        if isinstance(data, str):
            return
        try:
            messages = decode_all(data)
        except DecodeError as exc:
            self.receiver._report(exc)
            return
        for message in messages:
            if isinstance(message, Ping):
                if self._control is not None and self._control.readyState == "open":
                    self._control.send(encode(Pong()))
            elif isinstance(message, Pong) and self._pings:
                self._rtt = time.monotonic() - self._pings.pop(0)

    async def _keepalive(self) -> None:
        interval = self.config.keepalive_interval
        timeout = self.config.keepalive_timeout
        ping = encode(Ping())
        while self.state == "connected":
            await asyncio.sleep(interval)
            if time.monotonic() - self._last_received > timeout:
                self._spawn(self._shutdown("timeout", "closed"))
                return
            if self._control is not None and self._control.readyState == "open":
                if len(self._pings) > 16:
                    self._pings.pop(0)
                self._pings.append(time.monotonic())
                self._control.send(ping)

    # -- state and teardown --------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state == self.state:
            return
        self.state = state
        for callback in list(self._state_listeners):
            try:
                callback(state)
            except Exception:
                logger.exception("state listener failed")

    def _on_pc_state(self) -> None:
        if self._pc.connectionState not in ("failed", "closed"):
            return
        if self.state in ("connecting", "connected"):
            # Nothing more can arrive: close at once (during set-up: the set-up fails).
            self._spawn(self._shutdown(None, "closed", remote_reason=f"peer connection {self._pc.connectionState}"))
        self._check_peer_closed()

    def _channel_closed(self, ch: _Channel) -> None:
        if ch.spec.label == RELIABLE_LABEL and self.state == "connected":
            # The peer reset the stream after its data; other channels may still be delivering.
            self._spawn(self._shutdown(None, "closed", graceful=True, remote_reason="reliable channel closed"))
        self._check_peer_closed()

    def _check_peer_closed(self) -> None:
        # Reliable channels only: some stacks (werift) never reset a stream they sent nothing
        # ordered on, and what is in flight on the others may be lost anyway.
        sctp = self._pc.sctp
        if (
            all(ch.dc.readyState == "closed" for ch in self._channels.values() if ch.spec.reliable)
            or self._pc.connectionState in ("failed", "closed")
            or (sctp is not None and sctp.state == "closed")
        ):
            self._peer_closed.set()

    def _spawn(self, coro) -> asyncio.Task:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _unacknowledged(self) -> bool:
        """True while aiortc holds data for the peer that the peer has not acknowledged."""
        channels = [ch.dc for ch in self._channels.values()]
        if self._control is not None:
            channels.append(self._control)
        if any(dc.bufferedAmount for dc in channels if dc.readyState == "open"):
            return True
        sctp = self._pc.sctp
        return sctp is not None and any(
            getattr(sctp, queue, None) for queue in ("_data_channel_queue", "_outbound_queue", "_sent_queue")
        )

    async def _drain(self, deadline: float) -> None:
        """Wait (until ``deadline``, loop time) until aiortc has sent and the peer acknowledged our data."""
        while self._unacknowledged() and self._loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def _wait_peer_closed(self, deadline: float, *, reset: bool) -> None:
        """Keep delivering until the peer has closed its side (or ``deadline``); ``reset``: close our channels first
        (also done later if the peer's ``disconnected`` comes during the wait).

        A channel closes once both directions are reset, and the peer's stack resets its direction
        only after the data it had queued, so every message the peer sent before has arrived then.
        The peer has closed when every reliable channel has, or the association or the peer
        connection is gone.
        """
        if reset:
            self._reset_channels()
        self._check_peer_closed()
        try:
            await asyncio.wait_for(self._peer_closed.wait(), max(0.0, deadline - self._loop.time()))
        except asyncio.TimeoutError:
            logger.info("peer %s did not close its channels within %g s", self.peer, self.config.close_timeout)

    def _reset_channels(self) -> None:
        for ch in self._channels.values():
            ch.dc.close()
        if self._control is not None:
            self._control.close()

    async def _send_disconnected(self, reason: str) -> None:
        if self._disconnected_sent or self.correlation_id is None:
            return
        self._disconnected_sent = True
        try:
            await self._send_signal({"type": "disconnected", "reason": reason})
        except Exception as exc:  # the signaling path may be gone too
            logger.info("could not send disconnected to %s: %s", self.peer, exc)

    async def probe(self, timeout: float | None = None) -> bool:
        """Whether the peer still answers on this connection, within ``timeout`` (default ``close_timeout``).

        Sends a PING (on ``clasp-control`` when negotiated, else on ``clasp-reliable``); the peer is
        alive when it sends anything afterwards or its SCTP stack acknowledges our data. Only the
        real peer can do either: the connection is DTLS-protected.
        """
        if self.state != "connected":
            return False
        sctp = self._pc.sctp
        acked = getattr(sctp, "_last_sacked_tsn", None)
        started = time.monotonic()
        ping = encode(Ping())
        if self._control is not None and self._control.readyState == "open":
            self._control.send(ping)
        elif self._reliable is not None and self._reliable.dc.readyState == "open":
            self._reliable.send_now(ping)
        deadline = started + (self.config.close_timeout if timeout is None else timeout)
        while self.state == "connected" and time.monotonic() < deadline:
            if self._last_received > started or getattr(sctp, "_last_sacked_tsn", None) != acked:
                return True
            await asyncio.sleep(0.01)
        return False

    async def abort(self, reason: str) -> None:
        """Close at once with ``reason``: no ``disconnected`` signal and no waiting for in-flight data."""
        if self.state in ("closing", "closed", "failed"):
            await self._closed.wait()
            return
        await self._shutdown(None, "closed", remote_reason=reason)

    async def _shutdown(
        self, reason: str | None, final: State, *, graceful: bool = False, remote_reason: str | None = None
    ) -> None:
        """End the connection.

        ``reason`` set: we end it and send ``disconnected`` with that reason. ``graceful`` (only for
        a connection that was up): flush and drain our data, then wait for the peer's channels to
        close, all within ``close_timeout``; a ``disconnected`` we owe the peer goes out after that.
        """
        if self.state in ("closing", "closed", "failed"):
            return
        graceful = graceful and self.state == "connected"
        self.close_reason = reason or remote_reason
        if self.state == "new":  # never started: the peer knows nothing of this connection
            reason = None
        self._set_state("closing")
        current = asyncio.current_task()
        try:
            if graceful:
                deadline = self._loop.time() + self.config.close_timeout
                for ch in self._channels.values():
                    ch.flush()
                await self._drain(deadline)
                if reason is not None:
                    # We end it: the peer may still be sending; it closes its side when done.
                    await self._send_disconnected(reason)
                    await self._wait_peer_closed(deadline, reset=self._peer_disconnected)
                else:
                    # The peer ended it after its data: our stream resets make its stack close its
                    # side behind that data.
                    await self._wait_peer_closed(deadline, reset=True)
                    await self._send_disconnected("closed by the peer")
            elif reason is not None:
                await self._send_disconnected(reason)
        finally:
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            for ch in self._channels.values():
                ch.drained.set()
            await self._pc.close()
            others = [t for t in self._tasks if t is not current]
            if others:
                await asyncio.gather(*others, return_exceptions=True)
            self.receiver._end()
            self._set_state(final)
            self._closed.set()


def _features(signal: dict[str, object]) -> tuple[str, ...]:
    features = signal.get("features")
    if isinstance(features, (list, tuple)):
        return tuple(f for f in features if isinstance(f, str))
    return ()

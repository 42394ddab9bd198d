"""A faster SCTP data path for aiortc's data channels (RFC 4960/9260, RFC 3758, RFC 8831/8832).

aiortc keeps doing ICE, DTLS, SDP, the association set-up, stream resets and the data channel
protocol; :class:`FastSctpTransport` replaces the data path of its ``RTCSctpTransport``:

* several DATA chunks (and a pending SACK or FORWARD-TSN) go out in one packet, up to
  :data:`MAX_PACKET_LENGTH` (aiortc's packet size, which every WebRTC stack accepts);
* SACKs are delayed as RFC 4960 section 6.2 allows: one at least for every second packet with DATA,
  at once when a packet shows a gap or a duplicate or carries a FORWARD-TSN, and otherwise two
  event-loop iterations later (when the socket has nothing more queued), never on a timer.
  Delivery to the application is never delayed; a pending SACK rides along with outgoing DATA;
* packets are parsed and built in compiled code (``clasp_fast._sctp``), with every read checked;
  so are the per-chunk loops of the common case: fragmenting a message, filling packets with new
  chunks within both windows, taking acknowledged chunks off a SACK without gaps, and taking
  in-order DATA (whole messages and the fragments of the message being received). Each loop stops
  where aiortc's rules take over (a gap, duplicates, an abandoned or refused message, a stream
  reset, a window to probe), and the Python code goes on from the state the loop left;
* a message sent with nothing in flight leaves at once; messages sent while data is in flight are
  queued and flushed once per event-loop iteration (no task per message); a transmit scans for
  retransmissions only after a loss was detected, and a SACK without gap blocks is handled in
  constant time per acknowledged chunk (aiortc's own handling takes over for gaps, fast recovery
  and abandoned chunks); a fragment that cannot complete a message skips the reassembly scan;
* chunk overhead (header and padding) counts in the congestion window, and new data stays within
  the peer's receive window (RFC 4960 section 6.1 rule A, which aiortc does not apply);
* :mod:`clasp_fast.fast_path` shortens the receive path below SCTP (``fast_receive``).

What an application sees is aiortc's (and the W3C's): ``bufferedAmount`` still counts a message
when ``send()`` returns and ``bufferedamountlow`` fires in a later loop iteration; an exception
from an application's event handler is raised where aiortc raises it, after the rest of its packet
was handled. What the fast path adds as a receiver (RFC 4960 section 6.2, RFC 8831 section 6.6):
a message larger than the advertised ``a=max-message-size`` is refused (its fragments are dropped
as they arrive, an ``error`` event names it, the data channel is closed), DATA beyond the receive
window or further than a SACK can report ahead of the cumulative TSN is dropped unacknowledged,
so what a peer can make the receiver hold is bounded. The receive window also counts what the
application was handed but has not taken yet (:meth:`FastSctpTransport.hold_received`).

The seam: :class:`FastPeerConnection` is an ``RTCPeerConnection`` subclass whose SCTP transport is
turned into a :class:`FastSctpTransport` right after aiortc creates it (aiortc builds it in the
private ``RTCPeerConnection.__createSctpTransport``; the subclass overrides that one method, calls
aiortc's own and adopts the result). Nothing in aiortc is patched, so other ``RTCPeerConnection``
objects in the process keep aiortc's implementation. clasp_fast's WebRTC transport uses
:func:`peer_connection_class` with ``WebRtcConfig.fast_sctp``; ``fast_sctp=False`` gives aiortc's
own ``RTCPeerConnection``.

The subclass relies on aiortc internals (tested with :data:`TESTED_AIORTC_VERSIONS`). It checks
the ones it uses when a connection is created (:func:`missing_sctp_seams`); when one is missing (as
in aiortc 1.14 and 1.15) the connection keeps aiortc's own SCTP and the reason is logged once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from typing import Callable, Optional, Union

import aiortc
from aiortc import RTCPeerConnection
from aiortc import rtcsctptransport as _aio
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcsctptransport import RTCSctpTransport
from OpenSSL import SSL

from . import fast_path
from .dtls_records import evp_status
from .._build_check import load_extension
from ..errors import DecodeError, ProtocolError, TransportError

load_extension("_sctp")  # a missing build fails here with a message that says how to build

from .. import _sctp  # noqa: E402
from .._sctp import DataChunk  # noqa: E402

__all__ = [
    "TESTED_AIORTC_VERSIONS",
    "BUFFERED_AMOUNT_ATTRIBUTE",
    "MAX_PACKET_LENGTH",
    "FastSctpTransport",
    "FastPeerConnection",
    "SctpStats",
    "MAX_TSN_AHEAD",
    "check_aiortc_version",
    "missing_sctp_seams",
    "peer_connection_class",
]

#: aiortc versions this data path was tested against (it uses their private attributes).
TESTED_AIORTC_VERSIONS: tuple[str, ...] = ("1.16.0",)

#: Largest SCTP packet sent (common header included): aiortc's own limit, which fits the minimum
#: IPv6 MTU after UDP and DTLS overhead, and which stock aiortc peers can receive (they read DTLS
#: records of at most 1,500 bytes).
USER_DATA_MAX = _aio.USERDATA_MAX_LENGTH
# aiortc 1.16 names its packet size; 1.14 and 1.15 only their user data size (1,200 bytes).
MAX_PACKET_LENGTH = getattr(_aio, "SCTP_MAX_PACKET_LENGTH", USER_DATA_MAX + 28)
#: Largest SCTP packet sent to a peer that advertises more (``a=x-clasp-max-sctp-packet``) over
#: a path that carries it: one DTLS record's largest plaintext (RFC 6347, 2^14 bytes).
LARGE_PACKET_LENGTH = 16384
#: The SDP attribute (in the data channel's media section) by which a clasp_fast peer says it
#: reads SCTP packets up to this size. Other stacks ignore it.
SDP_MAX_PACKET_ATTRIBUTE = "x-clasp-max-sctp-packet"

#: Packets a burst may add to the flight at one transmit opportunity (RFC 4960 section 6.1
#: suggests Max.Burst = 4; the loopback and LAN paths clasp_fast targets take more).
MAX_BURST_PACKETS = 8
#: Cap on the SACK's gap blocks and duplicate TSNs, so one SACK always fits one packet.
MAX_SACK_GAPS = 200
MAX_SACK_DUPLICATES = 16
#: DATA further than this ahead of the cumulative TSN is dropped unacknowledged (the sender
#: resends it): no SACK gap block can report it, and it bounds the out-of-order bookkeeping.
MAX_TSN_AHEAD = 0xFFFF
# Loss probes (see FastSctpTransport._loss_probe_due): at most this many in a row without a SACK,
# the first after twice the smoothed round trip but not sooner than LOSS_PROBE_MIN seconds (Linux's
# TCP takes 10 ms; 5 ms recovers faster on loopback and LAN paths, while 2 ms sent probes without
# loss when a busy receiver took longer than that to answer a batch).
MAX_LOSS_PROBES = 2
LOSS_PROBE_MIN = 0.005
# With one packet in flight, the wait also covers a peer's delayed SACK (200 ms at most).
LOSS_PROBE_DELAYED_SACK = 0.2
# The probe timer looks again at least this often (the round-trip estimate may have changed).
LOSS_PROBE_RECHECK = 0.05
#: New data queued while earlier data is unacknowledged waits for the SACK that acknowledges it
#: (whose handling sends it, with whatever else was queued by then: fewer, fuller packets under
#: load, as Nagle's rule), but for at most this many more loop iterations and FLUSH_HOLD seconds:
#: a peer that delays its SACK, or a slow event loop, holds it back no longer than that.
FLUSH_HOLD_ITERATIONS = 3
FLUSH_HOLD = 0.0005
# A timer that fires this close to its deadline counts as on time (uvloop rounds timers to whole
# milliseconds, so they may fire up to half of one early).
TIMER_SLACK = 0.001

logger = logging.getLogger(__name__)

_CHUNK_SACK = _sctp.CHUNK_SACK
_CHUNK_FORWARD_TSN = _sctp.CHUNK_FORWARD_TSN
_CHUNK_INIT = _aio.InitChunk.type
_CHUNK_ABORT = _aio.AbortChunk.type
_FIRST_LAST = _aio.SCTP_DATA_FIRST_FRAG | _aio.SCTP_DATA_LAST_FRAG
_BINARY = _aio.WEBRTC_BINARY
_UNORDERED = _aio.SCTP_DATA_UNORDERED
_ESTABLISHED = RTCSctpTransport.State.ESTABLISHED
_CLOSED = RTCSctpTransport.State.CLOSED


def check_aiortc_version(version: str | None = None) -> None:
    """Raise TransportError unless ``version`` (default: the installed aiortc) is one the fast SCTP
    path was tested with. :class:`FastPeerConnection` does not call it: it checks the seams it
    uses (:func:`missing_sctp_seams`) and falls back to aiortc's SCTP when one is missing."""
    version = aiortc.__version__ if version is None else version
    if version not in TESTED_AIORTC_VERSIONS:
        raise TransportError(
            f"clasp_fast's fast SCTP data path is tested with aiortc {', '.join(TESTED_AIORTC_VERSIONS)} "
            f"and aiortc {version} is installed; install a tested version "
            f"(pip install 'aiortc=={TESTED_AIORTC_VERSIONS[-1]}') or set WebRtcConfig(fast_sctp=False)",
            step="sctp",
        )


# What FastSctpTransport uses of aiortc's RTCSctpTransport: the state of its data path (set in
# __init__; checked on a fresh instance) and the methods it calls or overrides. aiortc 1.14 and
# 1.15 lack the partial-reliability and stream-reset state of 1.16 (_forward_tsn_streams,
# _reconfig_deferred), so they keep aiortc's own SCTP.
_SCTP_STATE = (
    "_advanced_peer_ack_tsn", "_advertised_rwnd", "_association_state", "_cwnd", "_data_channel_id",
    "_data_channel_queue", "_data_channels", "_fast_recovery_exit", "_fast_recovery_transmit",
    "_flight_size", "_forward_tsn_chunk", "_forward_tsn_streams", "_inbound_streams",
    "_last_received_tsn", "_last_sacked_tsn", "_local_port", "_local_tsn", "_local_verification_tag",
    "_loop", "_outbound_queue", "_outbound_stream_seq", "_partial_bytes_acked", "_reconfig_deferred",
    "_reconfig_queue", "_remote_max_message_size", "_remote_port", "_remote_verification_tag", "_sack_duplicates",
    "_rto", "_sack_misordered", "_sack_needed", "_sent_queue", "_srtt", "_t3_handle",
)
_SCTP_METHODS = (
    "_data_channel_close", "_data_channel_receive", "_flight_size_increase", "_get_inbound_stream",
    "_maybe_abandon", "_receive_chunk", "_receive_forward_tsn_chunk", "_receive_sack_chunk",
    "_reset_deferred_streams", "_set_state", "_t3_cancel", "_t3_restart", "_t3_start",
    "_transmit_reconfig", "_update_advanced_peer_ack_point", "_update_rto", "_data_channel_flush",
    "_send", "_transmit", "_handle_data", "_send_sack", "_data_channel_send",
)
_PC_SEAM = "_RTCPeerConnection__createSctpTransport"
#: The attribute behind RTCDataChannel.bufferedAmount: send_message adds to it directly, and a
#: channel's sender reads it (a seam: checked by missing_sctp_seams()).
BUFFERED_AMOUNT_ATTRIBUTE = "_RTCDataChannel__bufferedAmount"


def _property_reads(prop: object, name: str) -> bool:
    """Whether the getter of ``prop`` (a property) reads the attribute ``name``."""
    code = getattr(getattr(prop, "fget", None), "__code__", None)
    return code is not None and name in code.co_names


def missing_sctp_seams(transport: Optional[RTCSctpTransport] = None) -> list[str]:
    """What the fast SCTP path needs of aiortc that this aiortc (or ``transport``, a fresh
    RTCSctpTransport) lacks; empty when it can run."""
    missing = [f"RTCSctpTransport.{name}" for name in _SCTP_METHODS
               if not callable(getattr(RTCSctpTransport, name, None))]
    if not callable(getattr(RTCPeerConnection, _PC_SEAM, None)):
        missing.append("RTCPeerConnection.__createSctpTransport")
    if not hasattr(_aio.InboundStream, "pop_messages"):
        missing.append("InboundStream.pop_messages")
    if not _property_reads(RTCDataChannel.bufferedAmount, BUFFERED_AMOUNT_ATTRIBUTE):
        missing.append(f"RTCDataChannel.{BUFFERED_AMOUNT_ATTRIBUTE}")
    if not _EMITTER_TABLE_WORKS:
        missing.append(EMITTER_TABLE)
    if transport is not None:
        missing += [f"RTCSctpTransport.{name}" for name in _SCTP_STATE if not hasattr(transport, name)]
    return missing


_fallback_logged: set[str] = set()


def _log_fallback(reason: str) -> None:
    if reason not in _fallback_logged:
        _fallback_logged.add(reason)
        logger.warning("clasp_fast's fast SCTP path is off (aiortc %s's own SCTP is used): %s",
                       aiortc.__version__, reason)


class SctpStats:
    """Packet counters of one :class:`FastSctpTransport`.

    ``data_chunks_dropped``: DATA not accepted (receive window used up, or too far ahead; the
    sender resends it). ``messages_refused``: messages over the advertised maximum message size.
    ``loss_probes``: chunks sent again because no SACK came back in time (see
    :meth:`FastSctpTransport._loss_probe_due`). ``yields``: messages that left at once to a peer
    on this host, after which the CPU was given up (``yield_to_local_peer``).
    """

    packets_sent: int
    packets_received: int
    data_chunks_sent: int
    data_chunks_received: int
    retransmissions: int
    sacks_sent: int
    sacks_bundled: int
    malformed_packets: int
    data_chunks_dropped: int
    messages_refused: int
    loss_probes: int
    yields: int

    __slots__ = (
        "packets_sent",
        "packets_received",
        "data_chunks_sent",
        "data_chunks_received",
        "retransmissions",
        "sacks_sent",
        "sacks_bundled",
        "malformed_packets",
        "data_chunks_dropped",
        "messages_refused",
        "loss_probes",
        "yields",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"SctpStats({self.as_dict()})"


def _emitter_table_works(emitter_class: Optional[type] = None) -> bool:
    """Whether ``emitter_class`` (default: RTCDataChannel's event emitter, pyee's) keeps its
    listeners as ``_events[event]``, a mapping of each listener to what ``emit()`` calls (for a
    ``once`` listener, a wrapper that removes it first)."""
    try:
        if emitter_class is None:
            emitter_class = next(c for c in RTCDataChannel.__mro__[1:] if hasattr(c, "emit"))
        emitter = emitter_class()
        calls: list[object] = []
        emitter.once("message", calls.append)
        handlers = getattr(emitter, "_events", {}).get("message")
        if not isinstance(handlers, dict) or list(handlers) != [calls.append]:
            return False
        (call,) = handlers.values()
        call(b"x")
        return calls == [b"x"] and emitter.listeners("message") == []
    except Exception:  # an emitter unlike pyee's: the fast path stays off, saying why
        return False


#: The seam _emit_message and _emit_buffered_amount_low read (checked by missing_sctp_seams()).
EMITTER_TABLE = "pyee EventEmitter._events"
_EMITTER_TABLE_WORKS = _emitter_table_works()

# Both emit an event as pyee's AsyncIOEventEmitter does, calling a single listener's handler
# directly (a ``once`` listener's wrapper removes it first): an exception goes to the channel's
# ``error`` event (raised when it has no listener), a coroutine or future it returns is run and its
# exception reported the same way. Two functions, not one with ``*args``: the message one runs
# once per DataChannel message received.


def _emit_message(channel: RTCDataChannel, data: bytes) -> None:
    """``channel.emit("message", data)``."""
    handlers = channel._events.get("message")  # seam (pyee): listener -> what emit() calls
    if handlers is None or len(handlers) != 1:
        channel.emit("message", data)
        return
    (call,) = handlers.values()
    try:
        result = call(data)
    except Exception as error:
        channel.emit("error", error)
        return
    if result is not None:
        _run_handler_result(channel, result)


def _emit_buffered_amount_low(channel: RTCDataChannel) -> None:
    """``channel.emit("bufferedamountlow")``."""
    handlers = channel._events.get("bufferedamountlow")
    if handlers is None or len(handlers) != 1:
        channel.emit("bufferedamountlow")
        return
    (call,) = handlers.values()
    try:
        result = call()
    except Exception as error:
        channel.emit("error", error)
        return
    if result is not None:
        _run_handler_result(channel, result)


def _run_handler_result(channel: RTCDataChannel, result: object) -> None:
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        future = asyncio.ensure_future(result)

        def reported(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is not None:
                channel.emit("error", done.exception())

        future.add_done_callback(reported)


def _tsn_add(tsn: int, n: int) -> int:
    return (tsn + n) & 0xFFFFFFFF


def _tsn_gte(a: int, b: int) -> bool:
    """Serial number arithmetic (RFC 1982): a is b or after it."""
    return ((a - b) & 0xFFFFFFFF) < 0x80000000


def _continues(previous, chunk) -> bool:
    """Whether ``chunk`` is the next fragment of the message ``previous`` belongs to."""
    return (
        chunk.tsn == (previous.tsn + 1) & 0xFFFFFFFF
        and not previous.flags & _aio.SCTP_DATA_LAST_FRAG
        and not chunk.flags & _aio.SCTP_DATA_FIRST_FRAG
    )


def _run_around(reassembly: list, index: int) -> tuple[int, int]:
    """First and last index of the fragments of one message, consecutive in TSN, around ``index``."""
    first = last = index
    while first > 0 and _continues(reassembly[first - 1], reassembly[first]):
        first -= 1
    while last + 1 < len(reassembly) and _continues(reassembly[last], reassembly[last + 1]):
        last += 1
    return first, last


class FastSctpTransport(RTCSctpTransport):
    """aiortc's SCTP transport with a bundling, SACK-delaying, compiled data path.

    Created by adopting a fresh ``RTCSctpTransport`` (:meth:`adopt`) before it starts.
    """

    stats: SctpStats
    # aiortc (and pyee under it) declare these Optional; both are set before a packet goes out.
    _loop: asyncio.AbstractEventLoop
    _remote_port: int
    # aiortc's queues hold the compiled DataChunk here (aiortc types them with its own chunk class).
    _outbound_queue: deque[DataChunk]  # type: ignore[assignment]
    _sent_queue: deque[DataChunk]  # type: ignore[assignment]
    #: Use clasp_fast.fast_path's data plane (set before the transport starts); with it,
    #: ``fast_dtls`` lets the compiled record layer take the DTLS records over and
    #: ``udp_batching`` reads and writes many datagrams per system call.
    fast_receive: bool = True
    #: Take in-order DATA chunks in compiled code (``_sctp.receive_in_order``); False sends every
    #: chunk through the Python path (the tests compare the two).
    compiled_receive: bool = True
    fast_dtls: bool = True
    udp_batching: bool = True
    #: After a message that leaves at once (nothing in flight) toward a peer on this host, give
    #: the CPU up (``os.sched_yield``): Linux wakes the receiving process on the sender's CPU and
    #: otherwise runs it only once the sender sleeps (docs/data-plane.md, twelfth step).
    yield_to_local_peer: bool = True
    #: The connection's data plane once started (None: aiortc's path below SCTP).
    data_plane: Optional[fast_path.DataPlane] = None
    # True while the data plane hands over one received batch (one SACK answers all of it).
    _receiving_batch: bool = False

    @classmethod
    def adopt(cls, transport: RTCSctpTransport) -> "FastSctpTransport":
        """Turn an aiortc SCTP transport that has not started yet into a FastSctpTransport."""
        if type(transport) is not RTCSctpTransport:
            raise TypeError(f"can only adopt an aiortc RTCSctpTransport, got {type(transport).__name__}")
        if transport.state != "new":
            raise TransportError("the SCTP transport has already started", step="sctp")
        transport.__class__ = cls
        transport._fast_init()  # type: ignore[attr-defined]
        return transport  # type: ignore[return-value]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fast_init()

    def _fast_init(self) -> None:
        self.stats = SctpStats()
        self._outbound_queue = deque(self._outbound_queue)
        self._outbound_bytes = 0
        self._flush_handle: Optional[asyncio.Handle] = None
        self._sack_handle: Optional[asyncio.Handle] = None
        self._packets_since_sack = 0
        self._retransmit_scan = False
        self._in_sack_handling = False
        # The a_rwnd of the peer's latest SACK (None before the first): new data stays within it.
        self._peer_window: Optional[int] = None
        # Receiver limits: the advertised maximum message size and aiortc's initial a_rwnd.
        self._max_receive_size = self.getCapabilities().maxMessageSize
        self._receive_window = self._advertised_rwnd
        # Per stream id: (TSN, bytes) of the message whose fragments end the reassembly list, counted
        # up to that TSN (a lower bound of its size); and (stream, last fragment) of a refused message
        # whose fragments are being dropped (the stream object changes when the stream is reset).
        self._tail_message_bytes: dict[int, tuple[int, int]] = {}
        self._refused: dict[int, tuple[_aio.InboundStream, DataChunk]] = {}
        # Exceptions raised by application event handlers while a packet is handled.
        self._handler_errors: list[Exception] = []
        self._sack_urgent = False
        self._acked_bytes = 0  # acknowledged by the SACK being handled (the next burst's size)
        # Zero-window probing: the persist timer, and whether one chunk may go into a closed window.
        self._probe_handle: Optional[asyncio.TimerHandle] = None
        self._probe_allowed = True
        # Loss probes: the timer, whether data is waiting for a SACK, when the last SACK came (or
        # the wait started; loop time), probes sent since.
        self._loss_probe_handle: Optional[asyncio.TimerHandle] = None
        self._loss_probe_waiting = False
        self._last_sack_at = 0.0
        self._loss_probes = 0
        # T3 runs (aiortc's _t3_handle is not None) until _t3_deadline; _t3_timer is the one
        # timer behind it, which may outlive a stop (see _t3_start).
        self._t3_deadline = 0.0
        self._t3_timer: Optional[asyncio.TimerHandle] = None
        # Packet size toward the peer (see set_max_packet) and the user data of a full DATA chunk.
        self._max_packet = MAX_PACKET_LENGTH
        self._user_data_max = USER_DATA_MAX
        #: What the peer's SDP says it reads (a=x-clasp-max-sctp-packet), None if it said nothing.
        self.remote_max_packet: Optional[int] = None

    @property
    def max_packet(self) -> int:
        """Largest SCTP packet this transport sends (common header included)."""
        return self._max_packet

    @property
    def user_data_max(self) -> int:
        """User data of a full DATA chunk at :attr:`max_packet`."""
        return self._user_data_max

    def set_max_packet(self, length: int) -> None:
        """Send packets of up to ``length`` bytes from now on (messages queued already keep their
        fragments). The caller makes sure the peer reads them and the path carries them."""
        length = max(MAX_PACKET_LENGTH, min(length, LARGE_PACKET_LENGTH))
        self._max_packet = length
        self._user_data_max = (length - _sctp.COMMON_HEADER_LENGTH - _sctp.DATA_CHUNK_HEADER_LENGTH) // 4 * 4
        # RFC 4960 section 7.2.1: the initial window for this packet size.
        self._cwnd = max(self._cwnd, min(4 * length, max(2 * length, 4380)))

    # -- helpers -----------------------------------------------------------------------------

    async def _send_packet(self, control: bytes, chunks: list) -> None:
        packet = _sctp.build_packet(self._local_port, self._remote_port, self._remote_verification_tag, control, chunks)
        self.stats.packets_sent += 1
        try:
            await self.transport._send_data(packet)
        except SSL.Error as error:
            # DTLS shut down (close() in progress) but not marked closed yet.
            raise ConnectionError(f"DTLS transport is shutting down: {error}") from None

    # -- receive -----------------------------------------------------------------------------

    async def _handle_data(self, data: bytes) -> None:
        try:
            _, _, verification_tag, chunks = _sctp.parse_packet(data)
        except DecodeError:
            self.stats.malformed_packets += 1
            return
        self.stats.packets_received += 1

        expected_tag = self._local_verification_tag
        for chunk in chunks:
            if type(chunk) is tuple and chunk[0] == _CHUNK_INIT:
                if len(chunks) != 1:
                    # RFC 4960 section 6.10: an INIT is never bundled.
                    self.stats.malformed_packets += 1
                    return
                expected_tag = 0
        if verification_tag != expected_tag:
            return
        await self._handle_chunks(chunks)

    async def _handle_chunks(self, chunks: list, with_data: bool = False) -> None:
        """The chunks of one packet (``with_data``: DATA of it was taken already), then the SACK
        rules; an exception from an application handler is raised once the packet was handled."""
        urgent = False
        errors = self._handler_errors
        # In-order DATA (the common case) in compiled code; whatever follows goes through the loop.
        completed: list[tuple[int, int, bytes]] = []
        taken = _sctp.receive_in_order(self, chunks, 0, completed) if self.compiled_receive else 0
        if taken:
            with_data = True
            for message in completed:
                await self._receive(*message)
            chunks = chunks[taken:]
        for chunk in chunks:
            try:
                if type(chunk) is DataChunk:
                    with_data = True
                    await self._receive_data_chunk(chunk)
                elif chunk[0] == _CHUNK_SACK:
                    await self._receive_sack(chunk)
                elif chunk[0] == _CHUNK_FORWARD_TSN:
                    urgent = True
                    forward = _aio.ForwardTsnChunk()
                    forward.cumulative_tsn = chunk[1]
                    forward.streams = chunk[2]
                    await self._receive_forward_tsn_chunk(forward)
                elif chunk[0] == _CHUNK_ABORT:
                    # aiortc's own receive path reaches SCTP one loop iteration after the datagram;
                    # the ABORT keeps that timing, so that what arrived just before it on another path
                    # (e.g. a "disconnected" signal) is seen before every channel closes.
                    self._loop.call_soon(self._abort_received, _aio.AbortChunk(flags=chunk[1], body=chunk[2]))
                else:
                    cls = _aio.CHUNK_TYPES.get(chunk[0])
                    if cls is not None:
                        await self._receive_chunk(cls(flags=chunk[1], body=chunk[2]))
            except Exception as error:  # an application's event handler (or the DTLS layer) raised
                errors.append(error)

        if self._sack_needed:
            self._packets_since_sack += with_data
            # Within a batch one SACK answers it all, unless there is a gap: then each packet is
            # answered at once (RFC 4960 section 6.7), so the sender counts its three miss
            # indications and fast-retransmits instead of waiting for T3.
            if self._receiving_batch and not (self._sack_misordered or self._sack_duplicates):
                self._sack_urgent = self._sack_urgent or urgent  # answered once the batch is through
            elif urgent or self._sack_misordered or self._sack_duplicates or self._packets_since_sack >= 2:
                try:
                    await self._send_sack()
                except ConnectionError as error:
                    errors.append(error)
            elif self._sack_handle is None:
                self._sack_handle = self._loop.call_soon(self._sack_due, 1)
        self._raise_handler_error()

    def deliver(self, messages: list[tuple[int, int, bytes]],
                on_error: fast_path.ErrorHandler) -> None:
        """Hand up messages the compiled receive path completed (``_sctp.receive_datagrams``).

        Binary messages within the size limit (``_receive``'s common case) go up at once, without a
        coroutine; from the first other one on, aiortc's ``_receive`` takes them in a coroutine.
        The first exception an application handler raised goes to ``on_error`` once every message
        was handed up (a ConnectionError is dropped: the transport is closing), as
        ``fast_path.run_now`` reports it.
        """
        limit = self._max_receive_size
        for index, (stream_id, pp_id, data) in enumerate(messages):
            if pp_id != _BINARY or len(data) > limit:
                fast_path.run_now(self._deliver(messages, index), self._loop, on_error)
                return
            self._hand_up(stream_id, data)
        if self._handler_errors:
            try:
                self._raise_handler_error()
            except ConnectionError:
                pass
            except Exception as error:
                on_error(error)

    async def _deliver(self, messages: list[tuple[int, int, bytes]], start: int = 0) -> None:
        limit = self._max_receive_size
        for index in range(start, len(messages)):
            stream_id, pp_id, data = messages[index]
            if pp_id == _BINARY and len(data) <= limit:
                self._hand_up(stream_id, data)
            else:
                await self._receive(stream_id, pp_id, data)
        self._raise_handler_error()

    def _raise_handler_error(self) -> None:
        """Raise the first exception an application handler raised while a packet or batch was
        handled: where aiortc raises it (its DTLS receive loop ends), once every other message
        in it was handed up."""
        errors = self._handler_errors
        if errors:
            first = errors[0]
            errors.clear()
            raise first

    async def _batch_received(self) -> None:
        """The data plane handed over a batch of packets: one SACK answers them (RFC 4960
        section 6.2's every-second-packet rule and immediate SACKs then apply per batch)."""
        urgent, self._sack_urgent = self._sack_urgent, False
        if not self._sack_needed or self._association_state == _CLOSED:
            return
        if urgent or self._sack_misordered or self._sack_duplicates or self._packets_since_sack >= 2:
            await self._send_sack()
        elif self._sack_handle is None:
            self._sack_handle = self._loop.call_soon(self._sack_due, 1)

    def _probe_due(self) -> None:
        self._probe_handle = None
        self._probe_allowed = True
        if self._association_state == _ESTABLISHED:
            fast_path.run_now(self._transmit(), self._loop)

    def _abort_received(self, chunk) -> None:
        if self._association_state != _CLOSED:
            fast_path.run_now(self._receive_chunk(chunk), self._loop)

    def _sack_due(self, wait: int) -> None:
        # asyncio reads one datagram per wake-up: give the socket one more loop iteration to hand
        # over a second packet (then the every-second-packet rule answers both at once).
        if wait:
            self._sack_handle = self._loop.call_soon(self._sack_due, wait - 1)
            return
        self._sack_handle = None
        if self._sack_needed and self._association_state != _CLOSED:
            fast_path.run_now(self._send_sack(), self._loop)

    def _mark_received(self, tsn: int) -> bool:
        """Record a DATA chunk's TSN; True when the chunk is not to be processed (as aiortc's)."""
        last = self._last_received_tsn
        if last is None:
            return True  # DATA before the association's INIT: nothing to deliver it against
        misordered = self._sack_misordered
        offset = (tsn - last) & 0xFFFFFFFF
        if offset == 1 and not misordered:
            self._last_received_tsn = tsn  # in order with no gap outstanding: the common case
            return False
        if offset == 0 or offset >= 0x80000000 or tsn in misordered:
            self._sack_duplicates.append(tsn)
            return True
        if offset > MAX_TSN_AHEAD:
            self.stats.data_chunks_dropped += 1
            return True
        misordered.add(tsn)
        if offset == 1:
            # The gap closed: move the cumulative TSN over every TSN received after it.
            while tsn in misordered:
                misordered.discard(tsn)
                last = tsn
                tsn = (tsn + 1) & 0xFFFFFFFF
            self._last_received_tsn = last
        if self._sack_duplicates:
            self._sack_duplicates = [t for t in self._sack_duplicates if not _tsn_gte(last, t)]
        return False

    def hold_received(self, amount: int) -> None:
        """Count ``amount`` received bytes the application has not taken yet against the receive
        window (negative: it took them), like data waiting for reassembly.

        When taking them reopens a window that was less than half open, a SACK tells the peer at
        once (a window update) rather than with its next DATA, which a peer that keeps to the
        window does not send.
        """
        before = self._advertised_rwnd
        self._advertised_rwnd -= amount
        half = self._receive_window // 2
        if before < half <= self._advertised_rwnd and self._association_state == _ESTABLISHED:
            self._sack_needed = True
            if self._sack_handle is None:
                self._sack_handle = self._loop.call_soon(self._sack_due, 0)

    def _may_hold(self, chunk) -> bool:
        """Whether a chunk fits although the receive window is used up.

        RFC 4960 section 6.2: only the chunk that moves the cumulative TSN is taken (so a peer that
        respects the window always makes progress), and not even that one beyond twice the window,
        which only a peer that ignores the window reaches (skipping stream sequence numbers, or
        outrunning an application that has not taken what it received).
        """
        last = self._last_received_tsn
        if last is None:
            return True
        held = self._receive_window - self._advertised_rwnd + len(chunk.user_data)
        return chunk.tsn == _tsn_add(last, 1) and held <= 2 * self._receive_window

    async def _receive_data_chunk(self, chunk) -> None:
        self._sack_needed = True
        self.stats.data_chunks_received += 1
        stream_id = chunk.stream_id
        stream = self._inbound_streams.get(stream_id)
        if stream is None:
            stream = self._get_inbound_stream(stream_id)
        flags = chunk.flags
        # A whole message with nothing waiting for reassembly on its stream goes straight up.
        whole = (
            (flags & _FIRST_LAST) == _FIRST_LAST
            and not stream.reassembly
            and (flags & _UNORDERED or chunk.stream_seq == stream.sequence_number)
        )
        if self._advertised_rwnd < len(chunk.user_data) and not self._may_hold(chunk):
            self.stats.data_chunks_dropped += 1
            return
        if self._mark_received(chunk.tsn):
            return

        if whole:
            if not flags & _UNORDERED:
                stream.sequence_number = (stream.sequence_number + 1) & 0xFFFF
            await self._receive(stream_id, chunk.protocol, chunk.user_data)
        elif stream_id in self._refused and await self._drop_refused_fragment(stream, chunk):
            pass
        else:
            await self._reassemble(stream, chunk)
        if self._reconfig_deferred is not None:
            await self._reset_deferred_streams()

    async def _reassemble(self, stream, chunk) -> None:
        stream_id = chunk.stream_id
        reassembly = stream.reassembly
        size = len(chunk.user_data)
        previous = reassembly[-1] if reassembly else None
        at_end = previous is None or _tsn_gte(chunk.tsn, previous.tsn)
        stream.add_chunk(chunk)
        self._advertised_rwnd -= size
        # A message's fragments have consecutive TSNs: the bytes of the run of fragments a chunk
        # joins are a lower bound of its message's size, and a message beyond the maximum is
        # refused as it grows (RFC 9260 section 6.9).
        if at_end:
            # Appended: counted from the run it continues, in constant time.
            if previous is not None and _continues(previous, chunk):
                counted_tsn, counted = self._tail_message_bytes.get(stream_id, (None, 0))
                if counted_tsn == previous.tsn:
                    size += counted
        else:
            # It filled a gap: count the run it joined (rare: after loss or reordering).
            first, last = _run_around(reassembly, reassembly.index(chunk))
            size = sum(len(c.user_data) for c in reassembly[first : last + 1])
            at_end = last == len(reassembly) - 1
        if at_end:
            self._tail_message_bytes[stream_id] = (reassembly[-1].tsn, size)
        if size > self._max_receive_size:
            await self._refuse(stream, chunk)
            return
        # A fragment appended after every other one that is not a message's last cannot complete
        # anything: skip aiortc's scan of the whole reassembly list (quadratic in fragments).
        if reassembly[-1] is chunk and not chunk.flags & _aio.SCTP_DATA_LAST_FRAG:
            return
        for message in stream.pop_messages():
            self._advertised_rwnd += len(message[2])
            await self._receive(*message)

    async def _refuse(self, stream, chunk) -> None:
        """Refuse the too large message ``chunk`` belongs to: drop its fragments, now and later."""
        reassembly = stream.reassembly
        if chunk.flags & _UNORDERED:
            first, last = _run_around(reassembly, reassembly.index(chunk))
            dropped: list[DataChunk] = reassembly[first : last + 1]
            stream.reassembly = reassembly[:first] + reassembly[last + 1 :]
            tail = dropped[-1]
        else:
            # Every fragment of an ordered message carries its stream sequence number.
            kept: list[DataChunk] = []
            dropped = []
            for c in reassembly:
                (dropped if not c.flags & _UNORDERED and c.stream_seq == chunk.stream_seq else kept).append(c)
            stream.reassembly = kept
            tail = chunk
        self._advertised_rwnd += sum(len(c.user_data) for c in dropped)
        self._tail_message_bytes.pop(chunk.stream_id, None)
        self._refuse_message(chunk.stream_id, None)
        self._refused[chunk.stream_id] = (stream, tail)
        if any(c.flags & _aio.SCTP_DATA_LAST_FRAG for c in dropped):
            await self._end_refused_message(stream, tail)

    async def _drop_refused_fragment(self, stream, chunk) -> bool:
        """Drop ``chunk`` if it belongs to a refused message; True when dropped."""
        refused_stream, tail = self._refused[chunk.stream_id]
        if refused_stream is not stream:
            del self._refused[chunk.stream_id]  # the stream was reset since
            return False
        if (chunk.flags & _UNORDERED) != (tail.flags & _UNORDERED):
            return False
        if not chunk.flags & _UNORDERED:
            if chunk.stream_seq != tail.stream_seq:
                return False  # an ordered message's fragments, late ones included, carry its number
            if chunk.flags & _aio.SCTP_DATA_LAST_FRAG:
                await self._end_refused_message(stream, chunk)
            return True
        if not _continues(tail, chunk):
            return False
        # An unordered message's fragments: consecutive TSNs after the last one dropped, including
        # any that arrived earlier, after a gap this chunk fills.
        while True:
            if chunk.flags & _aio.SCTP_DATA_LAST_FRAG:
                await self._end_refused_message(stream, chunk)
                return True
            self._refused[chunk.stream_id] = (stream, chunk)
            following = next((c for c in stream.reassembly if _continues(chunk, c)), None)
            if following is None:
                return True
            stream.reassembly.remove(following)
            self._advertised_rwnd += len(following.user_data)
            chunk = following

    async def _end_refused_message(self, stream, chunk) -> None:
        """Every fragment of a refused message arrived: its stream moves on as if it was delivered."""
        if chunk.flags & _UNORDERED:
            del self._refused[chunk.stream_id]
        elif chunk.stream_seq == stream.sequence_number:
            stream.sequence_number = (stream.sequence_number + 1) & 0xFFFF
            for message in stream.pop_messages():
                self._advertised_rwnd += len(message[2])
                await self._receive(*message)

    async def _reset_deferred_streams(self) -> None:
        request = self._reconfig_deferred
        last = self._last_received_tsn
        if request is not None and last is not None and _tsn_gte(last, request.last_tsn):
            # aiortc drops the streams' reassembly lists: give their bytes back to the window.
            for stream_id in request.streams:
                stream = self._inbound_streams.get(stream_id)
                if stream is not None:
                    self._advertised_rwnd += sum(len(c.user_data) for c in stream.reassembly)
                self._tail_message_bytes.pop(stream_id, None)
                self._refused.pop(stream_id, None)
        await super()._reset_deferred_streams()

    def _refuse_message(self, stream_id: int, size: Optional[int]) -> None:
        """Report a message over the advertised maximum size and close its data channel.

        RFC 8831 section 6.6: a receiver that detects an error in a received message should close
        the data channel. The channel gets an ``error`` event first (the W3C's order), else the
        error is logged.
        """
        self.stats.messages_refused += 1
        channel = self._data_channels.get(stream_id)
        label = repr(channel.label) if channel is not None else "(none)"
        amount = f"{size} bytes" if size is not None else f"more than {self._max_receive_size} bytes"
        error = ProtocolError(
            f"DataChannel {label} (SCTP stream {stream_id}): refused a message of {amount}; the "
            f"advertised maximum message size is {self._max_receive_size} bytes (the channel is closed)"
        )
        if channel is not None and channel.listeners("error"):
            try:
                channel.emit("error", error)
            except Exception as handler_error:
                self._handler_errors.append(handler_error)
        else:
            logger.warning("%s", error)
        if channel is not None:
            self._data_channel_close(channel)

    async def _receive(self, stream_id: int, pp_id: int, data: bytes) -> None:
        if len(data) > self._max_receive_size:
            self._refuse_message(stream_id, len(data))
            return
        if pp_id == _BINARY:
            self._hand_up(stream_id, data)
            return
        try:
            await self._data_channel_receive(stream_id, pp_id, data)
        except Exception as error:
            # An application's event handler raised: the packet's other messages come first.
            self._handler_errors.append(error)

    def _hand_up(self, stream_id: int, data: bytes) -> None:
        """A binary message to its stream's channel, if it has one, as aiortc emits it; without
        pyee's emit() (about 5 µs a message here) when the channel has one listener."""
        channel = self._data_channels.get(stream_id)
        if channel is not None:
            try:
                _emit_message(channel, data)
            except Exception as error:
                # An application's event handler raised: the packet's other messages come first.
                self._handler_errors.append(error)

    async def _receive_sack(self, parsed: tuple) -> None:
        _, cumulative, rwnd, gaps, duplicates = parsed
        if (
            gaps
            or self._fast_recovery_exit is not None
            or self._forward_tsn_streams
            or self._advanced_peer_ack_tsn != self._last_sacked_tsn
            or not _tsn_gte(cumulative, self._last_sacked_tsn)
        ):
            # Loss, recovery or partial reliability at work: the full rules.
            await self._receive_sack_with_gaps(cumulative, rwnd, gaps)
            return

        # The common case, as aiortc (RFC 4960 sections 6.3.3, 7.2.1 and 7.2.2) without gap blocks.
        done, done_bytes, cwnd_fully_utilized = self._acknowledge_cumulative(cumulative, rwnd)
        self._acked_bytes = done_bytes
        if done and cwnd_fully_utilized:
            self._grow_cwnd(done_bytes)
        self._restart_timers(done)
        sent_queue = self._sent_queue
        if (sent_queue and sent_queue[0]._abandoned) or (self._outbound_queue and self._outbound_queue[0]._abandoned):
            self._update_advanced_peer_ack_point()
        else:
            self._advanced_peer_ack_tsn = cumulative
        if self._data_channel_queue:
            await self._data_channel_flush()
        elif self._outbound_queue or self._retransmit_scan or self._forward_tsn_chunk is not None:
            await self._transmit()

    def _acknowledge_cumulative(self, cumulative: int, rwnd: int) -> tuple[int, int, bool]:
        """What every SACK does first: note its arrival (loss probes), take its peer window, and take
        the chunks up to its cumulative TSN off the sent queue, with a round-trip sample from the
        first when it was sent once. Returns (chunks taken, bytes newly acknowledged, whether the
        congestion window was in full use before)."""
        self._last_sack_at = self._loop.time()
        self._loss_probes = 0
        received_time = time.time()
        self._last_sacked_tsn = cumulative
        self._peer_window = rwnd
        cwnd_fully_utilized = self._flight_size >= self._cwnd
        done, done_bytes, left_flight, sent_time = _sctp.acknowledge(self._sent_queue, cumulative)
        self._flight_size -= left_flight
        if sent_time is not None:
            self._update_rto(received_time - sent_time)
        return done, done_bytes, cwnd_fully_utilized

    def _restart_timers(self, done: int) -> None:
        """After a SACK: nothing outstanding stops T3 and the loss probes; progress restarts T3."""
        if not self._sent_queue:
            self._t3_cancel()
            self._stop_loss_probe()
        elif done:
            self._t3_restart()

    def _grow_cwnd(self, acked_bytes: int) -> None:
        """Slow start or congestion avoidance for a SACK that moved the cumulative TSN while the
        window was in full use (RFC 4960 section 7.2.1 and 7.2.2)."""
        if self._cwnd <= self._ssthresh:
            self._cwnd += min(acked_bytes, self._user_data_max)
        else:
            self._partial_bytes_acked += acked_bytes
            if self._partial_bytes_acked >= self._cwnd:
                self._partial_bytes_acked -= self._cwnd
                self._cwnd += self._user_data_max

    async def _receive_sack_chunk(self, chunk) -> None:
        # aiortc's entry point (its _receive_chunk and its tests): the same rules as a parsed SACK.
        await self._receive_sack_with_gaps(chunk.cumulative_tsn, chunk.advertised_rwnd, chunk.gaps)

    async def _receive_sack_with_gaps(self, cumulative: int, rwnd: int, gaps: list) -> None:
        """A SACK with gap blocks, or one during fast recovery or partial reliability: aiortc's
        rules (RFC 4960 sections 6.3.3 and 7.2, RFC 3758), with the per-chunk loops compiled
        (``_sctp.acknowledge``, ``_sctp.acknowledge_gaps``)."""
        if not _tsn_gte(cumulative, self._last_sacked_tsn):
            return  # older than the last one: reordered on the way
        done, done_bytes, cwnd_fully_utilized = self._acknowledge_cumulative(cumulative, rwnd)
        sent_queue = self._sent_queue
        lost = False
        if gaps:
            gap_bytes, left_flight, lost = _sctp.acknowledge_gaps(self, sent_queue, cumulative, gaps)
            done_bytes += gap_bytes
            self._flight_size -= left_flight
            if lost:
                self._retransmit_scan = True

        if self._fast_recovery_exit is None:
            if done and cwnd_fully_utilized:
                self._grow_cwnd(done_bytes)
            if lost:
                # RFC 4960 section 7.2.3, then fast recovery until the last chunk sent is acknowledged.
                self._ssthresh = max(self._cwnd // 2, 4 * self._user_data_max)
                self._cwnd = self._ssthresh
                self._partial_bytes_acked = 0
                # (aiortc initialises it to None, which is all mypy infers of it)
                self._fast_recovery_exit = sent_queue[-1].tsn  # type: ignore[assignment]
                self._fast_recovery_transmit = True
        elif _tsn_gte(cumulative, self._fast_recovery_exit):
            self._fast_recovery_exit = None

        self._restart_timers(done)
        self._update_advanced_peer_ack_point()
        # One transmit opportunity (one burst) per SACK: the flush does not transmit on its own.
        self._in_sack_handling = True
        try:
            await self._data_channel_flush()
        finally:
            self._in_sack_handling = False
        await self._transmit()

    def _t3_expired(self) -> None:
        """The retransmission timer expired (RFC 4960 section 6.3.3): everything outstanding is
        sent again (or abandoned), from a window of one packet."""
        self._t3_handle = None
        left_flight = _sctp.mark_for_retransmission(self, self._sent_queue)  # may abandon chunks
        self._flight_size -= left_flight
        self._retransmit_scan = True
        self._update_advanced_peer_ack_point()
        self._fast_recovery_exit = None
        self._partial_bytes_acked = 0
        self._ssthresh = max(self._cwnd // 2, 4 * self._user_data_max)
        self._cwnd = self._user_data_max
        # In the next loop iteration, as aiortc does (a caller may still adjust the window).
        self._loop.call_soon(self._transmit_due)

    def _transmit_due(self) -> None:
        fast_path.run_now(self._transmit(), self._loop)

    # T3 is restarted at every SACK that acknowledges new data and started at every message sent
    # with nothing outstanding: many times a round trip under load, once a message at a steady
    # rate. A timer re-created each time (aiortc's) costs more than the rest of sending a small
    # message's packet, so T3 keeps one timer: stopping it only marks it stopped, restarting it
    # moves its deadline, and the timer, when it fires before the deadline, waits for the rest.

    def _t3_start(self) -> None:
        """Start (or restart) T3 for one RTO from now (RFC 4960 section 6.3.2)."""
        loop = self._loop
        deadline = loop.time() + self._rto
        self._t3_deadline = deadline
        timer = self._t3_timer
        if timer is None or timer.cancelled() or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            timer = self._t3_timer = loop.call_at(deadline, self._t3_due)
        self._t3_handle = timer

    def _t3_restart(self) -> None:
        self._t3_start()

    def _t3_cancel(self) -> None:
        self._t3_handle = None  # the timer finds T3 stopped when it fires (or is taken up again)

    def _t3_due(self) -> None:
        self._t3_timer = None
        if self._t3_handle is None:
            return
        if self._t3_deadline - self._loop.time() > TIMER_SLACK:
            self._t3_handle = self._t3_timer = self._loop.call_at(self._t3_deadline, self._t3_due)
            return
        self._t3_expired()

    def _stop_loss_probe(self) -> None:
        # Nothing outstanding. The timer stays (it finds nothing to probe when it fires); the next
        # data sent starts the wait anew, with the round trip of then.
        self._loss_probe_waiting = False

    def _arm_loss_probe(self) -> None:
        # Armed when data goes out with nothing outstanding and no probe timer left, and after each
        # probe: the wait starts now.
        self._last_sack_at = self._loop.time()
        self._loss_probe_handle = self._loop.call_later(
            min(self._loss_probe_timeout(), LOSS_PROBE_RECHECK), self._loss_probe_due)

    def _loss_probe_timeout(self) -> float:
        srtt = self._srtt
        if srtt is None:
            return self._rto
        timeout = max(2 * srtt, LOSS_PROBE_MIN)
        if self._flight_size <= self._max_packet:
            # One packet out: the peer may hold its SACK for a while (RFC 4960 section 6.2).
            timeout = max(timeout, srtt + LOSS_PROBE_DELAYED_SACK)
        return min(timeout * (1 << self._loss_probes), self._rto)

    def _loss_probe_due(self) -> None:
        """Send the last outstanding chunk again when no SACK came for a while (a tail loss probe,
        as TCP's RFC 8985): the peer answers a duplicate at once with a SACK.

        One SACK answers a whole received batch, so a SACK lost on the way while the congestion
        window is full would leave both ends waiting for the retransmission timer (at least a
        second). The probe gets a SACK (or, if the chunk itself was lost, delivers it) after two
        round trips instead. At most MAX_LOSS_PROBES in a row; then T3 takes over.
        """
        self._loss_probe_handle = None
        if not self._loss_probe_waiting or self._association_state != _ESTABLISHED or not self._sent_queue:
            return
        timeout = self._loss_probe_timeout()
        waited = self._loop.time() - self._last_sack_at
        if waited < timeout:
            self._loss_probe_handle = self._loop.call_later(
                min(timeout - waited, LOSS_PROBE_RECHECK), self._loss_probe_due)
            return
        if self._loss_probes >= MAX_LOSS_PROBES:
            return
        probe = None
        now = time.time()
        for chunk in reversed(self._sent_queue):
            if chunk._acked or chunk._abandoned or chunk._retransmit:
                continue
            # Partial reliability (RFC 3758): a probe is a retransmission, so only within the limits.
            limit = chunk._max_retransmits
            if (limit is None or chunk._sent_count <= limit) and (chunk._expiry is None or chunk._expiry >= now):
                probe = chunk
                break
        if probe is None:
            return  # nothing may go again (or it awaits retransmission, which a transmit sends)
        self._loss_probes += 1
        self._arm_loss_probe()  # the next probe waits longer (the timeout doubles per probe)
        probe._sent_count += 1  # no round-trip sample from it (Karn's rule)
        self.stats.loss_probes += 1
        self.stats.data_chunks_sent += 1
        fast_path.run_now(self._send_packet(b"", [probe]), self._loop)

    async def _send_sack(self) -> None:
        await self._send_packet(self._take_sack(), [])

    def _take_sack(self) -> bytes:
        """The SACK chunk for the current receive state; resets the 'SACK needed' bookkeeping."""
        if self._sack_handle is not None:
            self._sack_handle.cancel()
            self._sack_handle = None
        cumulative = self._last_received_tsn
        assert cumulative is not None, "a SACK is only built once the peer's INIT arrived"
        gaps = _sctp.sack_gaps(self._sack_misordered, cumulative, MAX_SACK_GAPS) if self._sack_misordered else []
        chunk = _sctp.build_sack(
            cumulative,
            max(0, self._advertised_rwnd),
            gaps,
            self._sack_duplicates[:MAX_SACK_DUPLICATES],
        )
        self._sack_duplicates.clear()
        self._sack_needed = False
        self._packets_since_sack = 0
        self.stats.sacks_sent += 1
        return chunk

    # -- send --------------------------------------------------------------------------------

    def _data_channel_send(self, channel: RTCDataChannel, data: Union[bytes, str]) -> None:
        if type(data) is bytes and data:
            self.send_message(channel, data)
            return
        if data == "":
            pp_id, user_data = _aio.WEBRTC_STRING_EMPTY, b"\x00"
        elif isinstance(data, str):
            pp_id, user_data = _aio.WEBRTC_STRING, data.encode("utf8")
        elif data == b"":
            pp_id, user_data = _aio.WEBRTC_BINARY_EMPTY, b"\x00"
        else:
            pp_id, user_data = _aio.WEBRTC_BINARY, bytes(data)
        self.send_message(channel, user_data, pp_id)

    def idle(self) -> bool:
        """Nothing waits to be sent and nothing is unacknowledged: a message sent now leaves at once."""
        return not (self._data_channel_queue or self._outbound_queue or self._sent_queue)

    def send_message(self, channel: RTCDataChannel, user_data: bytes, pp_id: int = _BINARY) -> None:
        """Queue one DataChannel message: ``channel.send(data)`` for non-empty ``bytes`` (binary
        unless ``pp_id`` says), past ``RTCDataChannel.send``'s checks. The caller has made sure the
        channel is open (else ``InvalidStateError`` is its to raise)."""
        size = len(user_data)
        if self._remote_max_message_size and size > self._remote_max_message_size:
            raise ValueError(
                f"Cannot send message of {size} bytes, the remote party "
                f"only supports messages up to {self._remote_max_message_size} bytes"
            )
        # _addBufferedAmount(size) without its threshold check: a positive amount never crosses
        # the threshold downward (seam: the attribute RTCDataChannel.bufferedAmount reads).
        channel._RTCDataChannel__bufferedAmount += size  # type: ignore[attr-defined]
        queue = self._data_channel_queue
        queue.append((channel, pp_id, user_data))
        if self._flush_handle is not None:
            return  # a flush is due at the end of this loop iteration
        if (
            len(queue) == 1
            and not self._sent_queue
            and not self._outbound_queue
            and self._association_state == _ESTABLISHED
        ):
            # Nothing in flight or queued: this message leaves now. Messages sent while it is
            # unacknowledged are bundled at the end of the loop iteration.
            plane = self.data_plane
            if plane is not None and self.yield_to_local_peer and plane.peer_on_this_host():
                plane.yield_after_send = True  # once this message's packet is on the wire
                fast_path.run_now(self._data_channel_flush(inside_send=True), self._loop)
                plane.yield_after_send = False
            else:
                fast_path.run_now(self._data_channel_flush(inside_send=True), self._loop)
        else:
            loop = self._loop
            self._flush_handle = loop.call_soon(self._flush_due, FLUSH_HOLD_ITERATIONS, loop.time() + FLUSH_HOLD)

    def _flush_due(self, hold: int = 0, until: float = 0.0) -> None:
        if hold and self._data_channel_queue and self._sent_queue and self._loop.time() < until:
            self._flush_handle = self._loop.call_soon(self._flush_due, hold - 1, until)
            return
        self._flush_handle = None
        # A SACK handled since the flush was scheduled sent the queue already (under load, about
        # every other time): nothing is left for this flush then.
        if (self._data_channel_queue or self._outbound_queue) and self._association_state == _ESTABLISHED:
            fast_path.run_now(self._data_channel_flush(), self._loop)

    async def _data_channel_flush(self, inside_send: bool = False) -> None:
        """Move queued messages to the outbound queue as the window allows, and transmit.

        ``inside_send``: called from ``RTCDataChannel.send()``; ``bufferedAmount`` then goes down
        (and ``bufferedamountlow`` fires) in the next loop iteration, after ``send()`` returned,
        as the W3C specifies and aiortc does.
        """
        if self._association_state != _ESTABLISHED:
            return
        released: list[tuple[RTCDataChannel, int]] = []
        queue = self._data_channel_queue
        room = max(0, self._cwnd - self._flight_size) + self._user_data_max
        while queue and self._outbound_bytes < room:
            self._local_tsn, self._outbound_bytes, unnumbered = _sctp.take_messages(
                queue, self._outbound_queue, self._outbound_bytes, room, self._local_tsn, self._user_data_max,
                self._outbound_stream_seq, released, time.time)
            if unnumbered is not None:
                # A channel's first message: it takes the next free stream id of this side's parity.
                stream_id = self._data_channel_id
                assert stream_id is not None, "start() chose the first stream id"
                while stream_id in self._data_channels:
                    stream_id += 2
                self._data_channels[stream_id] = unnumbered
                unnumbered._setId(stream_id)
            elif released and not inside_send:
                # bufferedAmount goes down now; a "bufferedamountlow" handler may send again,
                # and what it sends leaves in this transmit.
                self._release_buffered(released)
                released = []
        try:
            if not self._in_sack_handling:
                await self._transmit()
        finally:
            if released:  # after the packets left (see _transmit)
                self._loop.call_soon(self._release_buffered, released)
        if self._reconfig_queue:  # streams to reset once their pending messages went out
            await self._transmit_reconfig()

    def _release_buffered(self, released: list) -> None:
        # RTCDataChannel._addBufferedAmount(-amount), on the attribute bufferedAmount reads (seam)
        # and with the event's one listener called directly, as for messages.
        for channel, amount in released:
            held = channel._RTCDataChannel__bufferedAmount
            channel._RTCDataChannel__bufferedAmount = held - amount
            threshold = channel.bufferedAmountLowThreshold
            if held - amount <= threshold < held:
                try:
                    _emit_buffered_amount_low(channel)
                except Exception as error:  # a "bufferedamountlow" handler raised
                    self._loop.call_exception_handler(
                        {"message": "bufferedamountlow handler failed", "exception": error}
                    )

    async def _send(
        self,
        stream_id: int,
        pp_id: int,
        user_data: bytes,
        expiry: Optional[float] = None,
        max_retransmits: Optional[int] = None,
        ordered: bool = True,
    ) -> None:
        self._enqueue(stream_id, pp_id, user_data, expiry, max_retransmits, ordered)
        await self._transmit()

    def _enqueue(
        self,
        stream_id: int,
        pp_id: int,
        user_data: bytes,
        expiry: Optional[float],
        max_retransmits: Optional[int],
        ordered: bool,
    ) -> None:
        """Split a message into DATA chunks on the outbound queue (RFC 4960 section 6.9)."""
        if ordered:
            stream_seq = self._outbound_stream_seq.get(stream_id, 0)
            self._outbound_stream_seq[stream_id] = (stream_seq + 1) & 0xFFFF
            base_flags = 0
        else:
            stream_seq = 0
            base_flags = _UNORDERED
        self._local_tsn, booked = _sctp.fragment(
            self._outbound_queue, user_data, self._user_data_max, base_flags, self._local_tsn,
            stream_id, stream_seq, pp_id, expiry, max_retransmits)
        self._outbound_bytes += booked

    def _maybe_abandon(self, chunk) -> bool:
        # aiortc calls this just before it marks a chunk for retransmission (fast retransmit, T3).
        self._retransmit_scan = True
        return super()._maybe_abandon(chunk)

    async def _transmit(self) -> None:
        """Send what the congestion window allows, bundling chunks into packets."""
        if self._association_state != _ESTABLISHED:
            return
        control = b""
        if self._sack_needed:
            control = self._take_sack()
            self.stats.sacks_bundled += 1
        if self._forward_tsn_chunk is not None:
            forward = self._forward_tsn_chunk
            control += _sctp.build_forward_tsn(forward.cumulative_tsn, list(forward.streams))
            self._forward_tsn_chunk = None
            if not self._t3_handle:
                self._t3_start()

        burst = (2 if self._fast_recovery_exit is not None else MAX_BURST_PACKETS) * self._user_data_max
        # A SACK that acknowledged more than a burst (one SACK per received batch) lets as much go
        # again: the flight keeps its size instead of shrinking to one burst per round trip.
        burst = max(burst, self._acked_bytes)
        self._acked_bytes = 0
        cwnd = min(self._flight_size + burst, self._cwnd)
        bundler = _sctp.Bundler(self._max_packet - _sctp.COMMON_HEADER_LENGTH, control)
        blocked = new_data = False

        if self._retransmit_scan:
            self._retransmit_scan = False
            (self._flight_size, self._fast_recovery_transmit, blocked, retransmitted,
             earliest) = _sctp.take_retransmissions(
                self._sent_queue, self._flight_size, cwnd, self._fast_recovery_transmit, bundler)
            self.stats.retransmissions += retransmitted
            if blocked:
                self._retransmit_scan = True
            if earliest:
                self._t3_restart()

        if not blocked and self._outbound_queue:
            now = time.time()
            queue = self._outbound_queue
            sent_queue = self._sent_queue
            # RFC 4960 section 6.1 rule A: new data stays within the peer's receive window (a chunk
            # that would pass it waits), but one chunk may always be in flight (it probes a window
            # that closed). The congestion window may be passed by the last chunk sent.
            # A closed window is probed with one chunk once the retransmission timeout has passed
            # with nothing in flight (a persist timer), not at every SACK: the peer takes a probe as
            # the next TSN beyond its window, so probing at every SACK would fill its memory.
            window = self._peer_window
            self._flight_size, taken = _sctp.take_new_data(
                queue, sent_queue, self._flight_size, cwnd, -1 if window is None else window, bundler, now)
            self._outbound_bytes -= taken
            # What is left waits for the window (the rules below) or the congestion window.
            while queue and self._flight_size < cwnd:
                chunk = queue[0]
                if window is not None and self._flight_size + chunk._book_size > window and not chunk._abandoned:
                    if self._flight_size:
                        break
                    if not self._probe_allowed:
                        if self._probe_handle is None:
                            self._probe_handle = self._loop.call_later(self._rto, self._probe_due)
                        break
                    self._probe_allowed = False
                queue.popleft()
                self._outbound_bytes -= chunk._book_size
                sent_queue.append(chunk)
                if chunk._abandoned:
                    continue  # its TSN is skipped with a FORWARD-TSN
                self._flight_size_increase(chunk)  # type: ignore[arg-type]  # duck-types aiortc's chunk
                chunk._sent_count += 1
                chunk._sent_time = now
                bundler.add(chunk)
            new_data = True

        packets = bundler.finish()
        # The timers are set once the packets have left: toward a peer on this host the receiver
        # may run before the rest of this (yield_to_local_peer), so nothing waits for them.
        try:
            plane = self.data_plane
            if plane is not None and self.transport.__dict__.get("_send_data") is plane.send_hook:
                # One call for the whole transmit: the records leave together (one system call).
                sent = plane.send_sctp_packets(self._local_port, self._remote_port,
                                               self._remote_verification_tag, packets)
                self.stats.data_chunks_sent += sent
                self.stats.packets_sent += len(packets)
            else:
                for control, chunks in packets:
                    self.stats.data_chunks_sent += len(chunks)
                    await self._send_packet(control, chunks)
        finally:
            if self._sent_queue:
                if new_data and not self._t3_handle:
                    self._t3_start()
                if not self._loss_probe_waiting:
                    self._loss_probe_waiting = True
                    if self._loss_probe_handle is None:
                        self._arm_loss_probe()
                    else:
                        self._last_sack_at = self._loop.time()  # the wait starts now; the timer waits for it

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, remoteCaps, remotePort: int) -> None:  # noqa: N803 - aiortc's signature
        if self.state == "new" and self.fast_receive:
            self.data_plane = fast_path.install(self, fast_dtls=self.fast_dtls, udp_batching=self.udp_batching)
        await super().start(remoteCaps, remotePort)

    def _set_state(self, state: "RTCSctpTransport.State") -> None:
        if state == _CLOSED:
            for handle in (self._flush_handle, self._sack_handle, self._probe_handle, self._loss_probe_handle,
                           self._t3_timer):
                if handle is not None:
                    handle.cancel()
            self._flush_handle = self._sack_handle = self._probe_handle = self._loss_probe_handle = None
            self._t3_timer = None
        super()._set_state(state)


class FastPeerConnection(RTCPeerConnection):
    """An ``RTCPeerConnection`` whose data channels run over :class:`FastSctpTransport`.

    Everything else (ICE, DTLS, SDP, media) is aiortc's. Raises TransportError on an aiortc
    version outside :data:`TESTED_AIORTC_VERSIONS`.
    """

    def __init__(self, *args, fast_dtls: bool = True, udp_batching: bool = True,
                 yield_to_local_peer: bool = True, **kwargs) -> None:
        self._fast_options = {"fast_dtls": fast_dtls, "udp_batching": udp_batching,
                              "yield_to_local_peer": yield_to_local_peer}
        super().__init__(*args, **kwargs)
        if fast_dtls:
            # The record layer's one-time set-up (~7 ms: finding this process's OpenSSL and a
            # known-answer check) runs while the connection waits for the network, not on the
            # set-up path when the records are taken over.
            try:
                asyncio.get_running_loop().call_soon(evp_status)
            except RuntimeError:  # no running loop: done at the takeover, as before
                pass

    # -- larger packets between clasp_fast peers (docs/data-plane.md) ---------------------------

    def _reads_large_packets(self) -> bool:
        """Whether this side will read SCTP packets of LARGE_PACKET_LENGTH: its data plane can run."""
        sctp = self.sctp
        return (
            isinstance(sctp, FastSctpTransport)
            and sctp.fast_receive
            and sctp.fast_dtls
            and not fast_path.missing_seams(sctp.transport)
        )

    def _advertise(self, description):
        if description is None or not self._reads_large_packets():
            return description
        return type(description)(sdp=_add_max_packet(description.sdp, LARGE_PACKET_LENGTH), type=description.type)

    def _as_received(self, description):
        # aiortc rebuilds the remote description from what it parsed: put the peer's line back.
        remote = getattr(self.sctp, "remote_max_packet", None)
        if description is None or remote is None:
            return description
        return type(description)(sdp=_add_max_packet(description.sdp, remote), type=description.type)

    async def createOffer(self):  # noqa: N802 - aiortc's name
        return self._advertise(await super().createOffer())

    async def createAnswer(self):  # noqa: N802 - aiortc's name
        return self._advertise(await super().createAnswer())

    @property
    def localDescription(self):  # noqa: N802 - aiortc's name
        return self._advertise(super().localDescription)

    @property
    def remoteDescription(self):  # noqa: N802 - aiortc's name
        return self._as_received(super().remoteDescription)

    async def setRemoteDescription(self, sessionDescription) -> None:  # noqa: N803 - aiortc's name
        await super().setRemoteDescription(sessionDescription)
        if isinstance(self.sctp, FastSctpTransport):
            self.sctp.remote_max_packet = _read_max_packet(sessionDescription.sdp)

    # aiortc creates its SCTP transport in this private method (name-mangled, hence the spelling);
    # it is the only place an RTCSctpTransport is constructed for a peer connection.
    def _RTCPeerConnection__createSctpTransport(self) -> None:
        RTCPeerConnection._RTCPeerConnection__createSctpTransport(self)  # type: ignore[attr-defined]
        assert self.sctp is not None
        missing = missing_sctp_seams(self.sctp)
        if missing:
            _log_fallback("missing " + ", ".join(missing))
            return
        transport = FastSctpTransport.adopt(self.sctp)
        for name, value in self._fast_options.items():
            setattr(transport, name, value)


def _add_max_packet(sdp: str, length: int) -> str:
    """``sdp`` with a=x-clasp-max-sctp-packet:``length`` after each a=max-message-size (the data
    channel's media section) unless it is there already."""
    if SDP_MAX_PACKET_ATTRIBUTE in sdp:
        return sdp
    lines = sdp.split("\r\n")
    out = []
    for line in lines:
        out.append(line)
        if line.startswith("a=max-message-size:"):
            out.append(f"a={SDP_MAX_PACKET_ATTRIBUTE}:{length}")
    return "\r\n".join(out)


def _read_max_packet(sdp: str) -> Optional[int]:
    """The peer's a=x-clasp-max-sctp-packet, or None."""
    prefix = f"a={SDP_MAX_PACKET_ATTRIBUTE}:"
    for line in sdp.splitlines():
        if line.startswith(prefix):
            try:
                return int(line[len(prefix):].strip())
            except ValueError:
                return None
    return None


def peer_connection_class(fast_sctp: bool, *, fast_dtls: bool = True, udp_batching: bool = True,
                          yield_to_local_peer: bool = True) -> Callable[..., RTCPeerConnection]:
    """The peer connection class (or factory) for ``WebRtcConfig.fast_sctp``, ``fast_dtls``,
    ``udp_batching`` and ``yield_to_local_peer``."""
    if not fast_sctp:
        return RTCPeerConnection
    missing = missing_sctp_seams()
    if missing:
        _log_fallback("missing " + ", ".join(missing))
        return RTCPeerConnection
    if fast_dtls and udp_batching and yield_to_local_peer:
        return FastPeerConnection
    return functools.partial(FastPeerConnection, fast_dtls=fast_dtls, udp_batching=udp_batching,
                             yield_to_local_peer=yield_to_local_peer)

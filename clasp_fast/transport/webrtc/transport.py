"""One WebRTC peer connection carrying CLASP frames: the parts of a connection put together."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterator, Literal

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.sdp import candidate_to_sdp

from ...clock import PeerClock
from ...errors import ProtocolError, TransportError
from ...runtime.busy_poll import NO_BUSY_POLL, busy_poll_for
from ...runtime.sink import ErrorCallback, ErrorSink
from ...runtime.tasks import TaskSet
from ...wire.protocol import KEEPALIVE_FEATURE
from ..sctp import peer_connection_class
from ..signaling import SignalingChannel
from .channels import Channel, Channels, open_spec
from .config import COUNTERS, CONTROL_LABEL, CandidatePairInfo, ChannelSpec, State, WebRtcConfig, WebRtcStats
from .liveness import Liveness
from .negotiation import Negotiation, wait_for_offer
from .receive import WebRtcReceiver
from .sender import WebRtcSender
from .teardown import Lifecycle, Teardown

__all__ = ["WebRtcTransport"]

logger = logging.getLogger("clasp_fast.webrtc")


class WebRtcTransport:
    """One WebRTC peer connection carrying CLASP frames.

    Most code uses :meth:`connect`. A P2P layer that reads the signaling channel itself creates the
    transport with ``pump_signals=False``, feeds it with :meth:`handle_signal`, and calls
    :meth:`start` (offerer) or :meth:`start` with the received ``offer`` map (answerer).

    The parts, each in its module: :class:`~.negotiation.Negotiation` (offer, answer, candidates),
    :class:`~.channels.Channels` with the :class:`WebRtcSender` (routing, batching, backpressure),
    :class:`WebRtcReceiver` (decoding slice by slice, delivery), :class:`~.liveness.Liveness`
    (keepalive, probe) and :class:`~.teardown.Teardown` (closing without loss). Errors nobody
    awaits go to ``errors``: the owner's error sink when one is given, else the transport's own
    (``on_error`` is added to it).
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
        errors: ErrorSink | None = None,
    ) -> None:
        self.config = config
        self.signaling = signaling
        self.peer = peer
        self.errors = errors if errors is not None else ErrorSink(logger)
        if on_error is not None:
            self.errors.add(on_error)
        loop = asyncio.get_running_loop()
        self._tasks = TaskSet(self.errors.report)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._pump_signals = pump_signals
        self._lifecycle = Lifecycle(self._tasks.notify)
        # Seam (data plane): the fast SCTP path's options.
        self._pc = peer_connection_class(config.fast_sctp, fast_dtls=config.fast_dtls,
                                         udp_batching=config.udp_batching,
                                         yield_to_local_peer=config.yield_to_local_peer)(config.rtc_configuration())
        self._busy_poll = busy_poll_for(loop, config.busy_poll)
        self._lifecycle.listeners.append(self._stop_busy_poll_when_ended)
        self._channels = Channels(config, peer, loop, check_open=self._check_open,
                                  on_error=self._channel_failed, on_closed=self._channel_closed,
                                  busy_poll=self._busy_poll)
        self.receiver = WebRtcReceiver(config, peer, self._counters, self._channels, self.errors, loop,
                                       sctp=lambda: self._pc.sctp, heard=self._heard)
        self._channels.receiver = self.receiver
        self._liveness = Liveness(config, self._pc, self._channels, report=self.receiver.report,
                                  connected=lambda: self._lifecycle.state == "connected",
                                  timed_out=lambda: self._teardown.end_soon("timeout"))
        self._negotiation = Negotiation(config, signaling, peer, self._pc, self._channels, self._liveness,
                                        self._counters, self._tasks, correlation_id=correlation_id,
                                        report=lambda exc: self.receiver.report(exc, decode=False),
                                        on_disconnected=lambda reason: self._teardown.peer_disconnected(reason))
        self._teardown = Teardown(config, self._lifecycle, self._pc, self._channels, self._liveness,
                                  self._negotiation, self.receiver, self._tasks, loop)
        self.sender = WebRtcSender(self, self._channels, self._lifecycle)

    # -- setting up ----------------------------------------------------------------------

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
        when given; signals that come before it are dropped, as docs/protocol.md §10.5 does), unless the
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
            offer = await wait_for_offer(signaling, peer, config.connection_timeout)
        transport = cls(config, signaling, str(offer["from"]), on_error=on_error)
        await transport.start(offer)
        return transport.sender, transport.receiver

    async def start(self, offer: dict[str, object] | None = None) -> None:
        """Run the offerer procedure (``offer`` None) or the answerer procedure for ``offer``."""
        if self.state != "new":
            raise TransportError("transport already started", peer=self.peer, step="start")
        self._lifecycle.set("connecting")
        negotiation = self._negotiation
        establishing = negotiation.begin(offer, self._pump_signals)
        try:
            await asyncio.wait_for(asyncio.shield(establishing), self.config.connection_timeout)
        except asyncio.TimeoutError:
            step = negotiation.step
            await self._teardown.shutdown(None, "failed")
            raise TransportError(
                f"connection not established within {self.config.connection_timeout:g} s", peer=self.peer, step=step
            ) from None
        except asyncio.CancelledError:
            step = negotiation.step
            if establishing.cancelled() and self._lifecycle.ending:
                # close() or a remote "disconnected" ended the set-up.
                await self._teardown.closed.wait()
                raise TransportError(
                    f"closed during set-up ({self.close_reason or 'closed'})", peer=self.peer, step=step
                ) from None
            await self._teardown.shutdown(None, "failed")
            raise
        except BaseException:
            await self._teardown.shutdown(None, "failed")
            raise
        self._liveness.heard()
        if KEEPALIVE_FEATURE in negotiation.remote_features:
            self._tasks.spawn(self._liveness.keepalive())
        negotiation.mark("connected")
        self._lifecycle.set("connected")
        if self._teardown.remote_disconnect is not None:
            self._teardown.end_soon(None, graceful=True, remote_reason=self._teardown.remote_disconnect)

    def handle_signal(self, signal: dict[str, object]) -> None:
        """Feed a signal received on the signaling channel (for callers with ``pump_signals=False``)."""
        self._negotiation.handle_signal(signal)

    def add_state_listener(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(state)`` on every state change (connecting, connected, closing, closed, failed)."""
        self._lifecycle.listeners.append(callback)

    async def add_channel(self, spec: ChannelSpec, timeout: float = 10.0) -> None:
        """Open one more DataChannel on a connected transport and wait until it is open.

        The peer learns ``spec.prefix`` from the channel's protocol field and routes that prefix to it too.
        """
        self._check_open()
        if spec.label in self._channels or spec.label == CONTROL_LABEL:
            raise ValueError(f"a channel labelled {spec.label!r} exists already")
        channel = self._channels.add(spec, open_spec(spec, self._pc.createDataChannel))
        try:
            await asyncio.wait_for(channel.opened.wait(), timeout)
        except asyncio.TimeoutError:
            raise TransportError(f"channel {spec.label!r} did not open within {timeout:g} s",
                                 peer=self.peer, step="channel open") from None
        self._channels.configure(self.batching, channel)

    def channel_for(
        self, message_or_frame: object, *, reliable: bool | None = None, qos: int | None = None
    ) -> str:
        """The label of the channel :meth:`WebRtcSender.send` would use for this message or frame."""
        return self._channels.route(message_or_frame, reliable, qos, None).spec.label

    # -- what is known of the connection -------------------------------------------------

    @property
    def state(self) -> State:
        return self._lifecycle.state

    @property
    def close_reason(self) -> str | None:
        return self._lifecycle.close_reason

    @property
    def role(self) -> Literal["offerer", "answerer"] | None:
        return self._negotiation.role

    @property
    def correlation_id(self) -> str | None:
        return self._negotiation.correlation_id

    @property
    def remote_features(self) -> tuple[str, ...]:
        """Features the peer listed in its offer or answer."""
        return self._negotiation.remote_features

    @property
    def timings(self) -> dict[str, float]:
        """Seconds from start() to each set-up step: "offer"/"answer" (sent or applied), "reliable_open",
        "connected"."""
        return self._negotiation.timings

    @property
    def negotiated(self) -> bool:
        """True once offer and answer are both applied: from then on the peer may send data."""
        return self._negotiation.negotiated

    @property
    def last_received(self) -> float:
        """``time.monotonic()`` when something last arrived from the peer (any channel, keepalives too)."""
        return self._liveness.last_received

    @property
    def busy_polling(self) -> bool:
        """Whether the event loop is kept polling for this connection now (``config.busy_poll``)."""
        return self._busy_poll.spinning

    @property
    def batching(self) -> bool:
        """True when frames are batched toward this peer."""
        return self._negotiation.batching

    @property
    def channels(self) -> dict[str, RTCDataChannel]:
        return self._channels.data_channels()

    @property
    def peer_connection(self) -> RTCPeerConnection:
        return self._pc

    def local_candidates(self) -> list[str]:
        """The local ICE candidates (SDP ``candidate:`` lines)."""
        sctp = self._pc.sctp
        if sctp is None:
            return []
        return ["candidate:" + candidate_to_sdp(c) for c in sctp.transport.transport.iceGatherer.getLocalCandidates()]

    def ice_connection(self) -> Any:
        """The aioice ``Connection`` under this peer connection (None before channels exist)."""
        sctp = self._pc.sctp
        return None if sctp is None else sctp.transport.transport.iceGatherer._connection

    def pause_reading(self, paused: bool = True) -> None:
        """Stop (``paused=False``: resume) reading this connection's ICE sockets: nothing is received
        meanwhile, so the peer's SCTP window fills and its sends back up (a peer too busy to read).
        Datagrams wait in the socket buffers; STUN consent checks wait too, so keep pauses shorter
        than ICE's consent timeout (about 30 s)."""
        connection = self.ice_connection()
        if connection is None:
            return
        plane = getattr(self._pc.sctp, "data_plane", None)
        if plane is not None and plane.reads_sockets:
            (plane.pause_reading if paused else plane.resume_reading)()
            return
        for protocol in connection._protocols:
            (protocol.transport.pause_reading if paused else protocol.transport.resume_reading)()

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
        return WebRtcStats(
            state=self.state,
            selected_pair=self.selected_candidate_pair(),
            **self._channels.totals(),  # CHANNEL_COUNTS, by field name
            **self._counters,  # COUNTERS, by field name
            rtt=self._liveness.rtt,
            conflated=sum(channel.conflated for channel in self._channels),
            clock=self._liveness.clock,
        )

    @property
    def clock(self) -> PeerClock | None:
        """The peer's clock (offset, RTT, uncertainty), estimated continuously over the control
        channel; None until the first exchange, and always with a peer that does not offer ``"clock"``."""
        return self._liveness.clock

    def metrics_samples(self, peer: str) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """This connection's figures for :class:`~clasp_fast.metrics.Metrics`, per channel, labelled ``peer``."""
        for channel in self._channels:
            label = channel.spec.label
            yield "clasp_messages_total", ("p2p", peer, label, "sent"), channel.messages_sent
            yield "clasp_messages_total", ("p2p", peer, label, "received"), channel.messages_received
            yield "clasp_bytes_total", ("p2p", peer, label, "sent"), channel.bytes_sent
            yield "clasp_bytes_total", ("p2p", peer, label, "received"), channel.bytes_received
            if channel.waiting is not None:
                yield "clasp_conflated_total", ("p2p", peer, label), channel.conflated
                yield "clasp_queue_depth", ("p2p", peer, f"conflation:{label}"), len(channel.waiting)
        c = self._counters
        yield "clasp_drops_total", ("p2p", peer, "all", "receive_queue_full"), c["dropped_received"]
        yield "clasp_drops_total", ("p2p", peer, "all", "malformed"), c["decode_errors"]
        rtt = self._liveness.rtt
        if rtt is not None:
            yield "clasp_rtt_seconds", (peer,), rtt
        clock = self._liveness.clock
        if clock is not None:
            yield "clasp_clock_offset_seconds", (peer,), clock.offset_us / 1e6
            yield "clasp_clock_uncertainty_seconds", (peer,), clock.uncertainty_us / 1e6

    # -- ending --------------------------------------------------------------------------

    async def probe(self, timeout: float | None = None) -> bool:
        """Whether the peer still answers on this connection, within ``timeout`` (default ``close_timeout``)."""
        return await self._liveness.probe(timeout)

    async def wait_closed(self) -> None:
        await self._teardown.closed.wait()

    async def close(self, reason: str = "User requested disconnect") -> None:
        """End the connection without losing data either way.

        Hands pending batches to SCTP and waits until the peer acknowledged them, sends
        ``disconnected`` with ``reason``, closes the DataChannels and keeps delivering what the peer
        still sends until its side has closed; then closes the peer connection. Everything before
        the final close is bounded by ``config.close_timeout``.
        """
        await self._teardown.close(reason)

    async def abort(self, reason: str) -> None:
        """Close at once with ``reason``: no ``disconnected`` signal and no waiting for in-flight data."""
        await self._teardown.abort(reason)

    # -- from the parts ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._lifecycle.state != "connected":
            raise TransportError(f"connection is {self._lifecycle.state}", peer=self.peer, step="send")

    def _heard(self) -> None:
        self._liveness.last_received = time.monotonic()
        if self._busy_poll is not NO_BUSY_POLL:
            self._busy_poll.touch()

    def _stop_busy_poll_when_ended(self, state: str) -> None:
        if state in ("closed", "failed"):
            self._busy_poll.stop()

    def _channel_failed(self, channel: Channel, error: Exception) -> None:
        # The SCTP layer refused a message over the advertised maximum size on this channel (and
        # closes the channel): the peer broke the protocol, so the whole connection closes.
        self.receiver.report(error, decode=False)
        if isinstance(error, ProtocolError) and self._lifecycle.state == "connected":
            self._teardown.end_soon(f"protocol error: {error}")

    def _channel_closed(self, channel: Channel) -> None:
        self._teardown.channel_closed(channel)

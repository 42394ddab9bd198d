"""Setting a connection up over a signaling channel (docs/protocol.md §10.5): offer, answer, ICE candidates,
the channels opening, and the signals that arrive meanwhile."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable, Literal

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from ...errors import SignalingError, TransportError
from ...runtime.tasks import TaskSet
from ...wire.protocol import BATCH_FEATURE
from .. import ice
from ..signaling import SignalingChannel, new_correlation_id, parse_signal
from .channels import Channels, open_spec, remote_spec
from .config import CONTROL_LABEL, DEFAULT_CHANNELS, RELIABLE_LABEL, WebRtcConfig
from .liveness import Liveness

__all__ = ["Negotiation", "parse_candidate", "wait_for_offer"]

logger = logging.getLogger("clasp_fast.webrtc")


def candidate_json(candidate: Any, ufrag: str | None) -> str:
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


def parse_candidate(text: str) -> Any:
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


def features_of(signal: dict[str, object]) -> tuple[str, ...]:
    """The ``features`` an offer or answer lists (none for a reference peer)."""
    features = signal.get("features")
    if isinstance(features, (list, tuple)):
        return tuple(f for f in features if isinstance(f, str))
    return ()


async def wait_for_offer(signaling: SignalingChannel, peer: str | None, timeout: float) -> dict[str, object]:
    """The next offer on ``signaling`` (from ``peer`` when given); signals before it are dropped."""
    async def wait() -> dict[str, object]:
        while True:
            signal = parse_signal(await signaling.recv_signal())
            if signal is not None and signal["type"] == "offer" and (peer is None or signal["from"] == peer):
                return signal

    try:
        return await asyncio.wait_for(wait(), timeout)
    except asyncio.TimeoutError:
        raise TransportError(f"no offer within {timeout:g} s", peer=peer, step="offer") from None


class Negotiation:
    """The signaling state machine of one connection.

    The offerer creates the channels, sends the offer and its candidates and waits for the answer;
    the answerer applies the offer and answers. Either way remote candidates are applied in
    arrival order once the remote description is set, and the set-up ends when every channel is
    open. A ``disconnected`` for this connection goes to ``on_disconnected``.
    """

    def __init__(
        self,
        config: WebRtcConfig,
        signaling: SignalingChannel,
        peer: str,
        pc: RTCPeerConnection,
        channels: Channels,
        liveness: Liveness,
        counters: dict[str, int],
        tasks: TaskSet,
        *,
        correlation_id: str | None,
        report: Callable[[BaseException], None],
        on_disconnected: Callable[[str], None],
    ) -> None:
        self.config = config
        self.signaling = signaling
        self.peer = peer
        self.role: Literal["offerer", "answerer"] | None = None
        # The offerer's id may be chosen by the caller (a P2P layer routing signals by it).
        self.correlation_id: str | None = correlation_id
        self.remote_features: tuple[str, ...] = ()
        self.step = "offer"  # the step a failure happened in
        # Seconds from the start to each set-up step: "offer"/"answer" (sent or applied), "reliable_open", "connected".
        self.timings: dict[str, float] = {}
        self._started_at = 0.0
        self._pc = pc
        self._channels = channels
        self._liveness = liveness
        self._counters = counters
        self._tasks = tasks
        self._report = report
        self._on_disconnected = on_disconnected
        self._signals: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self._answer_applied = asyncio.Event()
        # Remote candidates in arrival order; applied once the remote description is set.
        self._remote_candidates: asyncio.Queue[str] = asyncio.Queue()
        self._remote_description_set = asyncio.Event()
        # The reliable channel is open: the peer's channels are configured on arrival.
        self._channels_up = asyncio.Event()
        pc.on("datachannel", self._on_remote_datachannel)

    @property
    def negotiated(self) -> bool:
        """True once offer and answer are both applied: from then on the peer may send data."""
        return self._remote_description_set.is_set()

    @property
    def batching(self) -> bool:
        """True when frames are batched toward this peer."""
        return self.config.batching and BATCH_FEATURE in self.remote_features

    def begin(self, offer: dict[str, object] | None, pump_signals: bool) -> asyncio.Task[None]:
        """Start the offerer procedure (``offer`` None) or the answerer's for ``offer``; the task
        that sets the connection up (role and correlation id are known when this returns)."""
        self._started_at = time.perf_counter()
        if offer is None:
            self.role = "offerer"
            self.correlation_id = self.correlation_id or new_correlation_id(self.signaling.session_id, self.peer)
        else:
            self.role = "answerer"
            self.correlation_id = str(offer["correlation_id"])
        if pump_signals:
            self._tasks.spawn(self._pump())
        self._tasks.spawn(self._process_signals())
        self._tasks.spawn(self._apply_remote_candidates())
        return self._tasks.spawn(self._establish(offer), awaited=True)

    def mark(self, step: str) -> None:
        self.timings[step] = time.perf_counter() - self._started_at

    def handle_signal(self, signal: dict[str, object]) -> None:
        """A signal for this connection (from a caller that reads the signaling channel itself)."""
        self._signals.put_nowait(signal)

    async def send_signal(self, fields: dict[str, object]) -> None:
        """Send a signal of this connection to the peer; SignalingError when that fails."""
        signal = {**fields, "correlation_id": self.correlation_id}
        try:
            await self.signaling.send_signal(self.peer, signal)
        except SignalingError:
            raise
        except Exception as exc:
            raise SignalingError(f"could not send {fields['type']}: {exc}", peer=self.peer,
                                 step=str(fields["type"])) from exc

    # -- the procedure -------------------------------------------------------------------

    async def _establish(self, offer: dict[str, object] | None) -> None:
        pc = self._pc
        channels = self._channels
        if offer is None:
            for spec in (*DEFAULT_CHANNELS, *self.config.extra_channels):
                channels.add(spec, open_spec(spec, pc.createDataChannel))
            description = await pc.createOffer()
            self._install_gathering_policy()
            await pc.setLocalDescription(description)
            self.step = "offer"
            await self.send_signal({"type": "offer", "sdp": description.sdp,
                                    "features": list(self.config.local_features)})
            self.mark("offer")
            await self._trickle_candidates()
            self.step = "answer"
            await self._answer_applied.wait()
            self.mark("answer")
        else:
            self.remote_features = features_of(offer)
            self.step = "offer"
            await pc.setRemoteDescription(RTCSessionDescription(sdp=str(offer["sdp"]), type="offer"))
            self._remote_description_set.set()
            self._install_gathering_policy()
            description = await pc.createAnswer()
            await pc.setLocalDescription(description)
            self.step = "answer"
            await self.send_signal({"type": "answer", "sdp": description.sdp,
                                    "features": list(self.config.local_features)})
            self.mark("answer")
            await self._trickle_candidates()
            self._liveness.open_control_channel(self.remote_features)
        self.step = "ice"
        reliable = await channels.wait_for(RELIABLE_LABEL)
        self.step = "channel open"
        await reliable.opened.wait()
        self.mark("reliable_open")
        await self.send_signal({"type": "connected"})
        self._channels_up.set()
        wanted = [spec.label for spec in DEFAULT_CHANNELS]
        if self.role == "offerer":
            wanted += [spec.label for spec in self.config.extra_channels]
        for label in wanted:
            await (await channels.wait_for(label)).opened.wait()
        await self._liveness.control_open()
        channels.configure(self.batching)

    def _install_gathering_policy(self) -> None:
        sctp = self._pc.sctp
        if sctp is None:  # an offer without an application (data channel) section
            raise TransportError("the session description has no data channel section", peer=self.peer, step=self.step)
        connection = sctp.transport.transport.iceGatherer._connection
        ice.install_gathering_policy(
            connection,
            host_addresses=self.config.host_addresses,
            udp_receive_buffer=self.config.udp_receive_buffer,
        )
        ice.install_prompt_connect(connection)

    async def _trickle_candidates(self) -> None:
        sctp = self._pc.sctp
        assert sctp is not None
        gatherer = sctp.transport.transport.iceGatherer
        ufrag = gatherer.getLocalParameters().usernameFragment
        mid = sctp.mid if sctp.mid is not None else "0"
        for candidate in gatherer.getLocalCandidates():
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = 0
            await self.send_signal({"type": "ice_candidate", "candidate": candidate_json(candidate, ufrag)})

    def _on_remote_datachannel(self, dc: RTCDataChannel) -> None:
        if dc.label == CONTROL_LABEL:
            return
        channel = self._channels.add(remote_spec(dc), dc)
        if self._channels_up.is_set():
            self._channels.configure(self.batching, channel)

    # -- signals -------------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            self.handle_signal(await self.signaling.recv_signal())

    async def _process_signals(self) -> None:
        counters = self._counters
        while True:
            raw = await self._signals.get()
            signal = parse_signal(raw)
            if signal is None or signal["from"] != self.peer:
                counters["ignored_signals"] += 1
                continue
            kind = signal["type"]
            if kind == "disconnected":
                reason = signal.get("reason")
                self._on_disconnected(str(reason) if reason else "remote disconnected")
                return
            if signal["correlation_id"] != self.correlation_id:
                counters["ignored_signals"] += 1
                if kind == "ice_candidate":
                    self._report(SignalingError(
                        f"ICE candidate for unknown correlation id {signal['correlation_id']!r} not applied",
                        peer=self.peer, step="ice_candidate"))
                continue
            try:
                if kind == "answer" and self.role == "offerer" and not self._answer_applied.is_set():
                    self.remote_features = features_of(signal)
                    await self._pc.setRemoteDescription(RTCSessionDescription(sdp=str(signal["sdp"]), type="answer"))
                    self._liveness.open_control_channel(self.remote_features)
                    self._answer_applied.set()
                    self._remote_description_set.set()
                elif kind == "ice_candidate":
                    self._remote_candidates.put_nowait(str(signal["candidate"]))
                elif kind != "connected":  # "connected" carries nothing this side needs
                    counters["ignored_signals"] += 1
            except Exception as exc:  # a bad SDP or candidate from the peer
                counters["ignored_signals"] += 1
                self._report(exc)

    async def _apply_remote_candidates(self) -> None:
        """Apply every remote candidate in arrival order, from the moment the remote description is set."""
        await self._remote_description_set.wait()
        while True:
            text = await self._remote_candidates.get()
            try:
                await self._add_remote_candidate(text)
            except Exception as exc:  # a candidate aiortc cannot use
                self._counters["ignored_signals"] += 1
                self._report(exc)

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

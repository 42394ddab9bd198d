"""A WebRTC peer on plain aiortc that follows the Rust reference client's P2P procedure step by step:
no clasp_fast transport, one CLASP frame per DataChannel message, signals through a plain
``ClaspClient``. Tests use it as a peer that clasp_fast did not write.

Choices a test can make: send the offer (or answer) and the local candidates back to back, straight
behind each other on the relay connection (``signal_now``); ignore the other side's candidates, so
that only this side's connectivity checks can find a pair (``apply_remote_candidates=False``).
"""

from __future__ import annotations

import asyncio
import json
import uuid

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_to_sdp

from clasp_fast.client import ClaspClient
from clasp_fast.ice import install_gathering_policy, is_loopback
from clasp_fast.signaling import signal_address
from clasp_fast.webrtc import RELIABLE_LABEL, UNRELIABLE_LABEL, parse_candidate

TIMEOUT = 15


class RawPeer:
    """One plain aiortc peer connection to ``target``, signaled through ``client``."""

    def __init__(self, client: ClaspClient, *, apply_remote_candidates: bool = True) -> None:
        self.client = client
        self.apply_remote_candidates = apply_remote_candidates
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channels: dict[str, RTCDataChannel] = {}
        self.received: dict[str, list[bytes]] = {UNRELIABLE_LABEL: [], RELIABLE_LABEL: []}
        self.signals: list[dict] = []  # every signal of this connection received, in order
        self.remote_disconnected = asyncio.Event()
        self.target: str | None = None
        self.correlation_id: str | None = None
        self.drop_on_disconnected = True  # as the reference client: drop the connection on the peer's "disconnected"
        self._pump: asyncio.Task | None = None
        self._reliable_open = asyncio.Event()
        self.pc.on("datachannel", self._add_channel)

    # -- set-up --------------------------------------------------------------------------

    async def offer(self, target: str) -> None:
        """Offer to ``target``: the offer and every local candidate back to back, then wait until open."""
        self.target = target
        self.correlation_id = f"{self.client.session_id}-{target}-{uuid.uuid4()}"
        self._add_channel(self.pc.createDataChannel(UNRELIABLE_LABEL, ordered=False, maxRetransmits=0))
        self._add_channel(self.pc.createDataChannel(RELIABLE_LABEL))
        self._restrict_to_loopback()
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)  # gathers the (loopback) host candidate
        self._start_pump()
        await self.signal_now("offer", sdp=offer.sdp)
        await self._send_candidates()
        await self._opened()

    async def answer(self, offer: dict) -> None:
        """Answer ``offer``: the answer and every local candidate back to back, then wait until open."""
        self.target = str(offer["from"])
        self.correlation_id = str(offer["correlation_id"])
        self._start_pump()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=str(offer["sdp"]), type="offer"))
        self._restrict_to_loopback()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        await self.signal_now("answer", sdp=answer.sdp)
        await self._send_candidates()
        await self._opened()

    async def wait_for_offer(self) -> dict:
        """The next offer addressed to this client (signals before it are dropped, as the reference client does)."""
        while True:
            signal = await asyncio.wait_for(self.client.signaling.recv_signal(), TIMEOUT)
            if signal.get("type") == "offer":
                return signal

    def _restrict_to_loopback(self) -> None:
        gatherer = self.pc.sctp.transport.transport.iceGatherer
        install_gathering_policy(gatherer._connection, host_addresses=["127.0.0.1"], udp_receive_buffer=None)

    async def _send_candidates(self) -> None:
        for candidate in self.pc.sctp.transport.transport.iceGatherer.getLocalCandidates():
            assert is_loopback(candidate.ip)
            init = {"candidate": "candidate:" + candidate_to_sdp(candidate), "sdpMid": "0",
                    "sdpMLineIndex": 0, "usernameFragment": None}
            await self.signal_now("ice_candidate", candidate=json.dumps(init))

    async def _opened(self) -> None:
        await asyncio.wait_for(self._reliable_open.wait(), TIMEOUT)
        await self.signal_now("connected")

    def _add_channel(self, channel: RTCDataChannel) -> None:
        self.channels[channel.label] = channel
        channel.on("message", self.received.setdefault(channel.label, []).append)
        if channel.label == RELIABLE_LABEL:
            if channel.readyState == "open":
                self._reliable_open.set()
            channel.on("open", self._reliable_open.set)

    # -- signals -------------------------------------------------------------------------

    async def signal_now(self, kind: str, **fields: str) -> None:
        """Send one signal without waiting for the relay, right behind the previous one."""
        value = {"type": kind, "from": self.client.session_id, "correlation_id": self.correlation_id, **fields}
        await self.client.emit(signal_address(self.target), value)

    def _start_pump(self) -> None:
        self._pump = asyncio.ensure_future(self._read_signals())

    async def _read_signals(self) -> None:
        while True:
            signal = await self.client.signaling.recv_signal()
            if signal.get("correlation_id") != self.correlation_id and signal.get("type") != "disconnected":
                continue
            self.signals.append(signal)
            kind = signal.get("type")
            if kind == "answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=str(signal["sdp"]), type="answer"))
            elif kind == "ice_candidate" and self.apply_remote_candidates:
                await self.pc.addIceCandidate(parse_candidate(str(signal["candidate"])))
            elif kind == "disconnected":
                self.remote_disconnected.set()
                if self.drop_on_disconnected:
                    await self.pc.close()

    # -- data and teardown ---------------------------------------------------------------

    def send(self, frame: bytes, *, reliable: bool = True) -> None:
        self.channels[RELIABLE_LABEL if reliable else UNRELIABLE_LABEL].send(frame)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        await self.pc.close()


def blackhole(pc: RTCPeerConnection) -> None:
    """Drop every datagram this peer connection's ICE sockets receive, as a hung peer would."""
    silence(pc.sctp.transport.transport.iceGatherer._connection, outgoing=False)


def silence(connection, *, outgoing: bool = True) -> None:
    """Drop what the aioice ``connection``'s sockets receive (and send): a dead peer or network."""

    async def send_nothing(data: bytes, addr) -> None:
        return None

    for protocol in connection._protocols:
        protocol.datagram_received = lambda data, addr: None
        if outgoing:
            protocol.send_data = send_nothing

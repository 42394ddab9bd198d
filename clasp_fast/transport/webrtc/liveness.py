"""Whether the peer is still there: the ``clasp-control`` channel's keepalive (PING/PONG, or SYNC
exchanges that also estimate the peer's clock), the round-trip time it measures, and
:meth:`Liveness.probe`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from aiortc import RTCDataChannel, RTCPeerConnection

from ...clock import ClockSync, PeerClock
from ...errors import DecodeError, ProtocolError
from ...wire.codec import decode_all, encode
from ...wire.messages import Ping, Pong, Sync
from ...wire.protocol import CLOCK_FEATURE, KEEPALIVE_FEATURE
from .channels import Channels
from .config import CONTROL_CHANNEL_ID, CONTROL_LABEL, WebRtcConfig

__all__ = ["Liveness"]


class Liveness:
    """Keepalive and liveness of one connection.

    Between clasp_fast peers (feature ``"keepalive"``) a negotiated control channel carries PING/PONG
    every ``keepalive_interval`` seconds; silence on every channel for ``keepalive_timeout`` seconds
    calls ``timed_out``. When both sides offer ``"clock"``, SYNC requests take the PINGs' place
    (after a burst of four when the connection opens) and :attr:`clock` estimates the peer's clock.
    """

    def __init__(
        self,
        config: WebRtcConfig,
        pc: RTCPeerConnection,
        channels: Channels,
        *,
        report: Callable[[BaseException], None],
        connected: Callable[[], bool],
        timed_out: Callable[[], Any],
    ) -> None:
        self.config = config
        self._pc = pc
        self._channels = channels
        self._report = report  # a malformed control message
        self._connected = connected
        self._timed_out = timed_out
        self.control: RTCDataChannel | None = None
        self.last_received = time.monotonic()
        self._ping_rtt: float | None = None
        self._pings: list[float] = []
        self._clock_fn = config.clock
        self.sync: ClockSync | None = None  # when both sides offer "clock"

    @property
    def rtt(self) -> float | None:
        """Seconds of the latest keepalive round trip (None before the first)."""
        clock = self.clock
        return self._ping_rtt if clock is None else clock.rtt_us / 1e6

    @property
    def clock(self) -> PeerClock | None:
        """The peer's clock as estimated so far; None before the first SYNC reply, or with a peer
        that does not offer ``"clock"`` (a browser, an older peer)."""
        return None if self.sync is None else self.sync.peer_clock

    def heard(self) -> None:
        """Something arrived from the peer (on any channel)."""
        self.last_received = time.monotonic()

    def open_control_channel(self, remote_features: tuple[str, ...]) -> None:
        """Create the negotiated control channel when the peer offers keepalives (once)."""
        if KEEPALIVE_FEATURE not in remote_features or self.control is not None:
            return
        dc = self._pc.createDataChannel(CONTROL_LABEL, negotiated=True, id=CONTROL_CHANNEL_ID)
        dc.on("message", self._on_control_message)
        self.control = dc
        if self.config.clock_sync and CLOCK_FEATURE in remote_features:
            self.sync = ClockSync(self._send_control, clock=self._clock_fn)

    def _send_control(self, frame: bytes) -> None:
        if self.control is not None and self.control.readyState == "open":
            self.control.send(frame)

    async def control_open(self) -> None:
        """Wait until the control channel (if there is one) is open."""
        control = self.control
        if control is not None and control.readyState != "open":
            opened = asyncio.Event()
            control.on("open", opened.set)
            if control.readyState != "open":
                await opened.wait()

    def control_buffered(self) -> bool:
        """Whether aiortc still holds data handed to the open control channel."""
        control = self.control
        return control is not None and control.readyState == "open" and bool(control.bufferedAmount)

    def close_control(self) -> None:
        if self.control is not None:
            self.control.close()

    def _on_control_message(self, data: bytes | str) -> None:
        received_us = self._clock_fn()  # as close to the datagram as this side can read it
        self.heard()
        if isinstance(data, str):
            return
        try:
            messages = decode_all(data)
        except DecodeError as exc:
            self._report(exc)
            return
        for message in messages:
            if isinstance(message, Ping):
                if self.control is not None and self.control.readyState == "open":
                    self.control.send(encode(Pong()))
            elif isinstance(message, Pong) and self._pings:
                self._ping_rtt = time.monotonic() - self._pings.pop(0)
            elif isinstance(message, Sync) and self.sync is not None:
                try:
                    self.sync.handle(message, received_us)
                except ProtocolError as exc:
                    self._report(exc)

    async def keepalive(self) -> None:
        """PING every ``keepalive_interval`` while connected; ``timed_out`` after too long a silence."""
        interval = self.config.keepalive_interval
        timeout = self.config.keepalive_timeout
        ping = encode(Ping())
        sync = self.sync
        if sync is not None:
            for _ in range(4):  # a first estimate quickly
                if self.control is None or self.control.readyState != "open":
                    break
                sync.request()
                await asyncio.sleep(0.02)
        while self._connected():
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_received > timeout:
                self._timed_out()
                return
            if sync is not None:
                self._send_control_request(sync)
            elif self.control is not None and self.control.readyState == "open":
                if len(self._pings) > 16:
                    self._pings.pop(0)
                self._pings.append(time.monotonic())
                self.control.send(ping)

    def _send_control_request(self, sync: ClockSync) -> None:
        if self.control is not None and self.control.readyState == "open":
            sync.request()

    async def probe(self, timeout: float | None = None) -> bool:
        """Whether the peer still answers on this connection, within ``timeout`` (default ``close_timeout``).

        Sends a PING (on ``clasp-control`` when negotiated, else on ``clasp-reliable``); the peer is
        alive when it sends anything afterwards or its SCTP stack acknowledges our data. Only the
        real peer can do either: the connection is DTLS-protected.
        """
        if not self._connected():
            return False
        sctp = self._pc.sctp
        acked = getattr(sctp, "_last_sacked_tsn", None)
        started = time.monotonic()
        ping = encode(Ping())
        reliable = self._channels.reliable
        if self.control is not None and self.control.readyState == "open":
            self.control.send(ping)
        elif reliable is not None and reliable.dc.readyState == "open":
            reliable.send_now(ping)
        deadline = started + (self.config.close_timeout if timeout is None else timeout)
        while self._connected() and time.monotonic() < deadline:
            if self.last_received > started or getattr(sctp, "_last_sacked_tsn", None) != acked:
                return True
            await asyncio.sleep(0.01)
        return False

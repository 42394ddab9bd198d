"""Ending a connection without losing what either side already sent (docs/p2p-lifecycle.md).

Either way new sends stop, what is pending goes to SCTP and we wait until the peer acknowledged
it. Our close then sends ``disconnected`` and keeps delivering until the peer has closed its side.
On the peer's ``disconnected`` (it sends nothing new) we wait until it has gone quiet, then close
our DataChannels: SCTP stream resets, which the peer's stack answers after the data it has sent,
so our channels close behind that data; then our ``disconnected`` goes out. Every wait ends when
the reliable channels have closed, the association has gone or ``close_timeout`` passed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aiortc import RTCPeerConnection

from ...runtime.tasks import TaskSet
from .channels import Channel, Channels
from .config import RELIABLE_LABEL, State, WebRtcConfig
from .liveness import Liveness
from .negotiation import Negotiation
from .receive import WebRtcReceiver

__all__ = ["Lifecycle", "Teardown"]

logger = logging.getLogger("clasp_fast.webrtc")


class Lifecycle:
    """The state of one connection (new, connecting, connected, closing, closed, failed), why it
    ended, and who listens to its changes."""

    def __init__(self, notify: Callable[[list[Callable[[str], Any]], str], None]) -> None:
        self.state: State = "new"
        self.close_reason: str | None = None
        self.listeners: list[Callable[[str], Any]] = []
        self._notify = notify  # calls each listener; one that raises is reported

    @property
    def ending(self) -> bool:
        return self.state in ("closing", "closed", "failed")

    def set(self, state: State) -> None:
        if state == self.state:
            return
        self.state = state
        self._notify(self.listeners, state)


class Teardown:
    """The end of one connection: who ends it, what is flushed and waited for, and the final close."""

    def __init__(
        self,
        config: WebRtcConfig,
        lifecycle: Lifecycle,
        pc: RTCPeerConnection,
        channels: Channels,
        liveness: Liveness,
        negotiation: Negotiation,
        receiver: WebRtcReceiver,
        tasks: TaskSet,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self._lifecycle = lifecycle
        self._pc = pc
        self._channels = channels
        self._liveness = liveness
        self._negotiation = negotiation
        self._receiver = receiver
        self._tasks = tasks
        self._loop = loop
        self.closed = asyncio.Event()
        self._peer_closed = asyncio.Event()  # every reliable channel closed or the association gone
        self._disconnected_sent = False
        self.remote_disconnect: str | None = None  # a "disconnected" that came during set-up
        self._peer_disconnected = False  # the peer's "disconnected" came while we were closing
        self._deadline = 0.0  # loop time when the teardown under way gives up waiting
        pc.on("connectionstatechange", self._on_pc_state)

    # -- what ends a connection ----------------------------------------------------------

    async def close(self, reason: str) -> None:
        """We end it: flush, drain, send ``disconnected`` with ``reason``, wait for the peer's side."""
        if self._lifecycle.ending:
            await self.closed.wait()
            return
        await self.shutdown(reason, "closed", graceful=True)

    async def abort(self, reason: str) -> None:
        """Close at once with ``reason``: no ``disconnected`` signal and no waiting for in-flight data."""
        if self._lifecycle.ending:
            await self.closed.wait()
            return
        await self.shutdown(None, "closed", remote_reason=reason)

    def end_soon(self, reason: str | None, *, graceful: bool = False, remote_reason: str | None = None) -> None:
        """Close in the background (from a callback that cannot wait)."""
        self._tasks.spawn(self.shutdown(reason, "closed", graceful=graceful, remote_reason=remote_reason))

    def peer_disconnected(self, reason: str) -> None:
        """The peer's ``disconnected`` signal: it sends nothing new after it."""
        state = self._lifecycle.state
        if state == "closing":
            # We are ending it too: once both sides said so, nothing new is coming either way.
            self._peer_disconnected = True
            if self._disconnected_sent:
                self._tasks.spawn(self._reset_channels_soon())
            return
        if self._negotiation.negotiated and state == "connecting":
            # The peer may see the channels open first and have sent data already:
            # finish setting up, then end as from a connected state.
            self.remote_disconnect = reason
            return
        # Once connected, the peer's data may still be in flight behind its signal.
        self.end_soon(None, graceful=True, remote_reason=reason)

    def _on_pc_state(self) -> None:
        if self._pc.connectionState not in ("failed", "closed"):
            return
        if self._lifecycle.state in ("connecting", "connected"):
            # Nothing more can arrive: close at once (during set-up: the set-up fails).
            self.end_soon(None, remote_reason=f"peer connection {self._pc.connectionState}")
        self._check_peer_closed()

    def channel_closed(self, channel: Channel) -> None:
        if channel.spec.label == RELIABLE_LABEL and self._lifecycle.state == "connected":
            # The peer reset the stream after its data; other channels may still be delivering.
            self.end_soon(None, graceful=True, remote_reason="reliable channel closed")
        self._check_peer_closed()

    # -- the procedure -------------------------------------------------------------------

    async def shutdown(
        self, reason: str | None, final: State, *, graceful: bool = False, remote_reason: str | None = None
    ) -> None:
        """End the connection.

        ``reason`` set: we end it and send ``disconnected`` with that reason. ``graceful`` (only for
        a connection that was up): flush and drain our data, then wait for the peer's channels to
        close, all within ``close_timeout``; a ``disconnected`` we owe the peer goes out after that.
        """
        lifecycle = self._lifecycle
        if lifecycle.ending:
            return
        graceful = graceful and lifecycle.state == "connected"
        lifecycle.close_reason = reason or remote_reason
        if lifecycle.state == "new":  # never started: the peer knows nothing of this connection
            reason = None
        lifecycle.set("closing")
        self._deadline = self._loop.time() + self.config.close_timeout
        try:
            if graceful:
                self._channels.flush()
                await self._drain()
                if reason is not None:
                    # We end it: the peer may still be sending; it closes its side when done.
                    await self._send_disconnected(reason)
                    await self._wait_peer_closed(reset=self._peer_disconnected)
                else:
                    # The peer ended it after its data: our stream resets make its stack close its
                    # side behind that data.
                    await self._wait_peer_closed(reset=True)
                    await self._send_disconnected("closed by the peer")
            elif reason is not None:
                await self._send_disconnected(reason)
        finally:
            self._tasks.cancel()
            self._channels.release_senders()
            await self._pc.close()
            await self._tasks.join()
            self._receiver.end()
            lifecycle.set(final)
            self.closed.set()

    def _check_peer_closed(self) -> None:
        # Reliable channels only: some stacks (werift) never reset a stream they sent nothing
        # ordered on, and what is in flight on the others may be lost anyway.
        sctp = self._pc.sctp
        if (
            self._channels.reliable_closed()
            or self._pc.connectionState in ("failed", "closed")
            or (sctp is not None and sctp.state == "closed")
        ):
            self._peer_closed.set()

    def _unacknowledged(self) -> bool:
        """True while aiortc holds data for the peer that the peer has not acknowledged."""
        if self._channels.buffered() or self._liveness.control_buffered():
            return True
        sctp = self._pc.sctp
        return sctp is not None and any(
            getattr(sctp, queue, None) for queue in ("_data_channel_queue", "_outbound_queue", "_sent_queue")
        )

    async def _drain(self) -> None:
        """Wait (until the teardown's deadline) until aiortc has sent and the peer acknowledged our data."""
        while self._unacknowledged() and self._loop.time() < self._deadline:
            await asyncio.sleep(0.005)

    async def _wait_peer_closed(self, *, reset: bool) -> None:
        """Keep delivering until the peer has closed its side (or the deadline); ``reset``: close our channels first
        (also done later if the peer's ``disconnected`` comes during the wait).

        A channel closes once both directions are reset, and the peer's stack resets its direction
        only after the data it had queued, so every message the peer sent before has arrived then.
        The peer has closed when every reliable channel has, or the association or the peer
        connection is gone.
        """
        if reset:
            await self._reset_channels_soon()
        self._check_peer_closed()
        try:
            await asyncio.wait_for(self._peer_closed.wait(), max(0.0, self._deadline - self._loop.time()))
        except asyncio.TimeoutError:
            logger.info("peer %s did not close its channels within %g s", self._negotiation.peer,
                        self.config.close_timeout)

    async def _reset_channels_soon(self) -> None:
        # Our data is acknowledged, but the peer's stack may not have handed it to its channels yet
        # (Chromium drops what the reset overtakes), and it may still hold data it has not sent
        # (Chromium discards every message it has not started sending when its stream is reset):
        # reset once the peer has sent nothing new for ``reset_delay``.
        if self.config.reset_delay > 0:
            await self._wait_peer_quiet(self.config.reset_delay)
        self._reset_channels()

    async def _wait_peer_quiet(self, quiet: float) -> None:
        """Wait until nothing new has come from the peer's SCTP for ``quiet`` s (at least two smoothed
        round trips), or the teardown's deadline.

        Each time a tick passes with nothing new, our SACK goes out again: a lost SACK must not
        leave a peer whose congestion window is full waiting for its retransmission timer with
        data it has not sent yet.
        """
        sctp = self._pc.sctp
        loop = self._loop
        tick = quiet / 8
        seen: object = None
        quiet_since = loop.time()
        while not self._peer_closed.is_set() and loop.time() < self._deadline:
            progress = _receive_progress(sctp)
            if progress is None:  # no SCTP (or not one we can read): wait the plain delay
                await asyncio.sleep(max(0.0, min(quiet, self._deadline - loop.time())))
                return
            now = loop.time()
            if progress != seen:
                seen, quiet_since = progress, now
            elif now - quiet_since >= max(quiet, 2 * (getattr(sctp, "_srtt", None) or 0.0)):
                return
            else:
                await _acknowledge_again(sctp)
            await asyncio.sleep(tick)

    def _reset_channels(self) -> None:
        self._channels.reset()
        self._liveness.close_control()

    async def _send_disconnected(self, reason: str) -> None:
        if self._disconnected_sent or self._negotiation.correlation_id is None:
            return
        self._disconnected_sent = True
        try:
            await self._negotiation.send_signal({"type": "disconnected", "reason": reason})
        except Exception as exc:  # the signaling path may be gone too
            logger.info("could not send disconnected to %s: %s", self._negotiation.peer, exc)


def _receive_progress(sctp: Any) -> tuple[int, int] | None:
    """What the peer's SCTP has delivered to ours so far: the cumulative TSN and how many chunks
    arrived beyond a gap (None when there is no association, or nothing has arrived yet)."""
    tsn = getattr(sctp, "_last_received_tsn", None)
    beyond = getattr(sctp, "_sack_misordered", None)
    if tsn is None or beyond is None:
        return None
    return tsn, len(beyond)


async def _acknowledge_again(sctp: Any) -> None:
    """Send our SACK for what has arrived once more (aiortc's and the fast path's ``_send_sack``)."""
    if getattr(sctp, "state", None) != "connected":
        return
    try:
        await sctp._send_sack()
    except ConnectionError as exc:  # DTLS closed under us: the association is going away
        logger.debug("could not send a SACK again: %s", exc)

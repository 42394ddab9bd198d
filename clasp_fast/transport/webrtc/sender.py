"""The sending half of a connection: messages and frames to their channel, with backpressure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import TransportError
from .channels import Channels

if TYPE_CHECKING:
    from .transport import WebRtcTransport

__all__ = ["WebRtcSender"]


class WebRtcSender:
    """The sending half of a connection: ``await sender.send(message_or_frame)``."""

    def __init__(self, transport: "WebRtcTransport", channels: Channels) -> None:
        self.transport = transport
        self._channels = channels
        self._counters = channels.counters
        self._high_water_mark = channels.config.high_water_mark

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
        target = self._channels.route(message_or_frame, reliable, qos, channel)
        await target.wait_for_room()
        target.add(message_or_frame, qos)
        self._counters["messages_sent"] += 1

    def send_nowait(
        self, message_or_frame: object, *, reliable: bool | None = None, qos: int | None = None,
        channel: str | None = None,
    ) -> None:
        """Like :meth:`send` but never waits: raises TransportError above the high-water mark."""
        target = self._channels.route(message_or_frame, reliable, qos, channel)
        if target.buffered() > self._high_water_mark:
            raise TransportError(
                f"channel {target.spec.label!r} is above its high-water mark", peer=self._channels.peer, step="send"
            )
        target.add(message_or_frame, qos)
        self._counters["messages_sent"] += 1

    def flush(self) -> None:
        """Hand every pending batch to aiortc now."""
        self._channels.flush()

    async def close(self, reason: str = "User requested disconnect") -> None:
        await self.transport.close(reason)

"""The sending half of a connection: messages and frames to their channel, with backpressure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import TransportError
from .channels import _FRAME_TYPES, Channel, Channels

if TYPE_CHECKING:
    from .transport import WebRtcTransport

__all__ = ["WebRtcSender"]


class WebRtcSender:
    """The sending half of a connection: ``await sender.send(message_or_frame)``."""

    def __init__(self, transport: "WebRtcTransport", channels: Channels) -> None:
        self.transport = transport
        self._channels = channels
        self._counters = channels.counters

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
        channels = self._channels
        target: Channel | None = None
        if channel is None and reliable is not None:  # Channels.route() of this case, written out
            channels.check_open()
            target = channels.reliable if reliable else channels.unreliable
        if target is None:
            target = channels.route(message_or_frame, reliable, qos, channel)  # checks the connection is open
        if target.waiting is not None:
            if target.policy.kind(message_or_frame) is None and target.full():  # type: ignore[union-attr]
                await target.wait_for_room()  # values never wait: they replace
            target.offer(message_or_frame, qos)
        else:
            # Channel.full() and Channel.add() written out: this runs once per message
            # (benchmarks/bench_message_budget.py, budget-send-into-batch).
            batcher = target.batcher
            config = target.table.config
            if (target.dc.bufferedAmount + batcher.pending_size > config.high_water_mark
                    or target.kept > config.conflation_max_kept):
                await target.wait_for_room()
                batcher = target.batcher  # batching may have been switched meanwhile
            if isinstance(message_or_frame, _FRAME_TYPES):
                ready = batcher.add_frame(message_or_frame)
            else:
                # Anything but a message: the compiled batcher raises EncodeError naming it.
                ready = batcher.add_message(message_or_frame, -1 if qos is None else qos)  # type: ignore[arg-type]
            if ready is not None:
                target.send_now(ready)
            if batcher.full:
                if (batch := batcher.take()) is not None:
                    target.send_now(batch)
            elif not target.flush_scheduled and batcher.pending_size:
                target.schedule_flush()
        target.messages_sent += 1
        self._counters["messages_sent"] += 1

    def send_nowait(
        self,
        message_or_frame: object,
        *,
        reliable: bool | None = None,
        qos: int | None = None,
        channel: str | None = None,
        conflate: tuple[str, int] | None = None,
    ) -> None:
        """Like :meth:`send` but never waits: raises TransportError above the high-water mark.

        ``conflate=(address, kind)`` marks a ready-made frame as a conflatable value (the kind from
        :meth:`ConflationPolicy.kind`): a channel that conflates replaces it while backed up when its
        own patterns cover ``address`` (a fan-out group hands its values over this way).
        """
        target = self._channels.route(message_or_frame, reliable, qos, channel)
        if target.waiting is not None:
            policy = target.policy
            if conflate is not None:
                conflatable = policy.matches(conflate[0])  # type: ignore[union-attr]
            else:
                conflatable = (not isinstance(message_or_frame, (bytes, bytearray, memoryview))
                               and policy.kind(message_or_frame) is not None)  # type: ignore[union-attr]
            if not conflatable:
                self._check_room(target)  # values never wait or fail: they replace
            target.offer(message_or_frame, qos, conflate)
        else:
            self._check_room(target)
            target.add(message_or_frame, qos)
        target.messages_sent += 1
        self._counters["messages_sent"] += 1

    def _check_room(self, target: Channel) -> None:
        if target.full():
            raise TransportError(
                f"channel {target.spec.label!r} is above its high-water mark", peer=self._channels.peer, step="send"
            )

    def flush(self) -> None:
        """Hand every pending batch to aiortc now."""
        self._channels.flush()

    async def close(self, reason: str = "User requested disconnect") -> None:
        await self.transport.close(reason)

"""The sending half of a connection: messages and frames to their channel, with backpressure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ...errors import EncodeError, TransportError
from .channels import Channel, Channels

if TYPE_CHECKING:
    from .teardown import Lifecycle
    from .transport import WebRtcTransport

__all__ = ["WebRtcSender"]


class WebRtcSender:
    """The sending half of a connection: ``await sender.send(message_or_frame)``."""

    def __init__(self, transport: "WebRtcTransport", channels: Channels, lifecycle: "Lifecycle") -> None:
        self.transport = transport
        self._channels = channels
        self._lifecycle = lifecycle  # its state, read per send before check_open() is called

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
            if self._lifecycle.state != "connected":
                channels.check_open()  # raises, naming the state
            target = channels.reliable if reliable else channels.unreliable
        if target is None:
            target = channels.route(message_or_frame, reliable, qos, channel)  # checks the connection is open
        if target.waiting is not None:
            if target.policy.kind(message_or_frame) is None and target.full():  # type: ignore[union-attr]
                await target.wait_for_room()  # values never wait: they replace
            target.offer(message_or_frame, qos)
        else:
            # full() and Channel.add() written out: the common case is two compiled calls.
            if not target.batcher.has_room() and target.full():
                await target.wait_for_room()
            if target.batcher.add_item(message_or_frame, -1 if qos is None else qos, target.flush_scheduled):
                target.added()
        target.messages_sent += 1

    async def send_many(
        self,
        messages_or_frames: Iterable[object],
        *,
        reliable: bool | None = None,
        qos: int | None = None,
        channel: str | None = None,
    ) -> int:
        """Send every item of ``messages_or_frames`` (messages or complete frames) in order, as
        :meth:`send` would one by one, in one call: where many messages are ready at once, this
        saves most of the per-message work (encoding goes straight into the batch in compiled code).

        Items are routed as :meth:`send` routes them (all to one channel when ``reliable`` or
        ``channel`` is given). Before each DataChannel message it hands over, it waits while the
        channel is above the high-water mark. On an item that cannot be encoded, the items before
        it are sent and ``EncodeError`` names the item's index. Returns the number of items sent.
        """
        items = messages_or_frames if type(messages_or_frames) is list else list(messages_or_frames)
        channels = self._channels
        if channel is not None or reliable is not None:
            return await self._send_run(channels.route(None, reliable, qos, channel), items, 0, qos)
        # Routed item by item; consecutive items for one channel go together.
        targets = [channels.route(item, None, qos, None) for item in items]
        done = 0
        start = 0
        for index in range(1, len(items) + 1):
            if index == len(items) or targets[index] is not targets[start]:
                done += await self._send_run(targets[start], items[start:index], start, qos)
                start = index
        return done

    async def _send_run(self, target: Channel, items: list[object], offset: int, qos: int | None) -> int:
        """Send ``items`` on ``target``; ``offset``: the index of the first in the caller's items."""
        if target.waiting is not None:  # a conflating channel decides item by item
            for index, item in enumerate(items):
                try:
                    await self.send(item, qos=qos, channel=target.spec.label)
                except EncodeError as exc:
                    raise _item_error(offset + index, exc) from exc
            return len(items)
        code = -1 if qos is None else qos
        ready: list[bytes] = []
        batcher = target.batcher
        done = 0
        try:
            while done < len(items):
                if target.full():
                    await target.wait_for_room()  # also checks the connection is still open
                batcher = target.batcher  # batching may have been switched meanwhile
                try:
                    done = batcher.add_many(items, done, code, ready)
                except EncodeError as exc:
                    done = batcher.stopped_at
                    raise _item_error(offset + done, exc) from exc
                for data in ready:
                    target.send_now(data)
                ready.clear()
        finally:
            if batcher.pending_size and not target.flush_scheduled:
                target.schedule_flush()
            target.messages_sent += done
        return done

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
            if not target.batcher.has_room():  # full() decides only when the quick check says no
                self._check_room(target)
            target.add(message_or_frame, qos)
        target.messages_sent += 1

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


def _item_error(index: int, cause: EncodeError) -> EncodeError:
    error = EncodeError(f"item {index} of send_many: {cause}")
    error.item = index
    return error

"""Encode-once fan-out: one sensor, many viewers over P2P, each with its own backpressure.

A :class:`FanoutGroup` encodes each message once (the compiled codec) and hands the same frame to
every member's :class:`~clasp_fast.webrtc.WebRtcSender`, whose batcher copies it into that peer's
pending DataChannel message. Each member has one lane per DataChannel; a lane whose channel holds
more than ``max_buffered`` bytes (the peer or its link is slow) keeps what comes next in its own
:class:`~clasp_fast.conflation.LatestValueQueue` and hands it over when the channel drains. So one
slow peer never stalls the others, and what that peer misses depends on its ``overflow`` mode:

* ``"conflate"``: values that the group's :class:`~clasp_fast.conflation.ConflationPolicy` opts in
  (plain SETs, stream PUBLISHes) are replaced by newer ones while they wait;
* ``"drop"``: as ``"conflate"``, and besides, messages sent with Fire QoS (streams, gestures: the
  unreliable channel) are dropped while the lane is backed up.

Anything else -- events, SETs outside the policy, BUNDLEs -- waits in the lane and is delivered in
order: nothing sent reliably is dropped. A lane holding more than ``max_backlog`` of those raises
TransportError naming the peer (after every other member got the message): the caller decides
whether to remove that peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal

from .wire.codec import encode
from .conflation import ConflationPolicy, LatestValueQueue
from .errors import TransportError
from .wire.messages import QOS_FIRE, Message, default_qos

if TYPE_CHECKING:
    from .transport.webrtc import WebRtcSender

__all__ = ["FanoutGroup", "LaneStats", "Overflow"]

Overflow = Literal["conflate", "drop"]


@dataclass(frozen=True)
class LaneStats:
    """One member's lane (one DataChannel): frames handed over, waiting, conflated, dropped."""

    member: str
    channel: str
    sent: int
    waiting: int
    conflated: int
    dropped: int


class _Lane:
    """One member's DataChannel and the frames waiting for it."""

    def __init__(self, member: "_Member", label: str) -> None:
        self.member = member
        self.label = label
        self.dc = member.sender.transport.channels[label]
        # (frame, (address, kind) of a conflatable value else None)
        self.backlog: LatestValueQueue[tuple[bytes, tuple[str, int] | None]] = LatestValueQueue()
        self.kept = 0  # non-conflatable frames in the backlog
        self.sent = 0
        self.dropped = 0
        self.dc.on("bufferedamountlow", self.pump)

    def room(self) -> bool:
        return self.dc.bufferedAmount <= self.member.max_buffered

    def hand_over(self, frame: bytes, value: tuple[str, int] | None) -> None:
        # ``conflate``: a channel with a conflation policy of its own may replace the value too.
        self.member.sender.send_nowait(frame, channel=self.label, conflate=value)
        self.sent += 1

    def pump(self) -> None:
        """Hand waiting frames over while the channel has room."""
        backlog = self.backlog
        try:
            while backlog and self.room():
                frame, value = backlog.pop()
                if value is None:
                    self.kept -= 1
                self.hand_over(frame, value)
        except TransportError:
            backlog.clear()  # the connection is gone; the member fails on its next send
            self.kept = 0

    def offer(self, frame: bytes, address: str | None, kind: int | None, fire: bool) -> None:
        value = None if kind is None or address is None else (address, kind)
        if self.backlog:
            self.pump()
        if not self.backlog and self.room():
            self.hand_over(frame, value)
            return
        if fire and self.member.overflow == "drop":
            self.dropped += 1
            return
        if kind is None:
            if self.kept >= self.member.max_backlog:
                raise TransportError(
                    f"fan-out lane {self.label!r} has {self.kept} messages waiting that cannot be conflated "
                    f"(max_backlog {self.member.max_backlog})", peer=self.member.name, step="send")
            self.kept += 1
        self.backlog.push((frame, value), address, kind)

    def stats(self) -> LaneStats:
        return LaneStats(self.member.name, self.label, self.sent, len(self.backlog), self.backlog.conflated,
                         self.dropped)


class _Member:
    def __init__(self, name: str, sender: WebRtcSender, overflow: Overflow, max_buffered: int,
                 max_backlog: int) -> None:
        self.name = name
        self.sender = sender
        self.overflow = overflow
        self.max_buffered = max_buffered
        self.max_backlog = max_backlog
        self.lanes: dict[str, _Lane] = {}

    def lane(self, label: str) -> _Lane:
        lane = self.lanes.get(label)
        if lane is None:
            lane = self.lanes[label] = _Lane(self, label)
        return lane


class FanoutGroup:
    """Send each message to every member (or a subset), encoded once.

    ``policy`` says which values may be conflated for a backed-up member (None: none are);
    ``overflow``, ``max_buffered`` (bytes waiting in the DataChannel before the lane holds frames
    back) and ``max_backlog`` are the defaults for members added without their own.
    """

    def __init__(
        self,
        policy: ConflationPolicy | None = None,
        *,
        overflow: Overflow = "conflate",
        max_buffered: int = 64 * 1024,
        max_backlog: int = 10_000,
    ) -> None:
        _check_member_options(overflow, max_buffered, max_backlog)
        self.policy = policy
        self.overflow = overflow
        self.max_buffered = max_buffered
        self.max_backlog = max_backlog
        self._members: dict[str, _Member] = {}
        self.frames_encoded = 0

    def __len__(self) -> int:
        return len(self._members)

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._members)

    def add(self, name: str, sender: WebRtcSender, *, overflow: Overflow | None = None, max_buffered: int | None = None,
            max_backlog: int | None = None) -> None:
        """Add a member: ``sender`` is a connected :class:`~clasp_fast.webrtc.WebRtcSender`."""
        if name in self._members:
            raise ValueError(f"the fan-out group has a member named {name!r} already")
        overflow = self.overflow if overflow is None else overflow
        max_buffered = self.max_buffered if max_buffered is None else max_buffered
        max_backlog = self.max_backlog if max_backlog is None else max_backlog
        _check_member_options(overflow, max_buffered, max_backlog)
        if sender.transport.state != "connected":
            raise TransportError(f"cannot add a {sender.transport.state} connection to a fan-out group",
                                 peer=name, step="fan-out")
        self._members[name] = _Member(name, sender, overflow, max_buffered, max_backlog)

    def remove(self, name: str) -> None:
        """Remove a member; what waits in its lanes is discarded."""
        member = self._member(name)
        for lane in member.lanes.values():
            lane.dc.remove_listener("bufferedamountlow", lane.pump)
        del self._members[name]

    def discard_sender(self, sender: object) -> None:
        """Remove the members sending through ``sender`` (its connection closed), if any."""
        for name in [name for name, member in self._members.items() if member.sender is sender]:
            self.remove(name)

    def _member(self, name: str) -> _Member:
        member = self._members.get(name)
        if member is None:
            known = ", ".join(repr(m) for m in self._members) or "none"
            raise TransportError(f"no member named {name!r} in the fan-out group (members: {known})",
                                 peer=name, step="fan-out")
        return member

    def send(self, message: Message, *, to: Iterable[str] | None = None, qos: int | None = None) -> None:
        """Encode ``message`` once and offer the frame to every member (or those named in ``to``).

        Never waits. Raises TransportError naming the first member that failed -- an unknown name
        (before anything is sent), a closed connection, or a lane over ``max_backlog`` -- after
        offering the frame to every other member.
        """
        members = list(self._members.values()) if to is None else [self._member(name) for name in to]
        frame = encode(message, qos=qos)
        self.frames_encoded += 1
        fire = (default_qos(message) if qos is None else qos) == QOS_FIRE
        address = getattr(message, "address", None)
        kind = None if self.policy is None else self.policy.kind(message)
        failure: TransportError | None = None
        for member in members:
            try:
                label = member.sender.transport.channel_for(message, qos=qos)
                member.lane(label).offer(frame, address, kind, fire)
            except TransportError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def flush(self) -> None:
        """Hand every member's pending batch to its DataChannels now."""
        for member in self._members.values():
            member.sender.flush()

    def waiting(self) -> int:
        """Frames waiting in the fullest lane (0 when every member keeps up)."""
        return max((len(lane.backlog) for member in self._members.values() for lane in member.lanes.values()),
                   default=0)

    def stats(self) -> list[LaneStats]:
        return [lane.stats() for member in self._members.values() for lane in member.lanes.values()]


def _check_member_options(overflow: str, max_buffered: int, max_backlog: int) -> None:
    if overflow not in ("conflate", "drop"):
        raise ValueError(f"overflow must be 'conflate' or 'drop', got {overflow!r}")
    if max_buffered < 0:
        raise ValueError(f"max_buffered must be >= 0 bytes, got {max_buffered}")
    if max_backlog < 0:
        raise ValueError(f"max_backlog must be >= 0, got {max_backlog}")

"""P2P signaling: the channel a WebRTC connection uses to exchange offer, answer and candidates.

A signal is a docs/protocol.md §10.3 map of strings: ``type`` (``offer``, ``answer``, ``ice_candidate``,
``connected``, ``disconnected``), ``from``, ``correlation_id`` and, by type, ``sdp``,
``candidate`` or ``reason``; clasp_fast adds an optional ``features`` list to offers and answers.

Anything with ``session_id``, ``send_signal()`` and ``recv_signal()`` is a signaling channel:
:class:`RelaySignaling` (a PUBLISH to ``/clasp/p2p/signal/{target}`` through a relay connection),
:class:`StreamSignaling` (a byte stream) or, for tests and in-process use, :class:`InMemorySignaling`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from typing import Any, AsyncIterator, Callable, Protocol, runtime_checkable

from ..errors import ProtocolError, SignalingError, TransportError
from ..runtime.sink import ErrorSink
from ..runtime.tasks import TaskSet
from ..wire.codec import decode, encode
from ..wire.messages import Publish
from ..wire.protocol import ANNOUNCE_ADDRESS, MAX_FRAME, SIGNAL_PREFIX, signal_address

__all__ = [
    "SIGNAL_PREFIX",
    "ANNOUNCE_ADDRESS",
    "SIGNAL_TYPES",
    "REQUIRED_FIELDS",
    "SignalingChannel",
    "InMemorySignaling",
    "RelayLink",
    "RelaySignaling",
    "StreamSignaling",
    "signal_address",
    "new_correlation_id",
    "parse_signal",
]

# Required string fields per signal type (docs/protocol.md §10.3); other keys are ignored by receivers.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "offer": ("from", "sdp", "correlation_id"),
    "answer": ("from", "sdp", "correlation_id"),
    "ice_candidate": ("from", "candidate", "correlation_id"),
    "connected": ("from", "correlation_id"),
    "disconnected": ("from", "correlation_id"),
}
SIGNAL_TYPES = tuple(REQUIRED_FIELDS)


@runtime_checkable
class SignalingChannel(Protocol):
    """What the WebRTC transport needs from a signaling path."""

    @property
    def session_id(self) -> str:
        """This end's session id (the ``from`` of the signals it sends)."""
        ...

    async def send_signal(self, target: str, signal: dict[str, object]) -> None:
        """Send ``signal`` to session ``target``; the channel fills ``from`` with ``session_id``."""
        ...

    async def recv_signal(self) -> dict[str, object]:
        """Return the next signal addressed to this session (including ``from``)."""
        ...

    def __aiter__(self) -> AsyncIterator[dict[str, object]]: ...


def new_correlation_id(initiator: str, target: str) -> str:
    """A fresh correlation id ``{initiator}-{target}-{uuid4}`` (docs/protocol.md §10.4)."""
    return f"{initiator}-{target}-{uuid.uuid4()}"


def parse_signal(value: object) -> dict[str, object] | None:
    """Check that ``value`` is a usable signal map; return it, or None when it is unparseable.

    Unparseable signals (not a map, unknown ``type``, a required field missing or not a string)
    are ignored by receivers, as the reference client does.
    """
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in REQUIRED_FIELDS:
        return None
    for field in REQUIRED_FIELDS[kind]:
        if not isinstance(value.get(field), str):
            return None
    return value


class InMemorySignaling:
    """An in-process signaling channel; channels made together can signal each other.

    Every signal is encoded as the PUBLISH a relay would carry and decoded again on delivery,
    so the maps a receiver sees have exactly the shapes of the relay path.
    """

    def __init__(self, session_id: str, hub: dict[str, "InMemorySignaling"] | None = None) -> None:
        self.session_id = session_id
        self._hub = hub if hub is not None else {}
        if session_id in self._hub:
            raise ValueError(f"session id {session_id!r} already in use on this signaling hub")
        self._hub[session_id] = self
        self._queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        # The last encoded PUBLISH frames this channel sent (for checks against docs/protocol.md §10.3).
        self.sent_frames: deque[bytes] = deque(maxlen=64)

    @classmethod
    def pair(cls, first: str = "a", second: str = "b") -> tuple["InMemorySignaling", "InMemorySignaling"]:
        """Two channels that can signal each other."""
        hub: dict[str, InMemorySignaling] = {}
        return cls(first, hub), cls(second, hub)

    def join(self, session_id: str) -> "InMemorySignaling":
        """A further channel on the same hub as this one."""
        return type(self)(session_id, self._hub)

    async def send_signal(self, target: str, signal: dict[str, object]) -> None:
        message = Publish(address=signal_address(target), signal="event", value={**signal, "from": self.session_id})
        frame = encode(message)
        self.sent_frames.append(frame)
        peer = self._hub.get(target)
        if peer is None:
            raise SignalingError(f"Target session not found: {target}", peer=target, step="signal")
        delivered = decode(frame)
        assert type(delivered) is Publish
        peer._queue.put_nowait(delivered.value)

    async def recv_signal(self) -> dict[str, object]:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[dict[str, object]]:
        return self

    async def __anext__(self) -> dict[str, object]:
        return await self._queue.get()

    def close(self) -> None:
        """Leave the hub: later signals to this session fail as for an unknown session."""
        if self._hub.get(self.session_id) is self:
            del self._hub[self.session_id]


class StreamSignaling:
    """Signals between two endpoints of a byte stream (a TCP connection, a pipe).

    Each signal travels as the PUBLISH frame a relay would carry, preceded by a u32 big-endian
    length (the framing of CLASP over TCP, docs/protocol.md §1.2). Only the one session at the other end
    can be reached; frames addressed to another session are skipped on receipt.
    """

    def __init__(self, session_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.session_id = session_id
        self._reader = reader
        self._writer = writer

    async def send_signal(self, target: str, signal: dict[str, object]) -> None:
        frame = encode(Publish(address=signal_address(target), signal="event",
                               value={**signal, "from": self.session_id}))
        try:
            self._writer.write(len(frame).to_bytes(4, "big") + frame)
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise SignalingError(f"signaling stream closed: {exc}", peer=target, step="signal") from exc

    async def recv_signal(self) -> dict[str, object]:
        own = signal_address(self.session_id)
        while True:
            try:
                size = int.from_bytes(await self._reader.readexactly(4), "big")
                if size > MAX_FRAME:
                    raise SignalingError(f"signal frame of {size} bytes is too large", step="signal")
                frame = await self._reader.readexactly(size)
            except asyncio.IncompleteReadError:
                raise SignalingError("signaling stream closed", step="signal") from None
            message = decode(frame)
            if isinstance(message, Publish) and message.address == own and isinstance(message.value, dict):
                return message.value

    def __aiter__(self) -> AsyncIterator[dict[str, object]]:
        return self

    async def __anext__(self) -> dict[str, object]:
        try:
            return await self.recv_signal()
        except SignalingError:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._writer.close()


class RelayLink(Protocol):
    """What :class:`RelaySignaling` needs of a relay connection (a ``ClaspClient`` is one)."""

    @property
    def session_id(self) -> str | None: ...

    async def send_checked(self, message: Publish, timeout: float) -> None:
        """Send ``message`` and return once the relay has handled it; raise its ERROR if it refused."""
        ...


class RelaySignaling:
    """P2P signals through a relay: PUBLISH to ``/clasp/p2p/signal/{target}`` (docs/protocol.md §10.2).

    The relay connection hands over what the relay routes to this session with :meth:`deliver`;
    unparseable signals and overflow are reported to ``errors``, callbacks run on ``tasks``.
    """

    max_pending = 1024  # unread signals kept; beyond this new ones are dropped and reported

    def __init__(self, link: RelayLink, tasks: TaskSet, errors: ErrorSink, timeout: float = 5.0) -> None:
        self._link = link
        self._tasks = tasks
        self._errors = errors
        self._queue: asyncio.Queue[dict[str, object]] = asyncio.Queue(self.max_pending)
        self._callbacks: list[Callable[[dict[str, object]], Any]] = []
        self.timeout = timeout

    @property
    def session_id(self) -> str:
        return self._link.session_id or ""

    async def send_signal(self, target: str, signal: dict[str, object]) -> None:
        """Send ``signal`` (a docs/protocol.md §10.3 map) to session ``target``; ``from`` is filled in.

        Raises ``SignalingError`` when the relay does not know ``target`` (ERROR 404) or refuses it.
        """
        address = signal_address(target)
        message = Publish(address=address, signal="event", value={**signal, "from": self.session_id})
        try:
            await self._link.send_checked(message, self.timeout)
        except ProtocolError as exc:
            raise SignalingError(f"relay refused the signal: {exc}", peer=target, step="signal") from exc
        except TransportError as exc:
            raise SignalingError(f"cannot send the signal: {exc.reason}", peer=target, step="signal") from exc

    async def recv_signal(self) -> dict[str, object]:
        """The next signal addressed to this session."""
        return await self._queue.get()

    def on_signal(self, callback: Callable[[dict[str, object]], Any]) -> Callable[[dict[str, object]], Any]:
        """Also call ``callback(signal)`` for every signal received; usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def __aiter__(self) -> AsyncIterator[dict[str, object]]:
        return self

    async def __anext__(self) -> dict[str, object]:
        return await self._queue.get()

    def deliver(self, value: object) -> None:
        """A signal the relay routed to this session (the value of its PUBLISH)."""
        signal = parse_signal(value)
        if signal is None:
            self._errors.report(SignalingError(f"unparseable signal ignored: {value!r}"[:200], step="signal"))
            return
        try:
            self._queue.put_nowait(signal)
        except asyncio.QueueFull:
            self._errors.report(SignalingError("too many unread signals: one dropped",
                                               peer=str(signal.get("from")), step="signal"))
        self._tasks.notify(self._callbacks, signal)

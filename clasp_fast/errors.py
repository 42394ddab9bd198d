"""The exception hierarchy: every error clasp_fast raises is a ``ClaspError``."""

from __future__ import annotations

__all__ = [
    "ClaspError",
    "DecodeError",
    "EncodeError",
    "AddressError",
    "PatternError",
    "ProtocolError",
    "TransportError",
    "SignalingError",
    "URLError",
]


class ClaspError(Exception):
    """Base class of every clasp_fast error."""


class DecodeError(ClaspError, ValueError):
    """Bytes that are not a valid CLASP frame.

    ``offset`` is the byte offset (from the start of the buffer given to the
    decoder) where decoding failed, and ``field`` names what was being read.
    """

    def __init__(self, message: str, offset: int | None = None, field: str | None = None) -> None:
        self.reason = message
        self.offset = offset
        self.field = field
        where = []
        if field is not None:
            where.append(f"field {field!r}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        text = f"{message} ({', '.join(where)})" if where else message
        super().__init__(text)

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.reason, self.offset, self.field))


class EncodeError(ClaspError, ValueError):
    """A message or value that cannot be represented on the wire; ``item`` is its index when it
    was one of the items of a ``send_many`` call (the items before it were sent), else None."""

    item: int | None = None


class AddressError(ClaspError, ValueError):
    """An invalid CLASP address; ``address`` is the offending string."""

    def __init__(self, message: str, address: str | None = None) -> None:
        self.reason = message
        self.address = address
        super().__init__(f"{message}: {address!r}" if address is not None else message)

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.reason, self.address))


class PatternError(AddressError):
    """An invalid subscription pattern; ``address`` is the offending pattern."""


class ProtocolError(ClaspError):
    """The remote side broke the protocol, or answered with a CLASP ERROR.

    ``code`` is the CLASP error code when the remote sent one (docs/protocol.md §8.9).
    """

    def __init__(self, message: str, code: int | None = None, address: str | None = None) -> None:
        self.reason = message
        self.code = code
        self.address = address
        parts = [message]
        if code is not None:
            parts.insert(0, f"[{code}]")
        if address is not None:
            parts.append(f"(address {address!r})")
        super().__init__(" ".join(parts))

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.reason, self.code, self.address))


class TransportError(ClaspError):
    """A connection failed; ``peer`` and ``step`` say which and where."""

    def __init__(self, message: str, peer: str | None = None, step: str | None = None) -> None:
        self.reason = message
        self.peer = peer
        self.step = step
        where = []
        if peer is not None:
            where.append(f"peer {peer!r}")
        if step is not None:
            where.append(f"step {step!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.reason, self.peer, self.step))


class SignalingError(TransportError):
    """P2P signaling failed or was rejected."""


class URLError(ClaspError, ValueError):
    """A relay URL that cannot be used; ``url`` is the offending string and the message says the fix."""

    def __init__(self, message: str, url: object = None) -> None:
        self.reason = message
        self.url = url
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.reason, self.url))


class MetricsError(ClaspError):
    """Metrics cannot be exported: ``prometheus_client`` (the ``metrics`` extra) is missing or the
    port cannot be bound."""

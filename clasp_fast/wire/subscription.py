"""A SUBSCRIBE: an id, an address pattern and a filter of signal types."""

from __future__ import annotations

from typing import Iterable

__all__ = ["Subscription"]


class Subscription:
    """A subscription ``id`` for ``pattern``; ``types`` None (or empty) admits every signal type.

    The relay's subscription of a session and a client's callback subscription are this record
    with what each needs added.
    """

    __slots__ = ("id", "pattern", "types")

    def __init__(self, id: int, pattern: str, types: Iterable[str] | None = None) -> None:
        self.id = id
        self.pattern = pattern
        self.types: frozenset[str] | None = frozenset(types) if types else None

    def admits(self, signal: str | None) -> bool:
        """Whether a message of signal type ``signal`` (None: unknown) passes the type filter."""
        return self.types is None or signal is None or signal in self.types

    def __repr__(self) -> str:
        types = "" if self.types is None else f", types={sorted(self.types)}"
        return f"{type(self).__name__}(id={self.id}, pattern={self.pattern!r}{types})"

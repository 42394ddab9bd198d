"""User callbacks by address pattern: the dispatcher a client, a peer or a hybrid client owns.

One dispatcher serves the relay client, each P2P peer and the hybrid client: they differ in where
messages come from, not in how a message finds its callbacks. Everything that builds one calls
:func:`make_dispatcher`, so another implementation (a compiled one with the same ``add``,
``remove`` and ``dispatch``) replaces this one in that single place.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Awaitable, Callable, Iterable, Iterator, Protocol

from ..wire.address import SubscriptionIndex, validate_pattern
from ..wire.subscription import Subscription

__all__ = ["CallbackRegistry", "CallbackSubscription", "Dispatcher", "make_dispatcher", "wants_message"]

Spawn = Callable[[Awaitable[Any]], Any]
Report = Callable[[BaseException], Any]


def wants_message(callback: Callable[..., Any]) -> bool:
    """True when ``callback`` takes a third positional argument (the message)."""
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


class CallbackSubscription(Subscription):
    """A callback ``callback(value, address)`` (or ``(value, address, message)``) for ``pattern``."""

    __slots__ = ("callback", "wants_message")

    def __init__(self, id: int, pattern: str, callback: Callable[..., Any], types: Iterable[str] | None) -> None:
        super().__init__(id, pattern, types)
        self.callback = callback
        self.wants_message = wants_message(callback)

    def deliver(self, value: Any, address: str, message: Any, spawn: Spawn, report: Report) -> None:
        """Call the callback; a coroutine it returns goes to ``spawn``, an exception to ``report``."""
        try:
            result = self.callback(value, address, message) if self.wants_message else self.callback(value, address)
            if result is not None and inspect.isawaitable(result):
                spawn(result)
        except Exception as exc:
            report(exc)


class Dispatcher(Protocol):
    """What owners need of a dispatcher (the interface a replacement implements)."""

    def add(self, pattern: str, callback: Callable[..., Any], types: Iterable[str] | None = None
            ) -> CallbackSubscription: ...

    def remove(self, subscription_id: int) -> CallbackSubscription | None: ...

    def dispatch(self, address: str, value: Any, signal: str, message: Any) -> None: ...

    def __iter__(self) -> Iterator[CallbackSubscription]: ...

    def __len__(self) -> int: ...


class CallbackRegistry:
    """Subscriptions with ids, and dispatch of a received value to every matching callback, on the
    compiled :class:`~clasp_fast.wire.address.SubscriptionIndex`.

    A coroutine a callback returns goes to ``spawn``; an exception it raises goes to ``report``
    and the other callbacks still run.
    """

    def __init__(self, spawn: Spawn, report: Report, cache_size: int = 1024) -> None:
        self.spawn = spawn
        self.report = report
        self._index = SubscriptionIndex(cache_size)
        self._subscriptions: dict[int, CallbackSubscription] = {}
        self._ids = itertools.count(1)

    def add(self, pattern: str, callback: Callable[..., Any], types: Iterable[str] | None = None
            ) -> CallbackSubscription:
        """Register ``callback`` for ``pattern`` (a ``PatternError`` if invalid) under a fresh id."""
        validate_pattern(pattern)
        sub = CallbackSubscription(next(self._ids), pattern, callback, types)
        self._index.add(pattern, sub, sub.id)
        self._subscriptions[sub.id] = sub
        return sub

    def remove(self, subscription_id: int) -> CallbackSubscription | None:
        """Remove a subscription; returns it, or None when the id is unknown."""
        sub = self._subscriptions.pop(subscription_id, None)
        if sub is not None:
            self._index.remove(subscription_id)
        return sub

    def __iter__(self) -> Iterator[CallbackSubscription]:
        return iter(list(self._subscriptions.values()))

    def __len__(self) -> int:
        return len(self._subscriptions)

    def dispatch(self, address: str, value: Any, signal: str, message: Any) -> None:
        """Call every callback whose pattern matches ``address`` and whose types admit ``signal``."""
        for _key, _pattern, sub in self._index.match_entries(address):
            if sub.types is None or signal in sub.types:
                sub.deliver(value, address, message, self.spawn, self.report)


def make_dispatcher(spawn: Spawn, report: Report, cache_size: int = 1024) -> Dispatcher:
    """The dispatcher owners use: callbacks' coroutines go to ``spawn``, their exceptions to ``report``."""
    return CallbackRegistry(spawn, report, cache_size)

"""User callbacks by address pattern: the dispatcher a client, a peer or a hybrid client owns.

One dispatcher serves the relay client, each P2P peer and the hybrid client: they differ in where
messages come from, not in how a message finds its callbacks. The implementation is compiled
(``clasp_fast._dispatch``, docs/architecture.md, "The compiled core"); everything that builds one calls
:func:`make_dispatcher`, and owners depend only on the :class:`Dispatcher` interface.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Iterator, Protocol

from .._build_check import load_extension

load_extension("_dispatch")  # a missing build fails here with a message that says how to build

from .._dispatch import CallbackRegistry, wants_message  # noqa: E402
from .._dispatch import Subscription as CallbackSubscription  # noqa: E402

__all__ = ["CallbackRegistry", "CallbackSubscription", "Dispatcher", "make_dispatcher", "wants_message"]

Spawn = Callable[[Awaitable[Any]], Any]
Report = Callable[[Exception], Any]


class Dispatcher(Protocol):
    """What owners need of a dispatcher (the interface a replacement implements)."""

    def add(self, pattern: str, callback: Callable[..., Any], types: Iterable[str] | None = None
            ) -> CallbackSubscription: ...

    def remove(self, subscription_id: int) -> CallbackSubscription | None: ...

    def dispatch(self, address: str, value: Any, signal: str, message: Any) -> None: ...

    def __iter__(self) -> Iterator[CallbackSubscription]: ...

    def __len__(self) -> int: ...


def make_dispatcher(spawn: Spawn, report: Report, cache_size: int = 1024) -> Dispatcher:
    """The dispatcher owners use: callbacks' coroutines go to ``spawn``, their exceptions to ``report``.

    ``add`` validates the pattern (a ``PatternError`` names it); a callback's exception goes to
    ``report`` and the other callbacks still run.
    """
    return CallbackRegistry(spawn, report, cache_size)

"""Where the errors of one top-level object go (a client, a P2P endpoint, a hybrid client, a relay)."""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from .tasks import TaskSet

__all__ = ["ErrorCallback", "ErrorSink"]

ErrorCallback = Callable[[BaseException], Any]
_Callback = TypeVar("_Callback", bound=ErrorCallback)


class ErrorSink:
    """One policy for errors nobody awaits: each goes to every ``on_error`` callback, or to the log
    when there is none.

    Such errors are a malformed frame from a peer, an ERROR the relay sent that no request claims,
    a failed background task, a user callback that raised. The top-level object makes one sink and
    hands it to everything it owns, so they all end up at the callbacks its user registered.
    A callback may be a coroutine function; a callback that raises is logged.
    """

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, *, tracebacks: bool = False) -> None:
        self.logger = logger
        self.level = level
        self.tracebacks = tracebacks  # log each error with its traceback (internal failures)
        self._callbacks: list[ErrorCallback] = []
        self._tasks = TaskSet(self._callback_failed)

    def add(self, callback: _Callback) -> _Callback:
        """Send every later error to ``callback(error)`` too; returns it (usable as a decorator)."""
        self._callbacks.append(callback)
        return callback

    def remove(self, callback: ErrorCallback) -> None:
        """Stop sending errors to ``callback`` (no error if it was not added)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def report(self, error: BaseException) -> None:
        """Hand ``error`` to the callbacks, or log it when there are none."""
        if not self._callbacks:
            self.logger.log(self.level, "%s", error, exc_info=error if self.tracebacks else None)
            return
        self._tasks.notify(self._callbacks, error)

    def __len__(self) -> int:
        return len(self._callbacks)

    def _callback_failed(self, exc: BaseException) -> None:
        self.logger.error("an on_error callback failed", exc_info=exc)

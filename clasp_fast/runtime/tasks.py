"""Background tasks and user callbacks of one long-lived object (a client, a P2P endpoint, a peer)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Iterable

log = logging.getLogger("clasp_fast")


class TaskSet:
    """Keeps an object's background tasks referenced until they finish and reports their failures.

    asyncio holds only weak references to tasks, so a task nobody keeps can vanish mid-flight;
    every task spawned here stays in the set until it is done. A failed task's exception goes to
    ``on_error``; cancellation is not a failure.
    """

    def __init__(self, on_error: Callable[[BaseException], Any]) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._on_error = on_error

    def spawn(self, awaitable: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._on_error(task.exception())

    def notify(self, callbacks: Iterable[Callable], *args: Any) -> None:
        """Call each user callback with ``args``; run the coroutines they return as tasks.

        A callback that raises is logged and the others still run.
        """
        for callback in list(callbacks):
            try:
                result = callback(*args)
                if inspect.isawaitable(result):
                    self.spawn(result)
            except Exception:
                log.exception("callback %r failed", callback)

    def cancel(self) -> list[asyncio.Task]:
        """Cancel every task except the calling one; returns the cancelled tasks."""
        current = asyncio.current_task()
        cancelled = [task for task in self._tasks if task is not current]
        for task in cancelled:
            task.cancel()
        return cancelled

    async def cancel_and_wait(self) -> None:
        """Cancel every task except the calling one and wait until they have finished."""
        await asyncio.gather(*self.cancel(), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)

"""Background tasks and user callbacks of one long-lived object (a client, a peer, a transport, a relay)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Iterable

__all__ = ["TaskSet"]


class TaskSet:
    """Keeps an object's background tasks referenced until they finish and reports their failures.

    asyncio holds only weak references to tasks, so a task nobody keeps can vanish mid-flight;
    every task spawned here stays in the set until it is done. A failed task's exception goes to
    ``on_error`` (cancellation is not a failure), and so does an exception a user callback run by
    :meth:`notify` raises.
    """

    def __init__(self, on_error: Callable[[BaseException], Any]) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error = on_error

    def spawn(self, awaitable: Awaitable[Any], *, awaited: bool = False) -> asyncio.Task[Any]:
        """Run ``awaitable`` as a task kept here until it is done.

        ``awaited``: the caller awaits the task and sees its outcome, so a failure is not reported.
        """
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard if awaited else self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._on_error(error)

    def notify(self, callbacks: Iterable[Callable[..., Any]], *args: Any) -> None:
        """Call each callback with ``args``; a coroutine one returns runs as a task here.

        A callback that raises is reported to ``on_error`` and the others still run.
        """
        for callback in list(callbacks):
            try:
                result = callback(*args)
                if result is not None and inspect.isawaitable(result):
                    self.spawn(result)
            except Exception as exc:
                self._on_error(exc)

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel every task except the calling one; returns the cancelled tasks."""
        current = asyncio.current_task()
        cancelled = [task for task in self._tasks if task is not current]
        for task in cancelled:
            task.cancel()
        return cancelled

    async def cancel_and_wait(self) -> None:
        """Cancel every task except the calling one and wait until they have finished."""
        await asyncio.gather(*self.cancel(), return_exceptions=True)

    async def join(self) -> None:
        """Wait until every task but the calling one has finished (cancelled ones included)."""
        current = asyncio.current_task()
        others = [task for task in self._tasks if task is not current]
        if others:
            await asyncio.gather(*others, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)

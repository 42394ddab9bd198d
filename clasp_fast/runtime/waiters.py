"""Requests waiting for their answers: one FIFO queue per kind of answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Hashable, Iterator

__all__ = ["Waiters"]


class Waiters:
    """Requests waiting for an answer, oldest first, in one queue per key.

    A key names what answers a request, e.g. ``("set", address)``, ``"ping"`` or ``("sync", t1)``.
    Answers come in request order per key, so the oldest entry of a key takes the next answer
    (:meth:`take`). An entry added with ``wait=False`` is a placeholder: it takes its answer, so
    that later requests get theirs, but nobody waits for it.
    """

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[asyncio.Future[Any] | None]] = {}

    def add(self, key: Hashable, wait: bool = True) -> asyncio.Future[Any] | None:
        """Queue a request under ``key``; its future (None for a placeholder)."""
        future = asyncio.get_running_loop().create_future() if wait else None
        self._queues.setdefault(key, deque()).append(future)
        return future

    @contextlib.contextmanager
    def request(self, key: Hashable) -> Iterator[asyncio.Future[Any]]:
        """A request under ``key`` that leaves no entry behind once the block ends (answered,
        timed out or cancelled): a late answer then goes to the next request."""
        future = self.add(key)
        assert future is not None
        try:
            yield future
        finally:
            self.discard(key, future)

    def discard(self, key: Hashable, entry: asyncio.Future[Any] | None) -> None:
        """Take ``entry`` off the queue of ``key`` if it is still there."""
        queue = self._queues.get(key)
        if queue is not None and entry in queue:
            queue.remove(entry)
            if not queue:
                del self._queues[key]

    def waiting(self, key: Hashable) -> bool:
        """Whether any request is queued under ``key``."""
        return key in self._queues

    def take(self, key: Hashable) -> asyncio.Future[Any] | None:
        """Take the oldest entry of ``key`` off its queue; its future if someone still waits for it."""
        queue = self._queues.get(key)
        if not queue:
            return None
        future = queue.popleft()
        if not queue:
            del self._queues[key]
        return future if future is not None and not future.done() else None

    def take_all(self, key: Hashable) -> list[asyncio.Future[Any]]:
        """Take every entry of ``key``; the futures still waited for."""
        queue = self._queues.pop(key, ())
        return [future for future in queue if future is not None and not future.done()]

    def resolve(self, key: Hashable, value: Any) -> bool:
        """Answer the oldest request of ``key`` with ``value``; False when it had no waiting one."""
        future = self.take(key)
        if future is None:
            return False
        future.set_result(value)
        return True

    def fail_all(self, error: BaseException) -> None:
        """End every request with ``error`` (the connection is gone)."""
        queues, self._queues = self._queues, {}
        for queue in queues.values():
            for future in queue:
                if future is not None and not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: nobody may be waiting any more

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

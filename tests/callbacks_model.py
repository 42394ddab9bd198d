"""The plain-Python callback registry and receive path the compiled dispatcher replaced.

The oracle for tests/test_dispatch_differential.py and the "before" side of
benchmarks/bench_dispatch.py: ``decode_all`` / ``decode_slice`` for the frames, then
``SubscriptionIndex.match_entries`` and one Python call per subscription, as
the Python registry did before clasp_fast._dispatch.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Awaitable, Callable, Iterable, Iterator

from clasp_fast._codec import decode_slice
from clasp_fast._dispatch import wants_message  # the same inspect.signature rule, not under test here
from clasp_fast.address import SubscriptionIndex, validate_pattern
from clasp_fast.messages import Param, Publish, Set


class ModelSubscription:
    def __init__(self, id: int, pattern: str, callback: Callable, types: Iterable[str] | None) -> None:
        self.id = id
        self.pattern = pattern
        self.callback = callback
        self.types = frozenset(types) if types else None
        self.wants_message = wants_message(callback)

    def deliver(self, value: Any, address: str, message: Any,
                spawn: Callable[[Awaitable], Any], report: Callable[[Exception], Any]) -> None:
        try:
            result = self.callback(value, address, message) if self.wants_message else self.callback(value, address)
            if result is not None and inspect.isawaitable(result):
                spawn(result)
        except Exception as exc:
            report(exc)


class ModelRegistry:
    def __init__(self, spawn: Callable[[Awaitable], Any], report: Callable[[Exception], Any],
                 cache_size: int = 1024) -> None:
        self.spawn = spawn
        self.report = report
        self._index = SubscriptionIndex(cache_size)
        self._subscriptions: dict[int, ModelSubscription] = {}
        self._ids = itertools.count(1)

    def add(self, pattern: str, callback: Callable, types: Iterable[str] | None = None) -> ModelSubscription:
        validate_pattern(pattern)
        sub = ModelSubscription(next(self._ids), pattern, callback, types)
        self._index.add(pattern, sub, sub.id)
        self._subscriptions[sub.id] = sub
        return sub

    def remove(self, subscription_id: int) -> ModelSubscription | None:
        sub = self._subscriptions.pop(subscription_id, None)
        if sub is not None:
            self._index.remove(subscription_id)
        return sub

    def __iter__(self) -> Iterator[ModelSubscription]:
        return iter(list(self._subscriptions.values()))

    def __len__(self) -> int:
        return len(self._subscriptions)

    def dispatch(self, address: str, value: Any, signal: str, message: Any) -> None:
        for _key, _pattern, sub in self._index.match_entries(address):
            if sub.types is None or signal in sub.types:
                sub.deliver(value, address, message, self.spawn, self.report)

    def dispatch_message(self, message: Any) -> bool:
        """What the peer and the clients did per received message (``apply`` / ``_handle``)."""
        kind = type(message)
        if kind is Set:
            self.dispatch(message.address, message.value, "param", message)
        elif kind is Publish:
            value = message.samples if message.samples is not None else message.value
            self.dispatch(message.address, value, message.signal or "event", message)
        elif kind is Param:
            self.dispatch(message.address, message.value, "param", message)
        else:
            return False
        return True

    def receive(self, data: bytes, start: int = 0, max_frames: int = -1,
                other: Callable[[Any], Any] | None = None) -> tuple[int, int, int]:
        """The receive path before the compiled dispatcher: decode a slice, then one message at
        a time through Python."""
        messages, errors, end = decode_slice(data, start, max_frames)
        for message in messages:
            if not self.dispatch_message(message) and other is not None:
                other(message)
        for error in errors:
            self.report(error)
        return end, len(messages), len(errors)

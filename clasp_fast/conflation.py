"""Latest-value conflation: while a link is backpressured, a newer value replaces the queued one.

For control params and sensor streams the newest value matters, not the queue. A sender that
cannot hand messages to a link as fast as they come keeps them in a :class:`LatestValueQueue`
instead of a plain FIFO: a SET or stream PUBLISH to an address that already has a value waiting
*replaces* that value, in that value's place in the line. A slow link then carries the current
state with a delay bounded by the number of addresses, instead of a backlog that grows with time.

What is conflated is opt-in, by address pattern (:class:`ConflationPolicy`), and only ever:

* a SET without ``revision``, ``lock`` or ``unlock`` (a compare-and-set or a lock must arrive as sent);
* a PUBLISH with ``signal == "stream"``.

Events, gestures, timelines, BUNDLEs (which is how the exactly-once path travels over P2P), GETs,
SUBSCRIBEs and everything else pass through untouched and are never dropped.

Guarantees, for the messages of one queue (one channel):

* every message that is not conflatable is delivered, once, in the order sent;
* per (address, message type), values are delivered in the order sent, and the last value sent is
  always delivered; a value is left out only when a newer one to the same address and type was
  queued behind it before it left;
* a slot keeps the place of the first value queued in it (first-enqueue order): every address waiting
  is served in turn, so none starves however often it is updated;
* fences: a conflatable value never crosses a non-conflatable message to the *same address* (with
  ``fence="address"``, the default) or to *any* address (``fence="all"``): a newer value sent after
  such a message starts a new slot behind it.

What changes compared with a plain FIFO: values in between are skipped; and with ``fence="address"``
a newer value can overtake messages to *other* addresses that were queued after its slot -- use
``fence="all"`` when a value must never arrive before an event sent ahead of it.

Memory: at most one open slot per (address, type), plus the non-conflatable messages waiting, plus
the slots those messages closed (at most one per type for ``fence="address"``, at most every open
slot for ``fence="all"``). Without non-conflatable messages that is one slot per (address, type).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import Any, Callable, Generic, Iterable, Iterator, Literal, TypeVar

from .wire.address import Pattern
from .errors import PatternError
from .wire.messages import Publish, Set

__all__ = ["ConflatingHandler", "ConflationPolicy", "Fence", "LatestValueQueue"]

T = TypeVar("T")
Fence = Literal["address", "all"]

_CACHE_LIMIT = 4096


class ConflationPolicy:
    """Which messages may be conflated: SETs and stream PUBLISHes to addresses matching ``patterns``.

    Patterns follow subscription syntax (``/sensor/**``, ``/mixer/*/gain``); ``"/**"`` opts a
    whole channel in. Raises PatternError naming the pattern when one is not valid.
    """

    def __init__(self, patterns: str | Iterable[str]) -> None:
        if isinstance(patterns, str):
            patterns = [patterns]
        compiled = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise PatternError(f"a conflation pattern must be a string, got {type(pattern).__name__}",
                                   repr(pattern))
            try:
                compiled.append(Pattern(pattern))
            except PatternError as exc:
                raise PatternError(f"invalid conflation pattern ({exc.reason})", pattern) from None
        if not compiled:
            raise ValueError("a conflation policy needs at least one address pattern")
        self.patterns: tuple[str, ...] = tuple(p.pattern for p in compiled)
        self._compiled = tuple(compiled)
        self._cache: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"ConflationPolicy({list(self.patterns)!r})"

    def matches(self, address: str) -> bool:
        """True when ``address`` is opted in."""
        hit = self._cache.get(address)
        if hit is None:
            hit = any(p.matches(address) for p in self._compiled)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[address] = hit
        return hit

    def kind(self, message: object) -> int | None:
        """The message type code when ``message`` may be conflated, else None."""
        if type(message) is Set:
            if message.revision is not None or message.lock or message.unlock:
                return None
        elif type(message) is not Publish or message.signal != "stream":
            return None
        return message.TYPE if self.matches(message.address) else None


class _Slot(Generic[T]):
    __slots__ = ("item", "key")

    def __init__(self, item: T, key: tuple[str, int] | None) -> None:
        self.item = item
        self.key = key


class LatestValueQueue(Generic[T]):
    """A FIFO in which a newer conflatable value replaces the one waiting for its (address, type).

    ``push(item, address, kind)`` queues ``item``; ``kind`` (a message type code, see
    :meth:`ConflationPolicy.kind`) marks it conflatable, None marks it as a message that must be
    delivered (a fence, see the module documentation). ``pop()`` takes the oldest slot.
    Items are opaque: messages, encoded frames, anything.
    """

    def __init__(self, fence: Fence = "address") -> None:
        if fence not in ("address", "all"):
            raise ValueError(f"fence must be 'address' or 'all', got {fence!r}")
        self.fence: Fence = fence
        self._slots: deque[_Slot[T]] = deque()
        self._open: dict[tuple[str, int], _Slot[T]] = {}
        self._kinds: set[int] = set()
        self.conflated = 0  # values replaced by a newer one before they left

    def __len__(self) -> int:
        return len(self._slots)

    def __bool__(self) -> bool:
        return bool(self._slots)

    @property
    def open_slots(self) -> int:
        """Slots a newer value would still replace."""
        return len(self._open)

    def push(self, item: T, address: str | None = None, kind: int | None = None) -> bool:
        """Queue ``item``; True when it replaced a waiting value (which is then never delivered)."""
        if kind is not None:
            if address is None:
                raise ValueError("a conflatable item needs its address")
            key = (address, kind)
            slot = self._open.get(key)
            if slot is not None:
                slot.item = item
                self.conflated += 1
                return True
            slot = _Slot(item, key)
            self._slots.append(slot)
            self._open[key] = slot
            self._kinds.add(kind)
            return False
        if self.fence == "all":
            if self._open:
                self._open = {}
        elif address is not None and self._open:
            for seen in self._kinds:
                self._open.pop((address, seen), None)
        self._slots.append(_Slot(item, None))
        return False

    def pop(self) -> T:
        """The oldest waiting item (IndexError when empty)."""
        slot = self._slots.popleft()
        key = slot.key
        if key is not None and self._open.get(key) is slot:
            del self._open[key]
        return slot.item

    def drain(self) -> Iterator[T]:
        """Pop items until the queue is empty (items pushed meanwhile are included)."""
        while self._slots:
            yield self.pop()

    def clear(self) -> None:
        self._slots.clear()
        self._open.clear()


class ConflatingHandler:
    """Puts a :class:`LatestValueQueue` between a receive path and a handler slower than the peer.

    Call the object with each received message (it is a message callback: it never blocks); a task
    takes one message at a time from the queue and runs ``handler(message)`` (awaited when it is a
    coroutine function, else followed by one pass of the event loop), so while the handler works,
    newer values replace the ones still waiting (``policy``) and it always takes the latest.
    Everything else waits in order. An exception the handler raises goes to ``on_error`` and the
    next message is taken. ``handled`` counts handler calls, ``conflated`` values skipped.
    """

    def __init__(
        self,
        handler: Callable[[Any], Any],
        policy: ConflationPolicy,
        *,
        fence: Fence = "address",
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        if not isinstance(policy, ConflationPolicy):
            raise TypeError(f"policy must be a ConflationPolicy, got {type(policy).__name__}")
        self.handler = handler
        self.policy = policy
        self.queue: LatestValueQueue[object] = LatestValueQueue(fence)
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.handled = 0

    @property
    def conflated(self) -> int:
        return self.queue.conflated

    def __len__(self) -> int:
        return len(self.queue)

    def __call__(self, message: object, item: object = None) -> None:
        """Queue ``message`` (the handler gets ``item`` instead when one is given)."""
        if self._closed:
            return
        self.queue.push(message if item is None else item, getattr(message, "address", None),
                        self.policy.kind(message))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        queue = self.queue
        try:
            while queue:
                message = queue.pop()
                try:
                    result = self.handler(message)
                    if inspect.isawaitable(result):
                        await result
                    else:
                        await asyncio.sleep(0)  # let the receive path run between two calls
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a failing handler must not stop the queue
                    if self._on_error is None:
                        raise
                    self._on_error(exc)
                self.handled += 1
        finally:
            self._task = None

    async def close(self) -> None:
        """Stop taking messages; what still waits is discarded."""
        self._closed = True
        self.queue.clear()
        task = self._task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

"""User callbacks by address pattern, and the compiled receive path that feeds them.

A `CallbackRegistry` holds subscriptions (pattern, callback, signal types) in a
`SubscriptionIndex` and calls the matching callbacks for a received value. `receive()` takes the
bytes of a DataChannel message and decodes every frame, matches each SET/PUBLISH address and
calls the callbacks without leaving compiled code: the decoder and the index are reached through
their .pxd interfaces (clasp_fast._codec, clasp_fast._address).

Errors never stop delivery: an exception a callback raises goes to `report` and the other
callbacks still run; a malformed frame goes to `report` (or `decode_error`) as a DecodeError
with its byte offset and field, and the walk goes on with the next frame.
"""

from buffers cimport Input, input_close, input_open
from clasp_fast._address cimport Pattern, SubscriptionIndex
from clasp_fast._codec cimport Param, Publish, Set, decode_next

import inspect
import types as _types

from clasp_fast.errors import DecodeError

cdef object _isawaitable = inspect.isawaitable
cdef object _CoroutineType = _types.CoroutineType

# Signal types as bits, so a subscription's type filter is one AND for the five known names.
cdef tuple _SIGNALS = ("param", "event", "stream", "gesture", "timeline")

cdef enum:
    BIT_PARAM = 1
    ALL_BITS = 0x1F


cdef inline int signal_bit(object signal) noexcept:
    """The bit of a known signal type name, 0 for anything else."""
    cdef int i
    if type(signal) is not str:
        return 0
    for i in range(5):
        if signal is _SIGNALS[i]:  # decoded messages carry these very objects
            return 1 << i
    for i in range(5):
        if signal == _SIGNALS[i]:
            return 1 << i
    return 0


def wants_message(callback) -> bool:
    """True when ``callback`` takes a third positional argument (the message)."""
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


cdef class Subscription:
    """A callback for ``pattern``; ``types`` (signal types) None means every type."""

    cdef readonly object id
    cdef readonly object pattern
    cdef readonly object callback
    cdef readonly object types
    cdef readonly bint wants_message
    cdef int mask  # bits of the known signal types in `types` (every bit when types is None)

    def __init__(self, id, pattern, callback, types):
        cdef int bit
        self.id = id
        self.pattern = pattern
        self.callback = callback
        self.types = frozenset(types) if types else None
        self.wants_message = wants_message(callback)
        if self.types is None:
            self.mask = ALL_BITS
        else:
            self.mask = 0
            for name in self.types:
                bit = signal_bit(name)
                self.mask |= bit

    cdef inline bint admits(self, int bit, object signal) except -1:
        if self.types is None:
            return True
        if bit:
            return (self.mask & bit) != 0
        return signal in self.types

    def deliver(self, value, address, message, spawn, report) -> None:
        """Call the callback; a coroutine it returns goes to ``spawn``, an exception to ``report``."""
        try:
            if self.wants_message:
                result = self.callback(value, address, message)
            else:
                result = self.callback(value, address)
            if result is not None and is_awaitable(result):
                spawn(result)
        except Exception as exc:
            report(exc)

    def __repr__(self):
        return f"<Subscription {self.id} {self.pattern!r} {self.callback!r}>"


cdef inline bint is_awaitable(object result) except -1:
    if type(result) is _CoroutineType:
        return True
    return _isawaitable(result)


cdef class CallbackRegistry:
    """Subscriptions with ids, and dispatch of a received value to every matching callback.

    A coroutine a callback returns goes to ``spawn``; an exception it raises goes to ``report``
    and the other callbacks still run. ``cache_size`` is the address cache of the index.
    """

    cdef public object spawn
    cdef public object report
    cdef SubscriptionIndex _index
    cdef dict _subscriptions
    cdef Py_ssize_t _next_id

    def __init__(self, spawn, report, cache_size=1024):
        self.spawn = spawn
        self.report = report
        self._index = SubscriptionIndex(cache_size)
        self._subscriptions = {}
        self._next_id = 1

    def add(self, pattern, callback, types=None) -> Subscription:
        """Register ``callback`` for ``pattern`` (a ``PatternError`` if invalid) under a fresh id."""
        cdef Pattern compiled = Pattern(pattern)
        cdef Py_ssize_t id = self._next_id
        self._next_id += 1
        sub = Subscription(id, pattern, callback, types)
        self._index.add(compiled, sub, id)
        self._subscriptions[id] = sub
        return sub

    def remove(self, subscription_id):
        """Remove a subscription; returns it, or None when the id is unknown."""
        sub = self._subscriptions.pop(subscription_id, None)
        if sub is not None:
            self._index.remove(subscription_id)
        return sub

    def __iter__(self):
        return iter(list(self._subscriptions.values()))

    def __len__(self):
        return len(self._subscriptions)

    cpdef dispatch(self, address, value, signal, message):
        """Call every callback whose pattern matches ``address`` and whose types admit ``signal``."""
        self.call_matching(address, value, signal_bit(signal), signal, message)

    cpdef bint dispatch_message(self, message) except -1:
        """Dispatch a SET (signal "param"), PUBLISH (its signal, default "event"; its samples if
        it carries them) or snapshot ``Param`` ("param"). False, and nothing called, for any
        other message."""
        cdef type kind = type(message)
        cdef Publish publish
        cdef object signal, value
        if kind is Set:
            self.call_matching((<Set>message).address, (<Set>message).value, BIT_PARAM, "param",
                               message)
            return True
        if kind is Publish:
            publish = <Publish>message
            value = publish.samples if publish.samples is not None else publish.value
            signal = publish.signal or "event"
            self.call_matching(publish.address, value, signal_bit(signal), signal, message)
            return True
        if kind is Param:
            self.call_matching((<Param>message).address, (<Param>message).value, BIT_PARAM,
                               "param", message)
            return True
        return False

    cdef int call_matching(self, object address, object value, int bit, object signal,
                           object message) except -1:
        cdef tuple subs = self._index.match(address)
        cdef Py_ssize_t i = 0, n = len(subs)
        cdef Subscription sub
        while i < n:
            # One try block around the loop (entering one costs time): a callback's exception
            # leaves the inner loop, is reported, and the loop goes on with the next callback.
            try:
                while i < n:
                    sub = <Subscription>subs[i]
                    i += 1
                    if not sub.admits(bit, signal):
                        continue
                    if sub.wants_message:
                        result = sub.callback(value, address, message)
                    else:
                        result = sub.callback(value, address)
                    if result is not None and is_awaitable(result):
                        self.spawn(result)
            except Exception as exc:
                self.report(exc)
        return 0

    def receive(self, data, Py_ssize_t start=0, Py_ssize_t max_frames=-1, *, intercept=None,
                other=None, decode_error=None):
        """Decode the frames of ``data`` (one DataChannel message) from byte offset ``start`` and
        deliver them, at most ``max_frames`` frames (-1: all). Returns ``(end, decoded, failed)``:
        the offset where the next slice starts (``len(data)`` once done), the messages decoded
        and the frames that could not be.

        Each message goes first to ``intercept(message)`` when given (a true result consumes
        it); then a SET or PUBLISH goes to the matching callbacks (as :meth:`dispatch_message`)
        and any other message, a BUNDLE included, to ``other(message)`` when given. An exception from ``intercept``
        or ``other`` goes to ``report``. A malformed frame goes to ``decode_error`` (default:
        ``report``) as a DecodeError with its offset in ``data``; the walk goes on after it,
        or ends at a broken header (nothing after it can be delimited).
        """
        cdef Input src
        cdef Py_ssize_t pos = start, done = 0, decoded = 0, failed = 0
        cdef bint decoding = False
        if max_frames == 0 or max_frames < -1:
            raise ValueError(f"max_frames must be positive or -1, got {max_frames}")
        input_open(&src, data)
        try:
            if start < 0 or start > src.length:
                raise ValueError(f"start {start} outside the buffer (length {src.length})")
            while pos < src.length and done != max_frames:
                try:
                    while pos < src.length and done != max_frames:
                        done += 1
                        decoding = True
                        message = decode_next(src.data, src.length, &pos)
                        decoding = False
                        decoded += 1
                        if intercept is not None and intercept(message):
                            continue
                        if not self.dispatch_message(message) and other is not None:
                            other(message)
                except Exception as exc:
                    if not decoding:
                        self.report(exc)
                    else:
                        decoding = False
                        failed += 1
                        if decode_error is not None and isinstance(exc, DecodeError):
                            decode_error(exc)
                        else:
                            self.report(exc)
        finally:
            input_close(&src)
        return pos, decoded, failed

    def __repr__(self):
        return f"<CallbackRegistry {len(self._subscriptions)} subscriptions>"

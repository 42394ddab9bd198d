"""Busy polling: an event loop that keeps polling instead of sleeping while a connection has traffic.

An event loop with nothing to run sleeps in ``epoll_wait``; the next datagram then has to wake the
process, which costs tens of µs on a virtual machine (40-90 µs on the machine of the README's
figures) before any of the receive path runs. While a :class:`BusyPoll` spins, the loop always has
a callback ready, so its selector is asked with a time-out of zero and sees a datagram as soon as
the kernel has it. The price is one core at 100 % while traffic flows; the spinning ends ``window``
seconds after the last activity and starts again with the next.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Callable

__all__ = ["BusyPoll", "NoBusyPoll", "NO_BUSY_POLL", "busy_poll_for"]


class BusyPoll:
    """Keeps ``loop`` polling for ``window`` seconds after the last :meth:`touch`."""

    __slots__ = ("loop", "window", "active", "spinning", "spins", "_until", "_handle", "_closed")

    def __init__(self, loop: asyncio.AbstractEventLoop, window: float) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"busy poll window must be a positive number of seconds, got {window!r}")
        self.loop = loop
        self.window = window
        self.active = False
        self.spinning = False
        self.spins = 0  # loop iterations spent polling, in all
        self._until = 0.0
        self._handle: asyncio.Handle | None = None
        self._closed = False

    def touch(self) -> None:
        """Something was sent or received: poll for the next ``window`` seconds."""
        self.active = True
        if not self.spinning and not self._closed:
            self.spinning = True
            self._handle = self.loop.call_soon(self._spin)

    def stop(self) -> None:
        """Stop polling for good (the connection closed)."""
        self._closed = True
        self.spinning = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _spin(self, _now: Callable[[], float] = time.monotonic) -> None:
        now = _now()
        if self.active:
            self.active = False
            self._until = now + self.window
        elif now >= self._until:
            self.spinning = False
            self._handle = None
            return
        self.spins += 1
        self._handle = self.loop.call_soon(self._spin)


class NoBusyPoll:
    """The stand-in when busy polling is off: never spins."""

    __slots__ = ()
    spinning = False
    spins = 0

    def touch(self) -> None:
        pass

    def stop(self) -> None:
        pass


NO_BUSY_POLL = NoBusyPoll()


def busy_poll_for(loop: asyncio.AbstractEventLoop, window: float) -> BusyPoll | NoBusyPoll:
    """A :class:`BusyPoll` of ``window`` seconds on ``loop``, or the stand-in for 0 (off)."""
    return BusyPoll(loop, window) if window else NO_BUSY_POLL

"""The outgoing frames of one relay connection, one FIFO lane per sending session, served round-robin.

A connection receives frames from many senders: its own replies (ACK, ERROR, PONG, SNAPSHOT)
and the fan-out of every session it subscribes to. With a single FIFO, one session that
publishes faster than subscribers read fills every subscriber's queue, and a well-behaved
sender's message waits behind all of it. Here each sender has its own lane and the writer
takes one item from each lane in turn, so a message waits behind at most one frame per other
busy sender.

Rules:

* frames of one lane leave in order (so one sender's messages stay in order, and the
  connection's own replies stay in request order);
* *state frames* (SET echoes, GET replies) carry their address: one is sent only when every
  older state frame for the same address, in any lane, has been sent — so the last value a
  client receives for a param is the relay's latest;
* a *stream* (an iterator of frames, e.g. a large SNAPSHOT) is one item that yields its
  next frame each time it is served, so it is produced only as fast as the socket drains;
* fan-out frames are admitted while fewer than ``limit`` items are queued; when full, the
  longest other sender lane gives up its newest frame for a sender with a shorter lane,
  otherwise the new frame is dropped. The owner's lane is never cut.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

__all__ = ["FairQueue", "OWN"]

OWN = ""  # the lane of the connection's own replies (session ids are never empty)


class _StateFrame:
    __slots__ = ("frame", "address", "seq")

    def __init__(self, frame: bytes, address: str, seq: int) -> None:
        self.frame = frame
        self.address = address
        self.seq = seq


class FairQueue:
    """Per-sender lanes of outgoing frames; :meth:`pop` serves them round-robin."""

    __slots__ = ("limit", "_lanes", "_ready", "_size", "_state", "_seq")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lanes: dict[str, deque] = {}
        self._ready: deque[str] = deque()  # lanes holding items, in serving order
        self._size = 0  # items queued (a stream counts as one)
        self._state: dict[str, deque[int]] = {}  # address -> sequence numbers of its queued state frames
        self._seq = 0

    def __len__(self) -> int:
        return self._size

    def backlog(self, lane: str = OWN) -> int:
        """Items queued in one lane."""
        lane_items = self._lanes.get(lane)
        return len(lane_items) if lane_items is not None else 0

    def put(self, lane: str, frame: bytes, address: str | None = None) -> None:
        """Queue a frame unconditionally; ``address`` makes it a state frame for that address."""
        if address is not None:
            self._seq += 1
            pending = self._state.get(address)
            if pending is None:
                pending = self._state[address] = deque()
            pending.append(self._seq)
            self._append(lane, _StateFrame(frame, address, self._seq))
        else:
            self._append(lane, frame)

    def put_stream(self, lane: str, frames: Iterator[bytes]) -> None:
        """Queue a stream of frames, produced one at a time as the lane is served."""
        self._append(lane, frames)

    def offer(self, lane: str, frame: bytes, address: str | None = None) -> bool:
        """Queue a fan-out frame within ``limit``; False when a frame was dropped (this one or,
        to make room for it, the newest frame of a longer lane)."""
        if self._size < self.limit:
            self.put(lane, frame, address)
            return True
        if self._cut_longest(lane):
            self.put(lane, frame, address)
        return False

    def pop(self) -> bytes | None:
        """The next frame to send, or None when nothing can be sent."""
        ready = self._ready
        lanes = self._lanes
        blocked = 0
        while blocked < len(ready):
            lane = ready.popleft()
            items = lanes[lane]
            item = items[0]
            kind = type(item)
            if kind is bytes:
                frame = item
            elif kind is _StateFrame:
                pending = self._state[item.address]
                if pending[0] != item.seq:  # an older frame for this address waits in another lane
                    ready.append(lane)
                    blocked += 1
                    continue
                pending.popleft()
                if not pending:
                    del self._state[item.address]
                frame = item.frame
            else:
                frame = next(item, None)
                if frame is not None:
                    ready.append(lane)  # the stream stays at the head of its lane
                    return frame
            items.popleft()
            self._size -= 1
            if items:
                if frame is None:
                    ready.appendleft(lane)  # a finished stream sent nothing: the lane keeps its turn
                else:
                    ready.append(lane)
            else:
                del lanes[lane]
            if frame is not None:
                return frame
            blocked = 0
        return None

    def clear(self) -> None:
        self._lanes.clear()
        self._ready.clear()
        self._state.clear()
        self._size = 0

    def _append(self, lane: str, item: object) -> None:
        items = self._lanes.get(lane)
        if items is None:
            items = self._lanes[lane] = deque()
            self._ready.append(lane)
        items.append(item)
        self._size += 1

    def _cut_longest(self, lane: str) -> bool:
        """Drop the newest frame of the longest lane other than ``lane`` and the owner's, if it
        is longer than ``lane`` by more than one; return whether one was dropped."""
        longest = self.backlog(lane) + 1
        victim = None
        for key, items in self._lanes.items():
            if key != lane and key != OWN and len(items) > longest:
                longest, victim = len(items), key
        if victim is None:
            return False
        items = self._lanes[victim]
        item = items.pop()
        self._size -= 1
        if type(item) is _StateFrame:
            pending = self._state[item.address]
            pending.remove(item.seq)
            if not pending:
                del self._state[item.address]
        return True

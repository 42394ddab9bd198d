"""Exactly once across failover between hybrid clients (feature ``"seq2"``; docs/hybrid.md).

On each P2P connection the sender first declares a random 128-bit *epoch handle* and a 128-bit
key, then numbers its reliable messages (one-message BUNDLEs whose timestamp is the number). The
receiver acknowledges them cumulatively (an ACK whose ``revision`` is the highest number received
without a gap). When the link is lost or suspect, what was not acknowledged is re-sent through the
relay as a PUBLISH whose ``id`` is :data:`ENVELOPE_ID`, ``timestamp`` the number and value the map
``{"v": value, "h": handle, "t": tag}``, where the 128-bit tag (HMAC-SHA256 with the key over handle,
number and address) proves it comes from the session that declared the handle over the P2P link.
The receiver drops numbers it has delivered and envelopes whose tag does not verify. Messages
that never went over P2P travel through the relay unnumbered (a PUBLISH with ``id``
:data:`ENVELOPE_ID` and no timestamp).

This module is the bookkeeping: the sender's numbering and what awaits acknowledgement
(:class:`SendLedger`), the receiver's epochs, duplicate tracking and envelope checks
(:class:`ReceiveLedger`); everything bounded. Routing and failover use it (:mod:`.routing`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from typing import Any, Hashable

from ..errors import ProtocolError
from ..wire.messages import MISSING, Publish, Set

__all__ = [
    "DUPLICATE",
    "ENVELOPE_ID",
    "EPOCH_ADDRESS",
    "SEQ_FEATURE",
    "Dedupe",
    "InEpoch",
    "OutEpoch",
    "ReceiveLedger",
    "SendLedger",
    "envelope",
    "tag",
]

SEQ_FEATURE = "seq2"
# Marks a hybrid envelope: a relayed PUBLISH carrying a message, or an epoch declaration (ASCII "CLSQ").
ENVELOPE_ID = 0x434C5351
# Address of the epoch declaration a sender makes first on each P2P connection (never relayed).
EPOCH_ADDRESS = "/clasp/hybrid/epoch"
HANDLE_SIZE = 16  # bytes of an epoch handle, of its key and of a relay envelope's tag
MAX_AHEAD = 4096  # numbers received ahead of a gap, per epoch; beyond it the gap is given up
MAX_EPOCHS = 64  # epochs of other senders remembered (LRU); each holds at most MAX_AHEAD numbers
MAX_UNVERIFIED = 4096  # relay envelopes of unknown epochs remembered (replays are dropped)

#: What :meth:`ReceiveLedger.open` returns for a message already delivered.
DUPLICATE = object()


def tag(key: bytes, handle: bytes, seq: int, address: str) -> bytes:
    """The 128-bit proof that a relayed message ``seq`` of epoch ``handle`` comes from the key's holder."""
    data = handle + seq.to_bytes(8, "big") + address.encode()
    return hmac.new(key, data, hashlib.sha256).digest()[:HANDLE_SIZE]


class OutEpoch:
    """Numbering of our reliable messages on one P2P connection."""

    __slots__ = ("handle", "key", "seq")

    def __init__(self) -> None:
        self.handle = secrets.token_bytes(HANDLE_SIZE)
        self.key = secrets.token_bytes(HANDLE_SIZE)
        self.seq = 0

    def declaration(self) -> Publish:
        return Publish(address=EPOCH_ADDRESS, signal="event", value=self.handle + self.key, id=ENVELOPE_ID)


def envelope(message: Any, epoch: OutEpoch | None = None, seq: int | None = None) -> Publish:
    """The relay form of a reliable message: numbered (with its epoch's proof) when it went over P2P."""
    signal = "param" if type(message) is Set else message.signal
    value = message.value
    timestamp = None
    if epoch is not None and seq is not None:
        value = {"h": epoch.handle, "t": tag(epoch.key, epoch.handle, seq, message.address)}
        if message.value is not MISSING:
            value["v"] = message.value
        timestamp = seq
    return Publish(address=message.address, signal=signal, value=value, timestamp=timestamp, id=ENVELOPE_ID)


def opened(message: Publish, value: Any) -> Any:
    """The message an envelope carried, with ``value``."""
    if message.signal == "param":
        return Set(address=message.address, value=value)
    return Publish(address=message.address, signal=message.signal, value=value)


class SendLedger:
    """What we sent over one P2P connection and the peer has not acknowledged yet, by number."""

    __slots__ = ("epoch", "unacked", "progress_at")

    def __init__(self) -> None:
        self.epoch: OutEpoch | None = None  # the numbering on the connection (declared on first use)
        self.unacked: OrderedDict[int, Any] = OrderedDict()  # seq -> message, not acknowledged yet
        self.progress_at = 0.0  # when an acknowledgement last made progress (or the oldest unacked was sent)

    def number(self, message: Any) -> tuple[int, Publish | None]:
        """The next number for ``message``, and the epoch declaration to send first (None if made)."""
        declaration = None
        epoch = self.epoch
        if epoch is None:
            epoch = self.epoch = OutEpoch()
            declaration = epoch.declaration()
        epoch.seq += 1
        if not self.unacked:
            self.progress_at = time.monotonic()
        self.unacked[epoch.seq] = message
        return epoch.seq, declaration

    def acknowledge(self, upto: int) -> None:
        """The peer has every number up to ``upto``."""
        unacked = self.unacked
        progress = False
        while unacked:
            seq = next(iter(unacked))
            if seq > upto:
                break
            del unacked[seq]
            progress = True
        if progress:
            self.progress_at = time.monotonic()

    def stalled_for(self, now: float) -> float:
        """Seconds the oldest unacknowledged message has waited without progress (0 when none waits)."""
        return now - self.progress_at if self.unacked else 0.0

    def take(self) -> tuple[OutEpoch | None, list[tuple[int, Any]]]:
        """The epoch and every unacknowledged message; the ledger starts afresh (a new connection)."""
        epoch, pending = self.epoch, list(self.unacked.items())
        self.epoch = None
        self.unacked.clear()
        return epoch, pending


class Dedupe:
    """Receive-side record of the sequence numbers delivered in one epoch: a watermark and the
    numbers above it, at most ``MAX_AHEAD``."""

    __slots__ = ("next", "ahead")

    def __init__(self) -> None:
        self.next = 1  # every seq below has been delivered
        self.ahead: set[int] = set()

    def first_time(self, seq: int) -> bool:
        if seq < self.next or seq in self.ahead:
            return False
        if seq == self.next:
            self.next += 1
            while self.next in self.ahead:
                self.ahead.discard(self.next)
                self.next += 1
        else:
            self.ahead.add(seq)
            if len(self.ahead) > MAX_AHEAD:  # a gap that will never fill: give up on it
                self.next = min(self.ahead)
                while self.next in self.ahead:
                    self.ahead.discard(self.next)
                    self.next += 1
        return True


class InEpoch:
    """Another sender's numbering on one P2P connection, as it declared it to us."""

    __slots__ = ("handle", "key", "session_id", "dedupe")

    def __init__(self, handle: bytes, key: bytes, session_id: str) -> None:
        self.handle = handle
        self.key = key
        self.session_id = session_id
        self.dedupe = Dedupe()

    def verify(self, seq: int, address: str, proof: bytes) -> bool:
        return hmac.compare_digest(tag(self.key, self.handle, seq, address), proof)


class ReceiveLedger:
    """The epochs other senders declared to us (by connection and by handle, the newest
    :data:`MAX_EPOCHS`), and relay envelopes of epochs not declared yet (replays dropped)."""

    def __init__(self) -> None:
        self._inbound: dict[Hashable, InEpoch] = {}  # the epoch each open connection declared to us
        self._epochs: OrderedDict[bytes, InEpoch] = OrderedDict()  # by handle, least recently used first
        self._unverified: OrderedDict[tuple[bytes, int, bytes], str] = OrderedDict()  # (handle, seq, tag) -> address

    @property
    def epochs(self) -> int:
        return len(self._epochs)

    @property
    def unverified(self) -> int:
        return len(self._unverified)

    def declare(self, connection: Hashable, session_id: str, value: Any) -> InEpoch:
        """A peer's epoch declaration on ``connection``; ProtocolError when it is malformed or reused."""
        if not isinstance(value, bytes) or len(value) != 2 * HANDLE_SIZE:
            raise ProtocolError(f"epoch declaration from peer {session_id}: value must be "
                                f"{2 * HANDLE_SIZE} bytes, got {type(value).__name__}")
        handle, key = value[:HANDLE_SIZE], value[HANDLE_SIZE:]
        if handle in self._epochs:
            raise ProtocolError(f"epoch declaration from peer {session_id}: handle already in use")
        epoch = self._inbound[connection] = self._epochs[handle] = InEpoch(handle, key, session_id)
        while len(self._epochs) > MAX_EPOCHS:
            self._epochs.popitem(last=False)
        for seen in [k for k in self._unverified if k[0] == handle]:
            address = self._unverified.pop(seen)
            if epoch.verify(seen[1], address, seen[2]):
                epoch.dedupe.first_time(seen[1])  # delivered already through the relay
        return epoch

    def epoch_of(self, connection: Hashable) -> InEpoch | None:
        """The epoch ``connection`` declared, if it did."""
        return self._inbound.get(connection)

    def forget(self, connection: Hashable) -> None:
        """``connection`` has closed: nothing more arrives on it."""
        self._inbound.pop(connection, None)

    def open(self, address: str, seq: int, fields: Any) -> Any:
        """The value a numbered relay envelope carries, or :data:`DUPLICATE` when it was delivered
        already; ProtocolError for an envelope that is malformed or whose tag does not verify."""
        handle = fields.get("h") if isinstance(fields, dict) else None
        proof = fields.get("t") if isinstance(fields, dict) else None
        if not (isinstance(handle, bytes) and len(handle) == HANDLE_SIZE
                and isinstance(proof, bytes) and len(proof) == HANDLE_SIZE):
            raise ProtocolError(f"relay envelope for {address}: value must be a map with 16-byte 'h' and 't', got "
                                f"{type(fields).__name__}", address=address)
        epoch = self._epochs.get(handle)
        if epoch is None:
            # An epoch whose declaration has not arrived (or was forgotten): deliver, drop replays,
            # and let a later declaration recognise it.
            key = (handle, seq, proof)
            if key in self._unverified:
                return DUPLICATE
            self._unverified[key] = address
            if len(self._unverified) > MAX_UNVERIFIED:
                self._unverified.popitem(last=False)
        else:
            if not epoch.verify(seq, address, proof):
                raise ProtocolError(f"relay envelope for {address}: message {seq} claims the P2P link of session "
                                    f"{epoch.session_id} but its tag does not verify", address=address)
            self._epochs.move_to_end(handle)
            if not epoch.dedupe.first_time(seq):
                return DUPLICATE
        return fields.get("v", MISSING)

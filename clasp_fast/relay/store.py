"""What the relay keeps: params (revision, lock, TTL) and announced signals, within one byte budget.

Every stored param is counted with the bytes it takes in a SNAPSHOT frame; every announced
signal with the bytes it takes in a RESULT. A write that would take the total over
``max_bytes`` (or add a param beyond ``max_params``, or a signal beyond the registry's
limits) is refused with a :class:`StoreRefused` carrying the ERROR code and text; replacing
a param by a value that is not larger is always possible.

SNAPSHOTs are produced lazily (:meth:`ParamStore.snapshot_frames`): a frame is built from
the store as it is when the frame is about to be sent, so a large snapshot costs one frame of
memory at a time and never shows a value older than an echo sent before it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Iterable, Iterator

from ..wire.address import glob_match
from ..wire.codec import encode
from ..errors import EncodeError
from ..wire.messages import Param, Result, Set, SignalInfo, Snapshot, Ttl
from ..wire.protocol import MAX_PAYLOAD, now_us

__all__ = ["ParamStore", "SignalRegistry", "StoreRefused", "MAX_PARAM_BYTES"]

SNAPSHOT_CHUNK = 800  # params per SNAPSHOT frame at most (as the reference)
_SNAPSHOT_HEADER = len(encode(Snapshot(params=[])))  # frame header + type + count
_RESULT_HEADER = len(encode(Result(signals=[])))
_TTL_BYTES = len(encode(Set(address="/a", value=1, ttl=Ttl.never()))) - len(encode(Set(address="/a", value=1)))
# A param inside a SNAPSHOT takes its SET echo's bytes (without TTL) plus this: a type byte,
# the writer (a 36-character session id), the timestamp and the option byte, minus the SET's
# frame header and flags.
_PARAM_EXTRA = (len(encode(Snapshot(params=[Param(address="/a", value=1, revision=1, writer="0" * 36,
                                                    timestamp=1)]))) - _SNAPSHOT_HEADER
                - len(encode(Set(address="/a", value=1, revision=1))))
MAX_PARAM_BYTES = MAX_PAYLOAD - (_SNAPSHOT_HEADER - 4)  # one param must fit one SNAPSHOT frame


class StoreRefused(Exception):
    """A write the store does not accept; ``code`` and ``text`` are the ERROR to answer."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class ParamState:
    __slots__ = ("value", "revision", "writer", "timestamp", "holder", "ttl", "expires_at", "size")

    def __init__(self) -> None:
        self.value: object = None
        self.revision = 0
        self.writer: str | None = None
        self.timestamp = 0
        self.holder: str | None = None
        self.ttl: Ttl | None = None
        self.expires_at: float | None = None
        self.size = 0  # bytes inside a SNAPSHOT

    def param(self, address: str) -> Param:
        return Param(address=address, value=self.value, revision=self.revision, writer=self.writer,
                     timestamp=self.timestamp)


class ParamStore:
    """Params by address, with revisions, locks, TTL expiry and the byte budget."""

    def __init__(
        self,
        *,
        max_params: int,
        max_bytes: int,
        default_ttl: int,
        clock: Callable[[], float] = time.monotonic,
        on_remove: Callable[[str], None] | None = None,
    ) -> None:
        self.max_params = max_params
        self.max_bytes = max_bytes
        self.default_ttl = default_ttl
        self.used = 0  # bytes of params and announced signals
        self._clock = clock
        self._on_remove = on_remove
        self._params: OrderedDict[str, ParamState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._params)

    def __contains__(self, address: str) -> bool:
        return address in self._params

    def get(self, address: str) -> ParamState | None:
        """The live state of ``address`` (an expired param is removed instead)."""
        state = self._params.get(address)
        if state is not None and state.expires_at is not None and state.expires_at <= self._clock():
            self.remove(address)
            return None
        return state

    def write(self, writer: str, message: Set) -> tuple[int, bytes]:
        """Apply a SET by session ``writer``; return the new revision and the encoded echo.

        Raises ``StoreRefused``: 400 (lock held, revision conflict; texts as the reference),
        402 (too large to be served in a SNAPSHOT), 507 (store full).
        """
        address = message.address
        state = self.get(address)
        if state is not None:
            if state.holder is not None and state.holder != writer and not message.unlock:
                raise StoreRefused(400, f'LockHeld {{ holder: "{state.holder}" }}')
            if message.revision is not None and message.revision != state.revision:
                raise StoreRefused(400, f"RevisionConflict {{ expected: {message.revision}, "
                                        f"actual: {state.revision} }}")
        revision = 1 if state is None else state.revision + 1
        echo = Set(address=address, value=message.value, revision=revision, lock=message.lock,
                   unlock=message.unlock, ttl=message.ttl)
        try:
            frame = encode(echo)
        except EncodeError as exc:
            raise StoreRefused(402, f"value too large to store: {exc}") from None
        size = len(frame) + _PARAM_EXTRA - (_TTL_BYTES if message.ttl is not None else 0)
        if size > MAX_PARAM_BYTES:
            raise StoreRefused(402, f"value too large to store: the param would take {size} bytes in a "
                                    f"SNAPSHOT, more than the {MAX_PARAM_BYTES} one frame holds")
        old = 0 if state is None else state.size
        if state is None and len(self._params) >= self.max_params:
            raise StoreRefused(507, f"Store full: {self.max_params} params stored (max_params); a new "
                                    "address is refused until params expire")
        if size > old and self.used + size - old > self.max_bytes:
            raise StoreRefused(507, f"Store full: storing {size} bytes would take the relay over its "
                                    f"{self.max_bytes}-byte limit (max_store_bytes, {self.used} used)")
        if state is None:
            state = self._params[address] = ParamState()
        else:
            self._params.move_to_end(address)
        self.used += size - old
        state.size = size
        state.value = message.value
        state.revision = revision
        state.writer = writer
        state.timestamp = now_us()
        if message.lock:
            state.holder = writer
        elif message.unlock and state.holder == writer:
            state.holder = None
        if message.ttl is not None:
            state.ttl = message.ttl
        if state.ttl is None:
            state.expires_at = self._clock() + self.default_ttl
        elif state.ttl.secs is None:  # Ttl.never(): secs is None exactly then
            state.expires_at = None
        else:
            state.expires_at = self._clock() + state.ttl.secs
        return revision, frame

    def remove(self, address: str) -> ParamState | None:
        state = self._params.pop(address, None)
        if state is not None:
            self.used -= state.size
            if self._on_remove is not None:
                self._on_remove(address)
        return state

    def expire(self) -> int:
        """Remove every expired param; return how many went."""
        now = self._clock()
        expired = [a for a, s in self._params.items() if s.expires_at is not None and s.expires_at <= now]
        for address in expired:
            self.remove(address)
        return len(expired)

    def addresses(self, pattern: str | None = None) -> list[str]:
        """Stored addresses (all, or those ``glob_match``ing ``pattern``), oldest write first."""
        if pattern is None:
            return list(self._params)
        return [a for a in self._params if glob_match(pattern, a)]

    def snapshot_frames(self, addresses: Iterable[str], readable: Callable[[str], bool] | None,
                        always: bool) -> Iterator[bytes]:
        """SNAPSHOT frames of the live params among ``addresses`` that ``readable`` admits, each
        built when it is asked for; with ``always``, one empty SNAPSHOT if nothing is left."""
        params: list[Param] = []
        size = _SNAPSHOT_HEADER
        sent = False
        for address in addresses:
            state = self._readable(address, readable)
            if state is None:
                continue
            if params and (size + state.size > MAX_PAYLOAD + 4 or len(params) == SNAPSHOT_CHUNK):
                yield from _encode_snapshot(params)
                sent = True
                params, size = [], _SNAPSHOT_HEADER
                state = self._readable(address, readable)  # the store may have changed meanwhile
                if state is None:
                    continue
            params.append(state.param(address))
            size += state.size
        if params or (always and not sent):
            yield from _encode_snapshot(params)

    def _readable(self, address: str, readable: Callable[[str], bool] | None) -> ParamState | None:
        state = self.get(address)
        if state is None or (readable is not None and not readable(address)):
            return None
        return state


def _encode_snapshot(params: list[Param]) -> Iterator[bytes]:
    try:
        yield encode(Snapshot(params=params))
    except EncodeError:
        # The size estimate was off (it never is for params the store accepted): halve.
        if len(params) > 1:
            half = len(params) // 2
            yield from _encode_snapshot(params[:half])
            yield from _encode_snapshot(params[half:])


def signal_size(signal: SignalInfo) -> int:
    """Bytes one signal takes in a RESULT."""
    return len(encode(Result(signals=[signal]))) - _RESULT_HEADER


class SignalRegistry:
    """Announced signals (ANNOUNCE, listed by QUERY), each owned by the session that announced it
    last; a session's signals go when it disconnects."""

    def __init__(self, store: ParamStore, *, max_signals: int, per_session: int) -> None:
        self._store = store  # holds the byte budget
        self.max_signals = max_signals
        self.per_session = per_session
        self._signals: dict[str, tuple[SignalInfo, str, int]] = {}  # address -> (info, owner, size)
        self._owned: dict[str, set[str]] = {}  # session id -> addresses

    def __len__(self) -> int:
        return len(self._signals)

    def owned(self, session_id: str) -> int:
        return len(self._owned.get(session_id, ()))

    def announce(self, owner: str, signals: Iterable[SignalInfo]) -> None:
        """Register ``signals`` for session ``owner``, all or none; ``StoreRefused`` (429: the
        session's limit, 507: registry or store full) otherwise."""
        entries = {}
        for s in signals:
            info = SignalInfo(address=s.address, signal_type=s.signal_type, datatype=s.datatype, access=s.access)
            entries[s.address] = (info, signal_size(info))
        mine = self._owned.get(owner, set())
        added = sum(1 for a in entries if a not in mine)
        if len(mine) + added > self.per_session:
            raise StoreRefused(429, f"Signal limit reached: {self.per_session} announced signals per session")
        new = sum(1 for a in entries if a not in self._signals)
        if len(self._signals) + new > self.max_signals:
            raise StoreRefused(507, f"Signal registry full: {self.max_signals} signals announced (max_signals)")
        growth = sum(size - self._signals[a][2] if a in self._signals else size for a, (_, size) in entries.items())
        store = self._store
        if growth > 0 and store.used + growth > store.max_bytes:
            raise StoreRefused(507, f"Store full: the announced signals would take the relay over its "
                                    f"{store.max_bytes}-byte limit (max_store_bytes, {store.used} used)")
        for address, (info, size) in entries.items():
            self._remove(address)
            self._signals[address] = (info, owner, size)
            self._owned.setdefault(owner, set()).add(address)
            store.used += size

    def query(self, pattern: str, readable: Callable[[str], bool] | None) -> tuple[list[SignalInfo], int]:
        """The signals matching ``pattern`` that ``readable`` admits and fit one RESULT frame, and
        how many matched in all."""
        found: list[SignalInfo] = []
        size = _RESULT_HEADER
        matched = 0
        for address, (info, _, bytes_) in self._signals.items():
            if not glob_match(pattern, address) or (readable is not None and not readable(address)):
                continue
            matched += 1
            if size + bytes_ <= MAX_PAYLOAD + 4:
                found.append(info)
                size += bytes_
        return found, matched

    def drop_session(self, session_id: str) -> None:
        for address in list(self._owned.get(session_id, ())):
            self._remove(address)

    def _remove(self, address: str) -> None:
        entry = self._signals.pop(address, None)
        if entry is None:
            return
        _, owner, size = entry
        self._store.used -= size
        owned = self._owned.get(owner)
        if owned is not None:
            owned.discard(address)
            if not owned:
                del self._owned[owner]

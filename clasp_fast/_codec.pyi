# Types of the compiled codec (_ext/codec.pyx). Checked against the built module by
# tests/test_stubs.py (mypy.stubtest).

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, overload

from _typeshed import ReadableBuffer
from typing_extensions import disjoint_base

from .errors import DecodeError

# ---------------------------------------------------------------------------------------------
# Constants

MAX_NESTING: Final[int]
SIGNAL_TYPES: Final[tuple[str, ...]]
PHASES: Final[tuple[str, ...]]
FEATURES: Final[tuple[str, ...]]
DEFAULT_FEATURES: Final[tuple[str, ...]]

QOS_FIRE: Final[int]
QOS_CONFIRM: Final[int]
QOS_COMMIT: Final[int]

MSG_HELLO: Final[int]
MSG_WELCOME: Final[int]
MSG_ANNOUNCE: Final[int]
MSG_FEDERATION_SYNC: Final[int]
MSG_SUBSCRIBE: Final[int]
MSG_UNSUBSCRIBE: Final[int]
MSG_PUBLISH: Final[int]
MSG_SET: Final[int]
MSG_GET: Final[int]
MSG_SNAPSHOT: Final[int]
MSG_REPLAY: Final[int]
MSG_BUNDLE: Final[int]
MSG_SYNC: Final[int]
MSG_PING: Final[int]
MSG_PONG: Final[int]
MSG_ACK: Final[int]
MSG_ERROR: Final[int]
MSG_QUERY: Final[int]
MSG_RESULT: Final[int]

FEDERATION_OPS: Final[dict[int, str]]
MESSAGE_CLASSES: Final[dict[int, type[Message]]]

class _Missing:
    def __bool__(self) -> Literal[False]: ...
    def __reduce__(self) -> str: ...

MISSING: Final[_Missing]

# ---------------------------------------------------------------------------------------------
# Messages and their parts. A CLASP value (``value``, ``default``) is None, bool, int, float,
# str, bytes, or a list / str-keyed dict of values: typed Any.

class _Record:
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]: ...

class Message(_Record):
    TYPE: ClassVar[int]

@disjoint_base
class Ttl:
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __init__(self, mode: str, secs: int | None = None) -> None: ...
    @property
    def mode(self) -> str: ...
    @property
    def secs(self) -> int | None: ...
    @property
    def raw(self) -> int: ...
    @staticmethod
    def never() -> Ttl: ...
    @staticmethod
    def sliding(secs: int) -> Ttl: ...
    @staticmethod
    def absolute(secs: int) -> Ttl: ...
    @staticmethod
    def from_raw(raw: int) -> Ttl: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __reduce__(self) -> tuple[type[Ttl], tuple[str, int | None]]: ...

@disjoint_base
class SignalMeta(_Record):
    unit: str | None
    range: tuple[float, float] | None
    default: Any
    description: str | None
    def __init__(self, unit: str | None = None, range: Iterable[float] | None = None,
                 default: Any = ..., description: str | None = None) -> None: ...

@disjoint_base
class SignalInfo(_Record):
    address: str
    signal_type: str
    datatype: str | None
    access: str | None
    meta: SignalMeta | None
    def __init__(self, address: str, signal_type: str, datatype: str | None = None,
                 access: str | None = None, meta: SignalMeta | None = None) -> None: ...

@disjoint_base
class SubscribeOptions(_Record):
    max_rate: int | None
    epsilon: float | None
    history: int | None
    window: int | None
    def __init__(self, max_rate: int | None = None, epsilon: float | None = None,
                 history: int | None = None, window: int | None = None) -> None: ...

@disjoint_base
class Param(_Record):
    address: str
    value: Any
    revision: int
    writer: str | None
    timestamp: int | None
    def __init__(self, address: str, value: Any, revision: int, writer: str | None = None,
                 timestamp: int | None = None) -> None: ...

@disjoint_base
class Hello(Message):
    name: str
    features: list[str]
    version: int
    token: str | None
    def __init__(self, name: str, features: Iterable[str] = ..., version: int = 1,
                 token: str | None = None) -> None: ...

@disjoint_base
class Welcome(Message):
    session: str
    name: str
    features: list[str]
    time: int
    version: int
    token: str | None
    def __init__(self, session: str, name: str, features: Iterable[str], time: int,
                 version: int = 1, token: str | None = None) -> None: ...

@disjoint_base
class Announce(Message):
    namespace: str
    signals: list[SignalInfo]
    def __init__(self, namespace: str, signals: Iterable[SignalInfo] = ()) -> None: ...

@disjoint_base
class FederationSync(Message):
    op: int
    patterns: list[str]
    revisions: dict[str, int]
    since_revision: int | None
    origin: str | None
    def __init__(self, op: int, patterns: Iterable[str] = (), revisions: Mapping[str, int] | None = None,
                 since_revision: int | None = None, origin: str | None = None) -> None: ...

@disjoint_base
class Subscribe(Message):
    id: int
    pattern: str
    types: list[str]
    options: SubscribeOptions | None
    def __init__(self, id: int, pattern: str, types: Iterable[str] = (),
                 options: SubscribeOptions | None = None) -> None: ...

@disjoint_base
class Unsubscribe(Message):
    id: int
    def __init__(self, id: int) -> None: ...

@disjoint_base
class Publish(Message):
    address: str
    signal: str | None
    value: Any
    # Decoded: a 1-D float64 numpy array; to encode: any sequence of floats.
    samples: Any
    timestamp: int | None
    id: int | None
    phase: str | None
    rate: int | None
    def __init__(self, address: str, signal: str | None = None, value: Any = ...,
                 samples: Sequence[float] | Any | None = None, timestamp: int | None = None,
                 id: int | None = None, phase: str | None = None, rate: int | None = None) -> None: ...

@disjoint_base
class Set(Message):
    address: str
    value: Any
    revision: int | None
    lock: bool
    unlock: bool
    ttl: Ttl | None
    def __init__(self, address: str, value: Any, revision: int | None = None, lock: bool = False,
                 unlock: bool = False, ttl: Ttl | None = None) -> None: ...

@disjoint_base
class Get(Message):
    address: str
    def __init__(self, address: str) -> None: ...

@disjoint_base
class Snapshot(Message):
    params: list[Param]
    def __init__(self, params: Iterable[Param] = ()) -> None: ...

@disjoint_base
class Replay(Message):
    pattern: str
    from_: int | None
    to: int | None
    limit: int | None
    types: list[str]
    def __init__(self, pattern: str, from_: int | None = None, to: int | None = None,
                 limit: int | None = None, types: Iterable[str] = ()) -> None: ...

@disjoint_base
class Bundle(Message):
    messages: list[Message]
    timestamp: int | None
    def __init__(self, messages: Iterable[Message], timestamp: int | None = None) -> None: ...

@disjoint_base
class Sync(Message):
    t1: int
    t2: int | None
    t3: int | None
    def __init__(self, t1: int, t2: int | None = None, t3: int | None = None) -> None: ...

class Ping(Message): ...
class Pong(Message): ...

@disjoint_base
class Ack(Message):
    address: str | None
    revision: int | None
    locked: bool | None
    holder: str | None
    correlation_id: int | None
    def __init__(self, address: str | None = None, revision: int | None = None,
                 locked: bool | None = None, holder: str | None = None,
                 correlation_id: int | None = None) -> None: ...

@disjoint_base
class Error(Message):
    code: int
    message: str
    address: str | None
    correlation_id: int | None
    def __init__(self, code: int, message: str, address: str | None = None,
                 correlation_id: int | None = None) -> None: ...

@disjoint_base
class Query(Message):
    pattern: str
    def __init__(self, pattern: str) -> None: ...

@disjoint_base
class Result(Message):
    signals: list[SignalInfo]
    def __init__(self, signals: Iterable[SignalInfo] = ()) -> None: ...

def default_qos(message: Message) -> int: ...
def values_equal(a: object, b: object) -> bool: ...

# ---------------------------------------------------------------------------------------------
# Frames

@disjoint_base
class Frame:
    @property
    def message(self) -> Message: ...
    @property
    def qos(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def version(self) -> int: ...
    @property
    def encrypted(self) -> bool: ...
    @property
    def compressed(self) -> bool: ...
    @property
    def size(self) -> int: ...

def encode(message: Message, *, qos: int | None = None, timestamp: int | None = None) -> bytes: ...
def decode(data: ReadableBuffer) -> Message: ...
def decode_frame(data: ReadableBuffer) -> Frame: ...
def frame_size(data: ReadableBuffer, offset: int = 0) -> int | None: ...
@overload
def decode_all(data: ReadableBuffer, errors: Literal["raise"] = "raise") -> list[Message]: ...
@overload
def decode_all(data: ReadableBuffer, errors: Literal["collect"]) -> tuple[list[Message], list[DecodeError]]: ...
def iter_frames(data: ReadableBuffer) -> Iterator[Frame]: ...
def decode_slice(data: ReadableBuffer, start: int = 0,
                 max_frames: int = -1) -> tuple[list[Message], list[DecodeError], int]: ...
def frame_count(data: ReadableBuffer) -> int: ...

@disjoint_base
class WriteBuffer:
    def append(self, message: Message, *, qos: int | None = None, timestamp: int | None = None) -> int: ...
    def getvalue(self) -> bytes: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...

@disjoint_base
class Batcher:
    def __init__(self, limit: int = 0) -> None: ...
    @property
    def limit(self) -> int: ...
    @property
    def pending_frames(self) -> int: ...
    @property
    def pending_size(self) -> int: ...
    @property
    def full(self) -> bool: ...
    def add_message(self, message: Message, qos: int = -1, timestamp: int | None = None) -> bytes | None: ...
    def add_frame(self, frame: ReadableBuffer) -> bytes | None: ...
    def set_high_water_mark(self, held_by: object, held_attribute: str, high_water_mark: int) -> None: ...
    def has_room(self) -> bool: ...
    def add_item(self, item: Any, qos: int = -1, flush_scheduled: bool = False) -> bool: ...
    def take_left(self) -> bytes | None: ...
    @property
    def stopped_at(self) -> int: ...
    def add_many(self, items: list[Any], start: int, qos: int, ready: list[bytes]) -> int: ...
    def take(self) -> bytes | None: ...

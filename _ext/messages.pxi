# The CLASP message classes (docs/protocol.md §6) and their small helper types.
#
# Each message is a cdef class with public attributes so the decoder can fill it at C level
# (`Cls.__new__(Cls)` plus field assignment, no Python __init__). The attributes are declared
# in clasp_fast._codec.pxd, where other compiled modules read them too. Equality and repr are
# generic, driven by each class's `_FIELDS` table of (name, default).

import math



cdef class _Missing:
    """Type of `MISSING`: "no value at all", as opposed to `None` (an explicit null)."""

    def __repr__(self):
        return "MISSING"

    def __bool__(self):
        return False

    def __reduce__(self):
        return "MISSING"


MISSING = _Missing()
cdef object _MISSING = MISSING

_REQUIRED = object()

SIGNAL_TYPES = ("param", "event", "stream", "gesture", "timeline")
PHASES = ("start", "move", "end", "cancel")
FEATURES = ("param", "event", "stream", "gesture", "timeline", "federation")
# What a HELLO announces unless told otherwise: every signal feature. "federation" is left out
# on purpose: it marks the session as a router-to-router peer (docs/protocol.md §8.1).
DEFAULT_FEATURES = ("param", "event", "stream", "gesture", "timeline")

QOS_FIRE = 0
QOS_CONFIRM = 1
QOS_COMMIT = 2

MSG_HELLO = 0x01
MSG_WELCOME = 0x02
MSG_ANNOUNCE = 0x03
MSG_FEDERATION_SYNC = 0x04
MSG_SUBSCRIBE = 0x10
MSG_UNSUBSCRIBE = 0x11
MSG_PUBLISH = 0x20
MSG_SET = 0x21
MSG_GET = 0x22
MSG_SNAPSHOT = 0x23
MSG_REPLAY = 0x24
MSG_BUNDLE = 0x30
MSG_SYNC = 0x40
MSG_PING = 0x41
MSG_PONG = 0x42
MSG_ACK = 0x50
MSG_ERROR = 0x51
MSG_QUERY = 0x60
MSG_RESULT = 0x61

FEDERATION_OPS = {1: "DeclareNamespaces", 2: "RequestSync", 3: "RevisionVector", 4: "SyncComplete"}


def values_equal(a, b) -> bool:
    """Deep equality of CLASP values: int and float are distinct, NaN equals NaN."""
    cdef type ta = type(a)
    cdef type tb = type(b)
    if ta is float or tb is float:
        if not (isinstance(a, float) and isinstance(b, float)):
            return False
        return a == b or (a != a and b != b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return False
        return all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return False
        return all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, (bytes, bytearray, memoryview)):
        return isinstance(b, (bytes, bytearray, memoryview)) and bytes(a) == bytes(b)
    if isinstance(a, (Message, Ttl, SignalInfo, SignalMeta, SubscribeOptions, Param)):
        return a == b
    if _is_array(a) or _is_array(b):
        return _samples_equal(a, b)
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, int) or isinstance(b, int):
        return False
    return a == b


cdef bint _is_array(object x):
    return type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"


cdef bint _samples_equal(object a, object b) except -1:
    if a is None or b is None:
        return a is b
    np = _numpy()
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=True))


cdef class _Record:
    """Shared equality and repr for messages and their parts."""

    _FIELDS = ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        for name, _ in self._FIELDS:
            if not values_equal(getattr(self, name), getattr(other, name)):
                return False
        return True

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None

    def __repr__(self):
        parts = []
        for name, default in self._FIELDS:
            value = getattr(self, name)
            if default is not _REQUIRED:
                if value is default:
                    continue
                if type(value) is type(default) and values_equal(value, default):
                    continue
            if _is_array(value):
                value = value.tolist()
            parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self):
        return (type(self), tuple(getattr(self, name) for name, _ in self._FIELDS))


cdef class Message(_Record):
    """Base class of the 19 CLASP messages; `TYPE` is the wire type code."""

    TYPE = 0


# ---------------------------------------------------------------------------------------------
# Parts

cdef class Ttl:
    """Expiry of a SET: `Ttl.never()`, `Ttl.sliding(secs)` or `Ttl.absolute(secs)` (docs/protocol.md §6.8).

    Wire form (`raw`, u32): 0 = never; bit 31 set = absolute, clear = sliding; bits 30-0 = secs.
    `Ttl.sliding(0)` has the raw form 0 and therefore arrives as `Ttl.never()`.
    """

    def __init__(self, str mode, secs=None):
        if mode not in ("never", "sliding", "absolute"):
            raise ValueError(f"Ttl mode must be 'never', 'sliding' or 'absolute', not {mode!r}")
        if mode == "never":
            secs = None
        elif not isinstance(secs, int) or isinstance(secs, bool) or not 0 <= secs <= 0x7FFFFFFF:
            raise ValueError(f"Ttl secs must be an int in 0..2**31-1, not {secs!r}")
        self.mode = mode
        self.secs = secs

    @staticmethod
    def never():
        return Ttl("never")

    @staticmethod
    def sliding(secs):
        return Ttl("sliding", secs)

    @staticmethod
    def absolute(secs):
        return Ttl("absolute", secs)

    @staticmethod
    def from_raw(raw):
        """The Ttl for a raw wire u32."""
        raw = int(raw)
        if raw == 0:
            return Ttl("never")
        if raw & 0x80000000:
            return Ttl("absolute", raw & 0x7FFFFFFF)
        return Ttl("sliding", raw & 0x7FFFFFFF)

    @property
    def raw(self):
        """The u32 wire form."""
        if self.mode == "never":
            return 0
        if self.mode == "absolute":
            return 0x80000000 | self.secs
        return self.secs

    def __eq__(self, other):
        if type(other) is not Ttl:
            return NotImplemented
        return self.mode == (<Ttl>other).mode and self.secs == (<Ttl>other).secs

    __hash__ = None

    def __repr__(self):
        if self.mode == "never":
            return "Ttl.never()"
        return f"Ttl.{self.mode}({self.secs})"

    def __reduce__(self):
        return (Ttl, (self.mode, self.secs))


cdef Ttl _ttl_from_raw(uint32_t raw):
    cdef Ttl t = Ttl.__new__(Ttl)
    if raw == 0:
        t.mode = "never"
        t.secs = None
    elif raw & 0x80000000u:
        t.mode = "absolute"
        t.secs = raw & 0x7FFFFFFFu
    else:
        t.mode = "sliding"
        t.secs = raw
    return t


cdef class SignalMeta(_Record):
    """Metadata of an announced signal: unit, range (min, max), default value, description."""

    _FIELDS = (("unit", None), ("range", None), ("default", MISSING), ("description", None))

    def __init__(self, unit=None, range=None, default=MISSING, description=None):
        self.unit = unit
        self.range = tuple(range) if range is not None else None
        self.default = default
        self.description = description


cdef class SignalInfo(_Record):
    """One signal in ANNOUNCE (with `meta`) or RESULT (RESULT carries no meta on the wire)."""

    _FIELDS = (("address", _REQUIRED), ("signal_type", _REQUIRED), ("datatype", None),
               ("access", None), ("meta", None))

    def __init__(self, address, signal_type, datatype=None, access=None, meta=None):
        self.address = address
        self.signal_type = signal_type
        self.datatype = datatype
        self.access = access
        self.meta = meta


cdef class SubscribeOptions(_Record):
    """SUBSCRIBE options; all optional. An object with every field None is sent as "no options"."""

    _FIELDS = (("max_rate", None), ("epsilon", None), ("history", None), ("window", None))

    def __init__(self, max_rate=None, epsilon=None, history=None, window=None):
        self.max_rate = max_rate
        self.epsilon = epsilon
        self.history = history
        self.window = window


cdef class Param(_Record):
    """One stored param inside a SNAPSHOT."""

    _FIELDS = (("address", _REQUIRED), ("value", _REQUIRED), ("revision", _REQUIRED),
               ("writer", None), ("timestamp", None))

    def __init__(self, address, value, revision, writer=None, timestamp=None):
        self.address = address
        self.value = value
        self.revision = revision
        self.writer = writer
        self.timestamp = timestamp


# ---------------------------------------------------------------------------------------------
# Messages

cdef class Hello(Message):
    """HELLO (0x01), client → router. `token` None = no token (sent as "")."""

    TYPE = MSG_HELLO
    _FIELDS = (("name", _REQUIRED), ("features", list(DEFAULT_FEATURES)), ("version", 1),
               ("token", None))

    def __init__(self, name, features=DEFAULT_FEATURES, version=1, token=None):
        self.name = name
        self.features = list(features)
        self.version = version
        self.token = token


cdef class Welcome(Message):
    """WELCOME (0x02), router → client: session id, router name, features, router time (µs)."""

    TYPE = MSG_WELCOME
    _FIELDS = (("session", _REQUIRED), ("name", _REQUIRED), ("features", _REQUIRED),
               ("time", _REQUIRED), ("version", 1), ("token", None))

    def __init__(self, session, name, features, time, version=1, token=None):
        self.session = session
        self.name = name
        self.features = list(features)
        self.time = time
        self.version = version
        self.token = token


cdef class Announce(Message):
    """ANNOUNCE (0x03): the signals a peer offers under `namespace`."""

    TYPE = MSG_ANNOUNCE
    _FIELDS = (("namespace", _REQUIRED), ("signals", []))

    def __init__(self, namespace, signals=()):
        self.namespace = namespace
        self.signals = list(signals)


cdef class FederationSync(Message):
    """FEDERATION_SYNC (0x04), router ↔ router; `op` is 1..4 (see `FEDERATION_OPS`)."""

    TYPE = MSG_FEDERATION_SYNC
    _FIELDS = (("op", _REQUIRED), ("patterns", []), ("revisions", {}), ("since_revision", None),
               ("origin", None))

    def __init__(self, op, patterns=(), revisions=None, since_revision=None, origin=None):
        self.op = op
        self.patterns = list(patterns)
        self.revisions = dict(revisions) if revisions is not None else {}
        self.since_revision = since_revision
        self.origin = origin


cdef class Subscribe(Message):
    """SUBSCRIBE (0x10). `types` lists signal types; [] means all types."""

    TYPE = MSG_SUBSCRIBE
    _FIELDS = (("id", _REQUIRED), ("pattern", _REQUIRED), ("types", []), ("options", None))

    def __init__(self, id, pattern, types=(), options=None):
        self.id = id
        self.pattern = pattern
        self.types = list(types)
        self.options = options


cdef class Unsubscribe(Message):
    """UNSUBSCRIBE (0x11)."""

    TYPE = MSG_UNSUBSCRIBE
    _FIELDS = (("id", _REQUIRED),)

    def __init__(self, id):
        self.id = id


cdef class Publish(Message):
    """PUBLISH (0x20): an event, stream value or samples, gesture or timeline.

    `value=MISSING` sends no value, `value=None` an explicit null. `samples` is a 1-D float64
    numpy array on decode; on encode any sequence of floats. A decoded binary PUBLISH always
    has `signal` and `phase` (encoders fill "event" and "start").
    """

    TYPE = MSG_PUBLISH
    _FIELDS = (("address", _REQUIRED), ("signal", None), ("value", MISSING), ("samples", None),
               ("timestamp", None), ("id", None), ("phase", None), ("rate", None))

    def __init__(self, address, signal=None, value=MISSING, samples=None, timestamp=None,
                 id=None, phase=None, rate=None):
        self.address = address
        self.signal = signal
        self.value = value
        self.samples = samples
        self.timestamp = timestamp
        self.id = id
        self.phase = phase
        self.rate = rate


cdef class Set(Message):
    """SET (0x21): write a param. `revision` is the expected revision (or, from the router, the new one)."""

    TYPE = MSG_SET
    _FIELDS = (("address", _REQUIRED), ("value", _REQUIRED), ("revision", None), ("lock", False),
               ("unlock", False), ("ttl", None))

    def __init__(self, address, value, revision=None, lock=False, unlock=False, ttl=None):
        self.address = address
        self.value = value
        self.revision = revision
        self.lock = lock
        self.unlock = unlock
        self.ttl = ttl


cdef class Get(Message):
    """GET (0x22)."""

    TYPE = MSG_GET
    _FIELDS = (("address", _REQUIRED),)

    def __init__(self, address):
        self.address = address


cdef class Snapshot(Message):
    """SNAPSHOT (0x23): stored params (a list of `Param`)."""

    TYPE = MSG_SNAPSHOT
    _FIELDS = (("params", []),)

    def __init__(self, params=()):
        self.params = list(params)


cdef class Replay(Message):
    """REPLAY (0x24): journal replay request; `from_` / `to` in µs since the epoch."""

    TYPE = MSG_REPLAY
    _FIELDS = (("pattern", _REQUIRED), ("from_", None), ("to", None), ("limit", None), ("types", []))

    def __init__(self, pattern, from_=None, to=None, limit=None, types=()):
        self.pattern = pattern
        self.from_ = from_
        self.to = to
        self.limit = limit
        self.types = list(types)


cdef class Bundle(Message):
    """BUNDLE (0x30): messages applied together; `timestamp` (µs) is informational."""

    TYPE = MSG_BUNDLE
    _FIELDS = (("messages", _REQUIRED), ("timestamp", None))

    def __init__(self, messages, timestamp=None):
        self.messages = list(messages)
        self.timestamp = timestamp


cdef class Sync(Message):
    """SYNC (0x40): clock synchronisation times in µs."""

    TYPE = MSG_SYNC
    _FIELDS = (("t1", _REQUIRED), ("t2", None), ("t3", None))

    def __init__(self, t1, t2=None, t3=None):
        self.t1 = t1
        self.t2 = t2
        self.t3 = t3


cdef class Ping(Message):
    """PING (0x41)."""

    TYPE = MSG_PING


cdef class Pong(Message):
    """PONG (0x42)."""

    TYPE = MSG_PONG


cdef class Ack(Message):
    """ACK (0x50), router → client."""

    TYPE = MSG_ACK
    _FIELDS = (("address", None), ("revision", None), ("locked", None), ("holder", None),
               ("correlation_id", None))

    def __init__(self, address=None, revision=None, locked=None, holder=None, correlation_id=None):
        self.address = address
        self.revision = revision
        self.locked = locked
        self.holder = holder
        self.correlation_id = correlation_id


cdef class Error(Message):
    """ERROR (0x51), router → client: `code` (u16) and text."""

    TYPE = MSG_ERROR
    _FIELDS = (("code", _REQUIRED), ("message", _REQUIRED), ("address", None),
               ("correlation_id", None))

    def __init__(self, code, message, address=None, correlation_id=None):
        self.code = code
        self.message = message
        self.address = address
        self.correlation_id = correlation_id


cdef class Query(Message):
    """QUERY (0x60): ask for announced signals matching `pattern`."""

    TYPE = MSG_QUERY
    _FIELDS = (("pattern", _REQUIRED),)

    def __init__(self, pattern):
        self.pattern = pattern


cdef class Result(Message):
    """RESULT (0x61): announced signals (`SignalInfo`; meta is not carried and is dropped)."""

    TYPE = MSG_RESULT
    _FIELDS = (("signals", []),)

    def __init__(self, signals=()):
        self.signals = list(signals)


MESSAGE_CLASSES = {
    cls.TYPE: cls
    for cls in (Hello, Welcome, Announce, FederationSync, Subscribe, Unsubscribe, Publish, Set,
                Get, Snapshot, Replay, Bundle, Sync, Ping, Pong, Ack, Error, Query, Result)
}

_QOS_BY_SIGNAL = {"param": 1, "event": 1, "stream": 0, "gesture": 0, "timeline": 2}


def default_qos(message) -> int:
    """The QoS the reference encoder writes for `message` (docs/protocol.md §2.1)."""
    cdef type t = type(message)
    if t is Set:
        return QOS_CONFIRM
    if t is Publish:
        return _QOS_BY_SIGNAL.get((<Publish>message).signal, QOS_FIRE)
    if t is Bundle:
        return QOS_COMMIT
    if t is Subscribe or t is Unsubscribe or t is Replay or t is FederationSync:
        return QOS_CONFIRM
    if isinstance(message, Message):
        return QOS_FIRE
    raise TypeError(f"not a CLASP message: {message!r}")

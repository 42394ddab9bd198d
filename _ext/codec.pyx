"""The compiled CLASP codec: frames (docs/protocol.md §2), values (§4), the 19 messages (§6), v0 (§7).

Public face: `clasp_fast.codec` (functions) and `clasp_fast.messages` (classes, constants);
C interface for other compiled modules: `clasp_fast._codec.pxd`.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.long cimport PyLong_FromUnsignedLongLong

from buffers cimport *

cdef extern from "Python.h":
    unsigned long long PyLong_AsUnsignedLongLong(object obj) except? <unsigned long long>-1

include "messages.pxi"
include "values.pxi"

cdef object _np = None


cdef object _numpy():
    global _np
    if _np is None:
        import numpy
        _np = numpy
    return _np


# ---------------------------------------------------------------------------------------------
# Codes

cdef dict _SIGNAL_CODES = {"param": 0, "event": 1, "stream": 2, "gesture": 3, "timeline": 4}
cdef dict _PHASE_CODES = {"start": 0, "move": 1, "end": 2, "cancel": 3}
cdef dict _FEATURE_BITS = {"param": 0x80, "event": 0x40, "stream": 0x20, "gesture": 0x10,
                           "timeline": 0x08, "federation": 0x04}
cdef tuple _SIGNAL_NAMES = SIGNAL_TYPES
cdef tuple _PHASE_NAMES = PHASES

cdef enum:
    MAX_PAYLOAD = 0xFFFF
    MAGIC = 0x53
    FLAG_TIMESTAMP = 0x20
    FLAG_ENCRYPTED = 0x10
    FLAG_COMPRESSED = 0x08
    WIRE_VERSION = 1


cdef inline object signal_name(int code):
    # Codes 5..7 (and anything else) decode as event (docs/protocol.md §5).
    return _SIGNAL_NAMES[code] if 0 <= code <= 4 else "event"


cdef inline object phase_name(int code):
    return _PHASE_NAMES[code] if 0 <= code <= 3 else "start"


cdef list features_from_bits(int bits, int allowed):
    cdef list names = []
    for name in FEATURES:
        if bits & allowed & <int>_FEATURE_BITS[name]:
            names.append(name)
    return names


cdef list types_from_mask(int mask):
    cdef list names = []
    cdef int i
    if mask == 0xFF:
        return names
    for i in range(5):
        if mask & (1 << i):
            names.append(_SIGNAL_NAMES[i])
    return names


# ---------------------------------------------------------------------------------------------
# Encoding helpers for fixed fields (each raises EncodeError naming the field)

cdef int enc_str(WriteBuf* wb, object s, str field) except -1:
    if type(s) is not str and not isinstance(s, str):
        raise _encode_error(f"{field} must be a str, not {type(s).__name__}")
    return put_utf8(wb, s, field, False)


cdef int enc_opt_str(WriteBuf* wb, object s, str field) except -1:
    if s is None:
        return wb_u16(wb, 0)
    return enc_str(wb, s, field)


cdef int as_uint(object v, uint64_t maxv, str field, uint64_t* out) except -1:
    cdef int overflow = 0
    cdef long long x
    if type(v) is not int:
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise _encode_error(f"{field} must be an int, not {type(v).__name__}")
        v = v.__index__()
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow == 0 and x >= 0 and <uint64_t>x <= maxv:
        out[0] = <uint64_t>x
        return 0
    if overflow > 0 and maxv == 0xFFFFFFFFFFFFFFFFULL and v <= 0xFFFFFFFFFFFFFFFF:
        out[0] = PyLong_AsUnsignedLongLong(v)
        return 0
    raise _encode_error(f"{field} {v} out of range 0..{maxv}")


cdef inline int enc_u8(WriteBuf* wb, object v, str field) except -1:
    cdef uint64_t x
    as_uint(v, 0xFF, field, &x)
    return wb_u8(wb, <unsigned int>x)


cdef inline int enc_u16(WriteBuf* wb, object v, str field) except -1:
    cdef uint64_t x
    as_uint(v, 0xFFFF, field, &x)
    return wb_u16(wb, <unsigned int>x)


cdef inline int enc_u32(WriteBuf* wb, object v, str field) except -1:
    cdef uint64_t x
    as_uint(v, 0xFFFFFFFF, field, &x)
    return wb_u32(wb, <uint32_t>x)


cdef inline int enc_u64(WriteBuf* wb, object v, str field) except -1:
    cdef uint64_t x
    as_uint(v, 0xFFFFFFFFFFFFFFFFULL, field, &x)
    return wb_u64(wb, x)


cdef int enc_f64(WriteBuf* wb, object v, str field) except -1:
    if type(v) is float:
        return wb_f64(wb, PyFloat_AS_DOUBLE(v))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if not (hasattr(v, "__float__") and hasattr(v, "dtype")):
            raise _encode_error(f"{field} must be a float, not {type(v).__name__}")
    return wb_f64(wb, float(v))


cdef int enc_count(WriteBuf* wb, Py_ssize_t n, str field) except -1:
    if n > 0xFFFF:
        raise _encode_error(f"{field} has {n} entries, more than 65535")
    return wb_u16(wb, <unsigned int>n)


cdef int signal_code(object name, str field) except -1:
    code = _SIGNAL_CODES.get(name)
    if code is None:
        raise _encode_error(f"{field} {name!r} is not one of {', '.join(SIGNAL_TYPES)}")
    return code


cdef int feature_bits(object names, int allowed, str field) except -1:
    cdef int bits = 0
    for name in names:
        bit = _FEATURE_BITS.get(name)
        if bit is None:
            raise _encode_error(f"{field}: unknown feature {name!r} (known: {', '.join(FEATURES)})")
        bits |= <int>bit
    return bits & allowed


cdef int type_mask(object types, str field) except -1:
    cdef int mask = 0
    if types is None:
        return 0xFF
    for name in types:
        mask |= 1 << signal_code(name, field)
    return mask if mask else 0xFF


# ---------------------------------------------------------------------------------------------
# Encoding messages (payload only: type byte and body)

cdef int encode_payload(WriteBuf* wb, object message, int depth) except -1:
    cdef type t = type(message)
    if t is Set:
        return enc_set(wb, <Set>message)
    if t is Publish:
        return enc_publish(wb, <Publish>message)
    if t is Bundle:
        return enc_bundle(wb, <Bundle>message, depth)
    if t is Ping:
        return wb_u8(wb, MSG_PING)
    if t is Pong:
        return wb_u8(wb, MSG_PONG)
    if t is Ack:
        return enc_ack(wb, <Ack>message)
    if t is Snapshot:
        return enc_snapshot(wb, <Snapshot>message)
    if t is Subscribe:
        return enc_subscribe(wb, <Subscribe>message)
    if t is Unsubscribe:
        wb_u8(wb, MSG_UNSUBSCRIBE)
        return enc_u32(wb, (<Unsubscribe>message).id, "id")
    if t is Get:
        wb_u8(wb, MSG_GET)
        return enc_str(wb, (<Get>message).address, "address")
    if t is Query:
        wb_u8(wb, MSG_QUERY)
        return enc_str(wb, (<Query>message).pattern, "pattern")
    if t is Hello:
        return enc_hello(wb, <Hello>message)
    if t is Welcome:
        return enc_welcome(wb, <Welcome>message)
    if t is Error:
        return enc_error(wb, <Error>message)
    if t is Sync:
        return enc_sync(wb, <Sync>message)
    if t is Announce:
        return enc_announce(wb, <Announce>message)
    if t is Result:
        return enc_result(wb, <Result>message)
    if t is Replay:
        return enc_replay(wb, <Replay>message)
    if t is FederationSync:
        return enc_federation(wb, <FederationSync>message)
    raise _encode_error(f"not a CLASP message: {type(message).__name__}")


cdef int enc_set(WriteBuf* wb, Set m) except -1:
    cdef int code, flags
    try:
        code = value_code(m.value)
    except _BadValue as bad:
        raise _bad_value_error(bad, "value") from None
    flags = code
    if m.revision is not None:
        flags |= 0x80
    if m.lock:
        flags |= 0x40
    if m.unlock:
        flags |= 0x20
    if m.ttl is not None:
        if type(m.ttl) is not Ttl:
            raise _encode_error(f"ttl must be a Ttl, not {type(m.ttl).__name__}")
        flags |= 0x10
    wb_reserve(wb, 2)
    wb.data[wb.len] = MSG_SET
    wb.data[wb.len + 1] = <char>flags
    wb.len += 2
    enc_str(wb, m.address, "address")
    try:
        encode_value_data(wb, m.value, code, 0)
    except _BadValue as bad:
        raise _bad_value_error(bad, "value") from None
    if m.revision is not None:
        enc_u64(wb, m.revision, "revision")
    if m.ttl is not None:
        wb_u32(wb, <uint32_t>(<Ttl>m.ttl).raw)
    return 0


cdef int enc_samples(WriteBuf* wb, object samples) except -1:
    cdef const double[::1] view
    cdef Py_ssize_t n, i
    cdef uint64_t bits
    cdef char* p
    np = _numpy()
    try:
        array = np.ascontiguousarray(samples, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _encode_error(f"samples must be a sequence of floats ({e})") from None
    if array.ndim != 1:
        raise _encode_error(f"samples must be one-dimensional, not shape {array.shape}")
    view = array
    n = view.shape[0]
    enc_count(wb, n, "samples")
    wb_reserve(wb, 8 * n)
    p = wb.data + wb.len
    for i in range(n):
        memcpy(&bits, &view[i], 8)
        store_u64(p + 8 * i, bits)
    wb.len += 8 * n
    return 0


cdef int enc_publish(WriteBuf* wb, Publish m) except -1:
    cdef int flags, sig = 1, phase = 0
    if m.signal is not None:
        sig = signal_code(m.signal, "signal")
    if m.phase is not None:
        code = _PHASE_CODES.get(m.phase)
        if code is None:
            raise _encode_error(f"phase {m.phase!r} is not one of {', '.join(PHASES)}")
        phase = code
    flags = (sig << 5) | phase
    if m.timestamp is not None:
        flags |= 0x10
    if m.id is not None:
        flags |= 0x08
    wb_reserve(wb, 2)
    wb.data[wb.len] = MSG_PUBLISH
    wb.data[wb.len + 1] = <char>flags
    wb.len += 2
    enc_str(wb, m.address, "address")
    if m.samples is not None:
        if m.value is not _MISSING:
            raise _encode_error("a PUBLISH carries either a value or samples, not both")
        wb_u8(wb, 2)
        enc_samples(wb, m.samples)
    elif m.value is _MISSING:
        wb_u8(wb, 0)
    else:
        wb_u8(wb, 1)
        encode_value(wb, m.value, "value")
    if m.timestamp is not None:
        enc_u64(wb, m.timestamp, "timestamp")
    if m.id is not None:
        enc_u32(wb, m.id, "id")
    if m.rate is not None:
        enc_u32(wb, m.rate, "rate")
    return 0


cdef int enc_bundle(WriteBuf* wb, Bundle m, int depth) except -1:
    cdef Py_ssize_t at, item_len
    if depth >= C_MAX_NESTING:
        raise _encode_error(f"bundles nested deeper than {C_MAX_NESTING}")
    wb_u8(wb, MSG_BUNDLE)
    wb_u8(wb, 0x80 if m.timestamp is not None else 0)
    enc_count(wb, len(m.messages), "messages")
    if m.timestamp is not None:
        enc_u64(wb, m.timestamp, "timestamp")
    for inner in m.messages:
        wb_reserve(wb, 2)
        at = wb.len
        wb.len += 2
        encode_payload(wb, inner, depth + 1)
        item_len = wb.len - at - 2
        if item_len > MAX_PAYLOAD:
            raise _encode_error(f"bundled {type(inner).__name__} of {item_len} bytes exceeds 65535")
        store_u16(wb.data + at, <unsigned int>item_len)
    return 0


cdef int enc_hello(WriteBuf* wb, Hello m) except -1:
    wb_u8(wb, MSG_HELLO)
    enc_u8(wb, m.version, "version")
    wb_u8(wb, feature_bits(m.features, 0xFC, "features"))
    enc_str(wb, m.name, "name")
    return enc_opt_str(wb, m.token, "token")


cdef int enc_welcome(WriteBuf* wb, Welcome m) except -1:
    wb_u8(wb, MSG_WELCOME)
    enc_u8(wb, m.version, "version")
    # WELCOME carries no federation bit (docs/protocol.md §5): it is dropped.
    wb_u8(wb, feature_bits(m.features, 0xF8, "features"))
    enc_u64(wb, m.time, "time")
    enc_str(wb, m.session, "session")
    enc_str(wb, m.name, "name")
    return enc_opt_str(wb, m.token, "token")


cdef int enc_signal_info(WriteBuf* wb, object info, bint with_meta, str field) except -1:
    cdef int opt = 0, mflags = 0
    if type(info) is not SignalInfo:
        raise _encode_error(f"{field} must hold SignalInfo objects, not {type(info).__name__}")
    cdef SignalInfo s = <SignalInfo>info
    enc_str(wb, s.address, "signal address")
    wb_u8(wb, signal_code(s.signal_type, "signal_type"))
    if s.datatype is not None:
        opt |= 0x01
    if s.access is not None:
        opt |= 0x02
    if with_meta and s.meta is not None:
        if type(s.meta) is not SignalMeta:
            raise _encode_error(f"meta must be a SignalMeta, not {type(s.meta).__name__}")
        opt |= 0x04
    wb_u8(wb, opt)
    if opt & 0x01:
        enc_str(wb, s.datatype, "datatype")
    if opt & 0x02:
        enc_str(wb, s.access, "access")
    if opt & 0x04:
        meta = <SignalMeta>s.meta
        if meta.unit is not None:
            mflags |= 0x01
        if meta.range is not None:
            mflags |= 0x02
        if meta.default is not _MISSING:
            mflags |= 0x04
        if meta.description is not None:
            mflags |= 0x08
        wb_u8(wb, mflags)
        if mflags & 0x01:
            enc_str(wb, meta.unit, "unit")
        if mflags & 0x02:
            if len(meta.range) != 2:
                raise _encode_error("range must be a pair (min, max)")
            enc_f64(wb, meta.range[0], "range")
            enc_f64(wb, meta.range[1], "range")
        if mflags & 0x04:
            encode_value(wb, meta.default, "default")
        if mflags & 0x08:
            enc_str(wb, meta.description, "description")
    return 0


cdef int enc_announce(WriteBuf* wb, Announce m) except -1:
    wb_u8(wb, MSG_ANNOUNCE)
    enc_str(wb, m.namespace, "namespace")
    enc_count(wb, len(m.signals), "signals")
    for info in m.signals:
        enc_signal_info(wb, info, True, "signals")
    return 0


cdef int enc_result(WriteBuf* wb, Result m) except -1:
    wb_u8(wb, MSG_RESULT)
    enc_count(wb, len(m.signals), "signals")
    for info in m.signals:
        enc_signal_info(wb, info, False, "signals")
    return 0


cdef int enc_federation(WriteBuf* wb, FederationSync m) except -1:
    cdef int flags = 0
    wb_u8(wb, MSG_FEDERATION_SYNC)
    if m.op not in FEDERATION_OPS:
        raise _encode_error(f"op must be 1..4, not {m.op!r}")
    wb_u8(wb, m.op)
    enc_count(wb, len(m.patterns), "patterns")
    for pattern in m.patterns:
        enc_str(wb, pattern, "patterns")
    enc_count(wb, len(m.revisions), "revisions")
    for key, rev in m.revisions.items():
        enc_str(wb, key, "revisions key")
        enc_u64(wb, rev, "revisions value")
    if m.since_revision is not None:
        flags |= 0x80
    if m.origin is not None:
        flags |= 0x40
    wb_u8(wb, flags)
    if m.since_revision is not None:
        enc_u64(wb, m.since_revision, "since_revision")
    if m.origin is not None:
        enc_str(wb, m.origin, "origin")
    return 0


cdef int enc_subscribe(WriteBuf* wb, Subscribe m) except -1:
    cdef int opt = 0
    cdef SubscribeOptions o = None
    wb_u8(wb, MSG_SUBSCRIBE)
    enc_u32(wb, m.id, "id")
    enc_str(wb, m.pattern, "pattern")
    wb_u8(wb, type_mask(m.types, "types"))
    if m.options is not None:
        if type(m.options) is not SubscribeOptions:
            raise _encode_error(f"options must be SubscribeOptions, not {type(m.options).__name__}")
        o = <SubscribeOptions>m.options
        if o.max_rate is not None:
            opt |= 0x01
        if o.epsilon is not None:
            opt |= 0x02
        if o.history is not None:
            opt |= 0x04
        if o.window is not None:
            opt |= 0x08
    wb_u8(wb, opt)
    if opt & 0x01:
        enc_u32(wb, o.max_rate, "max_rate")
    if opt & 0x02:
        enc_f64(wb, o.epsilon, "epsilon")
    if opt & 0x04:
        enc_u32(wb, o.history, "history")
    if opt & 0x08:
        enc_u32(wb, o.window, "window")
    return 0


cdef int enc_snapshot(WriteBuf* wb, Snapshot m) except -1:
    cdef int opt
    cdef Param p
    wb_u8(wb, MSG_SNAPSHOT)
    enc_count(wb, len(m.params), "params")
    for item in m.params:
        if type(item) is not Param:
            raise _encode_error(f"params must hold Param objects, not {type(item).__name__}")
        p = <Param>item
        enc_str(wb, p.address, "param address")
        encode_value(wb, p.value, "param value")
        enc_u64(wb, p.revision, "param revision")
        opt = (0x01 if p.writer is not None else 0) | (0x02 if p.timestamp is not None else 0)
        wb_u8(wb, opt)
        if p.writer is not None:
            enc_str(wb, p.writer, "param writer")
        if p.timestamp is not None:
            enc_u64(wb, p.timestamp, "param timestamp")
    return 0


cdef int enc_replay(WriteBuf* wb, Replay m) except -1:
    cdef int flags = 0
    if m.from_ is not None:
        flags |= 0x80
    if m.to is not None:
        flags |= 0x40
    if m.limit is not None:
        flags |= 0x20
    wb_u8(wb, MSG_REPLAY)
    wb_u8(wb, flags)
    enc_str(wb, m.pattern, "pattern")
    if m.from_ is not None:
        enc_u64(wb, m.from_, "from_")
    if m.to is not None:
        enc_u64(wb, m.to, "to")
    if m.limit is not None:
        enc_u32(wb, m.limit, "limit")
    return wb_u8(wb, type_mask(m.types, "types"))


cdef int enc_sync(WriteBuf* wb, Sync m) except -1:
    wb_u8(wb, MSG_SYNC)
    wb_u8(wb, (0x01 if m.t2 is not None else 0) | (0x02 if m.t3 is not None else 0))
    enc_u64(wb, m.t1, "t1")
    if m.t2 is not None:
        enc_u64(wb, m.t2, "t2")
    if m.t3 is not None:
        enc_u64(wb, m.t3, "t3")
    return 0


cdef int enc_ack(WriteBuf* wb, Ack m) except -1:
    cdef int flags = 0
    if m.address is not None:
        flags |= 0x01
    if m.revision is not None:
        flags |= 0x02
    if m.locked is not None:
        flags |= 0x04
    if m.holder is not None:
        flags |= 0x08
    if m.correlation_id is not None:
        flags |= 0x10
    wb_u8(wb, MSG_ACK)
    wb_u8(wb, flags)
    if m.address is not None:
        enc_str(wb, m.address, "address")
    if m.revision is not None:
        enc_u64(wb, m.revision, "revision")
    if m.locked is not None:
        wb_u8(wb, 1 if m.locked else 0)
    if m.holder is not None:
        enc_str(wb, m.holder, "holder")
    if m.correlation_id is not None:
        enc_u32(wb, m.correlation_id, "correlation_id")
    return 0


cdef int enc_error(WriteBuf* wb, Error m) except -1:
    wb_u8(wb, MSG_ERROR)
    enc_u16(wb, m.code, "code")
    enc_str(wb, m.message, "message")
    wb_u8(wb, (0x01 if m.address is not None else 0) | (0x02 if m.correlation_id is not None else 0))
    if m.address is not None:
        enc_str(wb, m.address, "address")
    if m.correlation_id is not None:
        enc_u32(wb, m.correlation_id, "correlation_id")
    return 0


# ---------------------------------------------------------------------------------------------
# Frames

cdef int c_default_qos(object message) except -1:
    cdef type t = type(message)
    if t is Set:
        return QOS_CONFIRM
    if t is Publish:
        sig = (<Publish>message).signal
        if sig is None:
            return QOS_FIRE
        return _QOS_BY_SIGNAL.get(sig, QOS_FIRE)
    if not isinstance(message, Message):
        raise _encode_error(f"not a CLASP message: {type(message).__name__}")
    return default_qos(message)


cdef int encode_message_into(WriteBuf* wb, object message, int qos, object timestamp) except -1:
    """Append one complete frame for `message` to `wb`. `qos` < 0 means the default QoS.

    On error `wb` is left as it was.
    """
    cdef Py_ssize_t start = wb.len
    cdef Py_ssize_t header = 4 if timestamp is None else 12
    cdef Py_ssize_t n
    cdef uint64_t ts = 0
    if qos < 0:
        qos = c_default_qos(message)
    elif qos > 2:
        raise _encode_error(f"qos must be 0, 1 or 2, not {qos}")
    if timestamp is not None:
        as_uint(timestamp, 0xFFFFFFFFFFFFFFFFULL, "timestamp", &ts)
    try:
        wb_reserve(wb, header)
        wb.len += header
        encode_payload(wb, message, 0)
        n = wb.len - start - header
        if n > MAX_PAYLOAD:
            raise _encode_error(
                f"{type(message).__name__} payload of {n} bytes exceeds the 65535-byte frame limit")
    except BaseException:
        wb.len = start
        raise
    wb.data[start] = MAGIC
    wb.data[start + 1] = <char>((qos << 6) | (FLAG_TIMESTAMP if timestamp is not None else 0)
                               | WIRE_VERSION)
    store_u16(wb.data + start + 2, <unsigned int>n)
    if timestamp is not None:
        store_u64(wb.data + start + 4, ts)
    return 0


cdef WriteBuf _shared
_shared.data = NULL
_shared.len = 0
_shared.cap = 0
cdef bint _shared_busy = False


cdef inline int qos_arg(object qos) except -2:
    if qos is None:
        return -1
    if type(qos) is not int or not 0 <= qos <= 2:
        raise _encode_error(f"qos must be 0, 1, 2 or None, not {qos!r}")
    return qos


def encode(message, *, qos=None, timestamp=None) -> bytes:
    """One complete CLASP frame for `message`.

    `qos` None uses the default QoS of docs/protocol.md §2.1; `timestamp` (µs, int) sets the optional
    frame timestamp. Unrepresentable content raises `EncodeError`.
    """
    global _shared_busy
    cdef WriteBuf local
    cdef WriteBuf* wb
    cdef int q = qos_arg(qos)
    if _shared_busy:
        # Re-entered (e.g. from a value's __index__ running encode): use a private buffer.
        local.data = NULL
        local.len = 0
        local.cap = 0
        wb = &local
    else:
        _shared_busy = True
        _shared.len = 0
        wb = &_shared
    try:
        encode_message_into(wb, message, q, timestamp)
        return PyBytes_FromStringAndSize(wb.data, wb.len)
    finally:
        if wb == &_shared:
            _shared_busy = False
        else:
            wb_free(&local)


cdef class WriteBuffer:
    """A growable byte buffer that frames are encoded into (used by the batcher)."""

    cdef WriteBuf buf

    def __dealloc__(self):
        wb_free(&self.buf)

    def append(self, message, *, qos=None, timestamp=None):
        """Append one frame for `message`; returns the frame's size in bytes."""
        cdef Py_ssize_t before = self.buf.len
        encode_message_into(&self.buf, message, qos_arg(qos), timestamp)
        return self.buf.len - before

    def getvalue(self) -> bytes:
        return PyBytes_FromStringAndSize(self.buf.data, self.buf.len)

    def clear(self):
        self.buf.len = 0

    def __len__(self):
        return self.buf.len


# ---------------------------------------------------------------------------------------------
# Decoding messages

cdef object dec_set(Reader* r):
    cdef int flags = rd_u8(r, "flags")
    cdef int code = flags & 0x0F
    cdef Py_ssize_t flags_at = r.pos - 1
    cdef uint64_t u
    cdef Set m = Set.__new__(Set)
    m.address = rd_str(r, "address")
    if code > V_MAP:
        decode_fail(r.base + flags_at, f"unknown value type 0x{code:02x}", "value")
    m.value = decode_value(r, code, 0, "value")
    if flags & 0x80:
        rd_u64(r, &u, "revision")
        m.revision = PyLong_FromUnsignedLongLong(u)
    else:
        m.revision = None
    m.lock = (flags & 0x40) != 0
    m.unlock = (flags & 0x20) != 0
    if flags & 0x10:
        m.ttl = _ttl_from_raw(<uint32_t>rd_u32(r, "ttl"))
    else:
        m.ttl = None
    return m


cdef object dec_samples(Reader* r):
    cdef int n = rd_u16(r, "samples")
    cdef Py_ssize_t i
    cdef uint64_t bits
    need(r, 8 * <Py_ssize_t>n, "samples")
    raw = PyByteArray_FromStringAndSize(NULL, 8 * n)
    cdef char* out = PyByteArray_AS_STRING(raw)
    cdef const unsigned char* src = r.data + r.pos
    for i in range(n):
        bits = load_u64(src + 8 * i)
        memcpy(out + 8 * i, &bits, 8)
    r.pos += 8 * n
    np = _numpy()
    return np.frombuffer(raw, dtype=np.float64)


cdef object dec_publish(Reader* r):
    cdef int flags = rd_u8(r, "flags")
    cdef int indicator
    cdef uint64_t u
    cdef Publish m = Publish.__new__(Publish)
    m.signal = signal_name(flags >> 5)
    m.phase = phase_name(flags & 0x07)
    m.address = rd_str(r, "address")
    indicator = rd_u8(r, "indicator")
    m.value = _MISSING
    m.samples = None
    if indicator == 1:
        m.value = rd_value(r, "value")
    elif indicator == 2:
        m.samples = dec_samples(r)
    # Other indicators mean "no body" (docs/protocol.md §6.7).
    if flags & 0x10:
        rd_u64(r, &u, "timestamp")
        m.timestamp = PyLong_FromUnsignedLongLong(u)
    else:
        m.timestamp = None
    if flags & 0x08:
        m.id = rd_u32(r, "id")
    else:
        m.id = None
    # rate has no presence flag: present iff at least 4 bytes remain.
    if r.end - r.pos >= 4:
        m.rate = rd_u32(r, "rate")
    else:
        m.rate = None
    return m


cdef object dec_hello(Reader* r):
    cdef Hello m = Hello.__new__(Hello)
    m.version = rd_u8(r, "version")
    m.features = features_from_bits(rd_u8(r, "features"), 0xFC)
    m.name = rd_str(r, "name")
    m.token = rd_opt_str(r, "token")
    return m


cdef object dec_welcome(Reader* r):
    cdef uint64_t u
    cdef Welcome m = Welcome.__new__(Welcome)
    m.version = rd_u8(r, "version")
    m.features = features_from_bits(rd_u8(r, "features"), 0xF8)
    rd_u64(r, &u, "time")
    m.time = PyLong_FromUnsignedLongLong(u)
    m.session = rd_str(r, "session")
    m.name = rd_str(r, "name")
    m.token = rd_opt_str(r, "token")
    return m


cdef object dec_signal_info(Reader* r, bint with_meta):
    cdef int opt, mflags
    cdef double lo, hi
    cdef SignalInfo s = SignalInfo.__new__(SignalInfo)
    cdef SignalMeta meta
    s.address = rd_str(r, "signal address")
    s.signal_type = signal_name(rd_u8(r, "signal_type"))
    opt = rd_u8(r, "signal options")
    s.datatype = rd_str(r, "datatype") if opt & 0x01 else None
    s.access = rd_str(r, "access") if opt & 0x02 else None
    s.meta = None
    if with_meta and opt & 0x04:
        meta = SignalMeta.__new__(SignalMeta)
        mflags = rd_u8(r, "meta flags")
        meta.unit = rd_str(r, "unit") if mflags & 0x01 else None
        meta.range = None
        if mflags & 0x02:
            rd_f64(r, &lo, "range")
            rd_f64(r, &hi, "range")
            meta.range = (lo, hi)
        meta.default = rd_value(r, "default") if mflags & 0x04 else _MISSING
        meta.description = rd_str(r, "description") if mflags & 0x08 else None
        s.meta = meta
    return s


cdef object dec_announce(Reader* r):
    cdef Announce m = Announce.__new__(Announce)
    cdef int n, i
    m.namespace = rd_str(r, "namespace")
    n = rd_u16(r, "signals")
    m.signals = [dec_signal_info(r, True) for i in range(n)]
    return m


cdef object dec_result(Reader* r):
    cdef Result m = Result.__new__(Result)
    cdef int n = rd_u16(r, "signals"), i
    m.signals = [dec_signal_info(r, False) for i in range(n)]
    return m


cdef object dec_federation(Reader* r):
    cdef FederationSync m = FederationSync.__new__(FederationSync)
    cdef int n, i, flags
    cdef uint64_t u
    cdef Py_ssize_t at = r.pos
    m.op = rd_u8(r, "op")
    if not 1 <= m.op <= 4:
        decode_fail(r.base + at, f"unknown federation op {m.op}", "op")
    n = rd_u16(r, "patterns")
    m.patterns = [rd_str(r, "patterns") for i in range(n)]
    n = rd_u16(r, "revisions")
    m.revisions = {}
    for i in range(n):
        key = rd_str(r, "revisions")
        rd_u64(r, &u, "revisions")
        m.revisions[key] = PyLong_FromUnsignedLongLong(u)
    flags = rd_u8(r, "flags")
    m.since_revision = None
    if flags & 0x80:
        rd_u64(r, &u, "since_revision")
        m.since_revision = PyLong_FromUnsignedLongLong(u)
    m.origin = rd_str(r, "origin") if flags & 0x40 else None
    return m


cdef object dec_subscribe(Reader* r):
    cdef Subscribe m = Subscribe.__new__(Subscribe)
    cdef SubscribeOptions o
    cdef int opt
    cdef double eps
    m.id = rd_u32(r, "id")
    m.pattern = rd_str(r, "pattern")
    m.types = types_from_mask(rd_u8(r, "type_mask"))
    opt = rd_u8(r, "options")
    if opt & 0x0F:
        o = SubscribeOptions.__new__(SubscribeOptions)
        o.max_rate = rd_u32(r, "max_rate") if opt & 0x01 else None
        o.epsilon = None
        if opt & 0x02:
            rd_f64(r, &eps, "epsilon")
            o.epsilon = eps
        o.history = rd_u32(r, "history") if opt & 0x04 else None
        o.window = rd_u32(r, "window") if opt & 0x08 else None
        m.options = o
    else:
        m.options = None
    return m


cdef object dec_snapshot(Reader* r):
    cdef Snapshot m = Snapshot.__new__(Snapshot)
    cdef int n = rd_u16(r, "params"), i, opt
    cdef uint64_t u
    cdef Param p
    cdef list params = []
    for i in range(n):
        p = Param.__new__(Param)
        p.address = rd_str(r, "param address")
        p.value = rd_value(r, "param value")
        rd_u64(r, &u, "param revision")
        p.revision = PyLong_FromUnsignedLongLong(u)
        opt = rd_u8(r, "param options")
        p.writer = rd_str(r, "param writer") if opt & 0x01 else None
        p.timestamp = None
        if opt & 0x02:
            rd_u64(r, &u, "param timestamp")
            p.timestamp = PyLong_FromUnsignedLongLong(u)
        params.append(p)
    m.params = params
    return m


cdef object dec_replay(Reader* r):
    cdef Replay m = Replay.__new__(Replay)
    cdef int flags = rd_u8(r, "flags")
    cdef uint64_t u
    m.pattern = rd_str(r, "pattern")
    m.from_ = None
    m.to = None
    if flags & 0x80:
        rd_u64(r, &u, "from")
        m.from_ = PyLong_FromUnsignedLongLong(u)
    if flags & 0x40:
        rd_u64(r, &u, "to")
        m.to = PyLong_FromUnsignedLongLong(u)
    m.limit = rd_u32(r, "limit") if flags & 0x20 else None
    m.types = types_from_mask(rd_u8(r, "type_mask"))
    return m


cdef object dec_bundle(Reader* r, int depth):
    cdef Bundle m = Bundle.__new__(Bundle)
    cdef int flags = rd_u8(r, "flags")
    cdef int n = rd_u16(r, "count"), i, item_len
    cdef uint64_t u
    cdef Reader inner
    cdef list messages = []
    if depth >= C_MAX_NESTING:
        decode_fail(r.base + r.pos, f"bundles nested deeper than {C_MAX_NESTING}", "messages")
    m.timestamp = None
    if flags & 0x80:
        rd_u64(r, &u, "timestamp")
        m.timestamp = PyLong_FromUnsignedLongLong(u)
    for i in range(n):
        item_len = rd_u16(r, "item length")
        need(r, item_len, "item")
        inner.data = r.data
        inner.base = r.base
        inner.pos = r.pos
        inner.end = r.pos + item_len
        messages.append(decode_payload(&inner, depth + 1))
        r.pos += item_len
    m.messages = messages
    return m


cdef object dec_sync(Reader* r):
    cdef Sync m = Sync.__new__(Sync)
    cdef int flags = rd_u8(r, "flags")
    cdef uint64_t u
    rd_u64(r, &u, "t1")
    m.t1 = PyLong_FromUnsignedLongLong(u)
    m.t2 = None
    m.t3 = None
    if flags & 0x01:
        rd_u64(r, &u, "t2")
        m.t2 = PyLong_FromUnsignedLongLong(u)
    if flags & 0x02:
        rd_u64(r, &u, "t3")
        m.t3 = PyLong_FromUnsignedLongLong(u)
    return m


cdef object dec_ack(Reader* r):
    cdef Ack m = Ack.__new__(Ack)
    cdef int flags = rd_u8(r, "flags")
    cdef uint64_t u
    m.address = rd_str(r, "address") if flags & 0x01 else None
    m.revision = None
    if flags & 0x02:
        rd_u64(r, &u, "revision")
        m.revision = PyLong_FromUnsignedLongLong(u)
    m.locked = (rd_u8(r, "locked") != 0) if flags & 0x04 else None
    m.holder = rd_str(r, "holder") if flags & 0x08 else None
    m.correlation_id = rd_u32(r, "correlation_id") if flags & 0x10 else None
    return m


cdef object dec_error(Reader* r):
    cdef Error m = Error.__new__(Error)
    cdef int flags
    m.code = rd_u16(r, "code")
    m.message = rd_str(r, "message")
    flags = rd_u8(r, "flags")
    m.address = rd_str(r, "address") if flags & 0x01 else None
    m.correlation_id = rd_u32(r, "correlation_id") if flags & 0x02 else None
    return m


cdef inline bint is_msgpack_map(int b) noexcept:
    return 0x80 <= b <= 0x8F or b == 0xDE or b == 0xDF


cdef object decode_payload(Reader* r, int depth):
    """One message from the payload bytes r.pos..r.end (v1 binary, or v0 at the top level)."""
    cdef Py_ssize_t at = r.pos
    cdef int code = rd_u8(r, "type")
    cdef Get g
    cdef Query q
    cdef Unsubscribe u
    if code == MSG_SET:
        return dec_set(r)
    if code == MSG_PUBLISH:
        return dec_publish(r)
    if code == MSG_ACK:
        return dec_ack(r)
    if code == MSG_SNAPSHOT:
        return dec_snapshot(r)
    if code == MSG_BUNDLE:
        return dec_bundle(r, depth)
    if code == MSG_PING:
        return Ping.__new__(Ping)
    if code == MSG_PONG:
        return Pong.__new__(Pong)
    if code == MSG_SUBSCRIBE:
        return dec_subscribe(r)
    if code == MSG_UNSUBSCRIBE:
        u = Unsubscribe.__new__(Unsubscribe)
        u.id = rd_u32(r, "id")
        return u
    if code == MSG_GET:
        g = Get.__new__(Get)
        g.address = rd_str(r, "address")
        return g
    if code == MSG_QUERY:
        q = Query.__new__(Query)
        q.pattern = rd_str(r, "pattern")
        return q
    if code == MSG_HELLO:
        return dec_hello(r)
    if code == MSG_WELCOME:
        return dec_welcome(r)
    if code == MSG_ERROR:
        return dec_error(r)
    if code == MSG_SYNC:
        return dec_sync(r)
    if code == MSG_ANNOUNCE:
        return dec_announce(r)
    if code == MSG_RESULT:
        return dec_result(r)
    if code == MSG_REPLAY:
        return dec_replay(r)
    if code == MSG_FEDERATION_SYNC:
        return dec_federation(r)
    if is_msgpack_map(code):
        if depth > 0:
            decode_fail(r.base + at, "bundled item is MessagePack (v0); bundle items must be binary",
                        "item")
        return decode_v0(
            PyBytes_FromStringAndSize(<const char*>(r.data + at), r.end - at), r.base + at)
    decode_fail(r.base + at, f"unknown message type 0x{code:02x}", "type")


include "legacy.pxi"
include "frames.pxi"
include "batching.pxi"

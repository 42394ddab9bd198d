# Frame headers (WIRE.md §2) and the public decode functions.

cdef struct FrameHead:
    int flags
    Py_ssize_t header        # 4, or 12 with the timestamp field
    Py_ssize_t payload_len
    uint64_t timestamp


cdef int parse_header(const unsigned char* p, Py_ssize_t n, Py_ssize_t base, FrameHead* h) except -1:
    """Check and read the header of the frame at p[0:n]; the whole frame must be present."""
    if n < 1:
        decode_fail(base, "no frame: buffer is empty", "magic")
    if p[0] != MAGIC:
        decode_fail(base, f"bad magic byte 0x{p[0]:02x} (expected 0x53)", "magic")
    if n < 4:
        decode_fail(base + n, f"truncated frame header: {n} of 4 bytes", "header")
    h.flags = p[1]
    h.payload_len = (<Py_ssize_t>p[2] << 8) | p[3]
    h.header = 4
    h.timestamp = 0
    if h.flags & FLAG_TIMESTAMP:
        h.header = 12
        if n < 12:
            decode_fail(base + n, f"truncated frame header: {n} of 12 bytes", "timestamp")
        h.timestamp = load_u64(p + 4)
    if h.payload_len == 0:
        decode_fail(base + 2, "empty payload (payload length 0)", "payload_len")
    if h.header + h.payload_len > n:
        decode_fail(base + n,
                    f"frame declares {h.payload_len} payload bytes but only "
                    f"{n - h.header} are present", "payload")
    return 0


cdef object decode_one(const unsigned char* data, Py_ssize_t length, Py_ssize_t base_offset,
                       Py_ssize_t* consumed):
    """Decode the frame at data[0:length] (base_offset = its position in the caller's buffer).

    Sets consumed to the frame's size. Raises DecodeError; never reads outside data[0:length].
    """
    cdef FrameHead h
    cdef Reader r
    parse_header(data, length, base_offset, &h)
    consumed[0] = h.header + h.payload_len
    r.data = data
    r.pos = h.header
    r.end = h.header + h.payload_len
    r.base = base_offset
    return decode_payload(&r, 0)


cdef class Frame:
    """A decoded frame: the message plus the header fields."""

    cdef readonly object message
    cdef readonly int qos
    cdef readonly object timestamp
    cdef readonly int version
    cdef readonly bint encrypted
    cdef readonly bint compressed
    cdef readonly Py_ssize_t size

    def __repr__(self):
        ts = "" if self.timestamp is None else f", timestamp={self.timestamp}"
        return f"Frame({self.message!r}, qos={self.qos}{ts}, version={self.version}, size={self.size})"


cdef Frame make_frame(object message, FrameHead* h):
    cdef Frame f = Frame.__new__(Frame)
    f.message = message
    # QoS 3 is reserved; the reference decoder reads it as Fire.
    f.qos = (h.flags >> 6) if (h.flags >> 6) != 3 else QOS_FIRE
    f.timestamp = PyLong_FromUnsignedLongLong(h.timestamp) if h.flags & FLAG_TIMESTAMP else None
    f.version = h.flags & 0x07
    f.encrypted = (h.flags & FLAG_ENCRYPTED) != 0
    f.compressed = (h.flags & FLAG_COMPRESSED) != 0
    f.size = h.header + h.payload_len
    return f


cdef class _Input:
    """A read-only view of the bytes-like object given to a decode function."""

    cdef Py_buffer view
    cdef bint held
    cdef const unsigned char* data
    cdef Py_ssize_t length
    cdef object owner

    cdef int open(self, object data) except -1:
        if type(data) is bytes:
            self.owner = data
            self.data = <const unsigned char*>PyBytes_AS_STRING(data)
            self.length = PyBytes_GET_SIZE(data)
            return 0
        try:
            PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        except (TypeError, BufferError) as e:
            raise TypeError(f"expected a bytes-like object, not {type(data).__name__} ({e})") from None
        self.held = True
        self.data = <const unsigned char*>self.view.buf
        self.length = self.view.len
        return 0

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)
            self.held = False


def decode(data) -> Message:
    """The message in the frame at the start of `data` (bytes-like).

    Bytes after the frame's declared payload are ignored (WIRE.md §2). Bad input raises
    `DecodeError` with the byte offset and the field.
    """
    cdef Py_ssize_t consumed
    cdef FrameHead h
    cdef Reader r
    if type(data) is bytes:
        parse_header(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0, &h)
        r.data = <const unsigned char*>PyBytes_AS_STRING(data)
        r.pos = h.header
        r.end = h.header + h.payload_len
        r.base = 0
        return decode_payload(&r, 0)
    cdef _Input src = _Input()
    src.open(data)
    return decode_one(src.data, src.length, 0, &consumed)


def decode_frame(data) -> Frame:
    """The frame at the start of `data`, with its header fields (`Frame`)."""
    cdef FrameHead h
    cdef Reader r
    cdef _Input src = _Input()
    src.open(data)
    parse_header(src.data, src.length, 0, &h)
    r.data = src.data
    r.pos = h.header
    r.end = h.header + h.payload_len
    r.base = 0
    return make_frame(decode_payload(&r, 0), &h)


def frame_size(data, Py_ssize_t offset=0):
    """Total size of the frame starting at `offset` if its header is complete, else None.

    For stream reassembly: wait until that many bytes are buffered. A wrong magic byte
    raises `DecodeError`.
    """
    cdef _Input src = _Input()
    src.open(data)
    if offset < 0 or offset > src.length:
        raise ValueError(f"offset {offset} outside the buffer (length {src.length})")
    cdef const unsigned char* p = src.data + offset
    cdef Py_ssize_t n = src.length - offset
    if n < 1:
        return None
    if p[0] != MAGIC:
        decode_fail(offset, f"bad magic byte 0x{p[0]:02x} (expected 0x53)", "magic")
    if n < 4:
        return None
    cdef Py_ssize_t header = 12 if p[1] & FLAG_TIMESTAMP else 4
    return header + ((<Py_ssize_t>p[2] << 8) | p[3])


def decode_all(data, errors="raise"):
    """Every message in a buffer of frames laid back to back.

    errors="raise": the first bad frame raises `DecodeError` (its offset is in the buffer).
    errors="collect": returns (messages, errors). A frame whose header is intact but whose
    payload is malformed is skipped and its DecodeError recorded; a broken header (bad magic,
    truncation) is recorded and ends the walk, since nothing after it can be delimited.
    """
    cdef _Input src = _Input()
    cdef Py_ssize_t pos = 0
    cdef FrameHead h
    cdef Reader r
    cdef list messages = []
    cdef list problems
    cdef bint collect
    if errors == "raise":
        collect = False
    elif errors == "collect":
        collect = True
    else:
        raise ValueError(f"errors must be 'raise' or 'collect', not {errors!r}")
    src.open(data)
    if not collect:
        while pos < src.length:
            parse_header(src.data + pos, src.length - pos, pos, &h)
            r.data = src.data + pos
            r.pos = h.header
            r.end = h.header + h.payload_len
            r.base = pos
            messages.append(decode_payload(&r, 0))
            pos += h.header + h.payload_len
        return messages
    problems = []
    collect_frames(src.data, src.length, 0, -1, messages, problems)
    return messages, problems


def iter_frames(data):
    """Yield a `Frame` for each frame in a buffer of frames laid back to back.

    Raises `DecodeError` at the first bad frame (after yielding the good ones before it).
    """
    cdef _Input src = _Input()
    cdef Py_ssize_t pos = 0
    cdef FrameHead h
    cdef Reader r
    src.open(data)
    while pos < src.length:
        parse_header(src.data + pos, src.length - pos, pos, &h)
        r.data = src.data + pos
        r.pos = h.header
        r.end = h.header + h.payload_len
        r.base = pos
        frame = make_frame(decode_payload(&r, 0), &h)
        pos += h.header + h.payload_len
        yield frame

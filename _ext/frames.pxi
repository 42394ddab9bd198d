# Frame headers (docs/protocol.md §2) and the public decode functions.


cdef inline Py_ssize_t header_size(int flags) noexcept nogil:
    """4, or 12 when the flags announce the timestamp field."""
    return 12 if flags & FLAG_TIMESTAMP else 4


cdef int parse_header(const unsigned char* p, Py_ssize_t n, Py_ssize_t base, FrameHead* h) except -1:
    """Check and read the header of the frame at p[0:n]; the whole frame must be present."""
    if n < 1:
        decode_fail(base, "no frame: buffer is empty", "magic")
    if p[0] != MAGIC:
        decode_fail(base, f"bad magic byte 0x{p[0]:02x} (expected 0x53)", "magic")
    if n < 4:
        decode_fail(base + n, f"truncated frame header: {n} of 4 bytes", "header")
    h.flags = p[1]
    h.payload_len = load_u16(p + 2)
    h.header = header_size(h.flags)
    h.timestamp = 0
    if h.flags & FLAG_TIMESTAMP:
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


cdef object decode_next(const unsigned char* data, Py_ssize_t length, Py_ssize_t* pos):
    """The message of the frame at data[pos[0]:length]; moves pos[0] past that frame.

    Raises DecodeError with offsets counted from `data`. Then pos[0] is past the frame when
    only its payload was bad, and `length` when its header was: nothing after a broken header
    can be delimited.
    """
    cdef FrameHead h
    cdef Reader r
    cdef Py_ssize_t at = pos[0]
    pos[0] = length
    parse_header(data + at, length - at, at, &h)
    pos[0] = at + h.header + h.payload_len
    r.data = data + at
    r.pos = h.header
    r.end = h.header + h.payload_len
    r.base = at
    return decode_payload(&r, 0)


cdef class Frame:
    """A decoded frame: the message plus the header fields."""

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


def decode(data) -> Message:
    """The message in the frame at the start of `data` (bytes-like).

    Bytes after the frame's declared payload are ignored (docs/protocol.md §2). Bad input raises
    `DecodeError` with the byte offset and the field.
    """
    cdef Input src
    cdef Py_ssize_t pos = 0
    input_open(&src, data)
    try:
        return decode_next(src.data, src.length, &pos)
    finally:
        input_close(&src)


def decode_frame(data) -> Frame:
    """The frame at the start of `data`, with its header fields (`Frame`)."""
    cdef FrameHead h
    cdef Reader r
    cdef Input src
    input_open(&src, data)
    try:
        parse_header(src.data, src.length, 0, &h)
        r.data = src.data
        r.pos = h.header
        r.end = h.header + h.payload_len
        r.base = 0
        return make_frame(decode_payload(&r, 0), &h)
    finally:
        input_close(&src)


def frame_size(data, Py_ssize_t offset=0):
    """Total size of the frame starting at `offset` if its header is complete, else None.

    For stream reassembly: wait until that many bytes are buffered. A wrong magic byte
    raises `DecodeError`.
    """
    cdef Input src
    cdef const unsigned char* p
    cdef Py_ssize_t n
    input_open(&src, data)
    try:
        if offset < 0 or offset > src.length:
            raise ValueError(f"offset {offset} outside the buffer (length {src.length})")
        p = src.data + offset
        n = src.length - offset
        if n < 1:
            return None
        if p[0] != MAGIC:
            decode_fail(offset, f"bad magic byte 0x{p[0]:02x} (expected 0x53)", "magic")
        if n < 4:
            return None
        return header_size(p[1]) + load_u16(p + 2)
    finally:
        input_close(&src)


def decode_all(data, errors="raise"):
    """Every message in a buffer of frames laid back to back.

    errors="raise": the first bad frame raises `DecodeError` (its offset is in the buffer).
    errors="collect": returns (messages, errors). A frame whose header is intact but whose
    payload is malformed is skipped and its DecodeError recorded; a broken header (bad magic,
    truncation) is recorded and ends the walk, since nothing after it can be delimited.
    """
    cdef Input src
    cdef Py_ssize_t pos = 0
    cdef list messages = []
    cdef list problems
    cdef bint collect
    if errors == "raise":
        collect = False
    elif errors == "collect":
        collect = True
    else:
        raise ValueError(f"errors must be 'raise' or 'collect', not {errors!r}")
    input_open(&src, data)
    try:
        if not collect:
            while pos < src.length:
                messages.append(decode_next(src.data, src.length, &pos))
            return messages
        problems = []
        collect_frames(src.data, src.length, 0, -1, messages, problems)
        return messages, problems
    finally:
        input_close(&src)


def iter_frames(data):
    """Yield a `Frame` for each frame in a buffer of frames laid back to back.

    Raises `DecodeError` at the first bad frame (after yielding the good ones before it).
    """
    cdef Input src
    cdef Py_ssize_t pos = 0
    cdef FrameHead h
    cdef Reader r
    input_open(&src, data)
    try:
        while pos < src.length:
            parse_header(src.data + pos, src.length - pos, pos, &h)
            r.data = src.data + pos
            r.pos = h.header
            r.end = h.header + h.payload_len
            r.base = pos
            frame = make_frame(decode_payload(&r, 0), &h)
            pos += h.header + h.payload_len
            yield frame
    finally:
        input_close(&src)

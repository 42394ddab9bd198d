# Compiled batching (included at the end of codec.pyx); written with the WebRTC transport.
#
# Sending: a Batcher owns the pending DataChannel message: frames are encoded straight into it, and
# it hands back complete messages of at most `limit` bytes (a single frame larger than the limit
# travels alone). limit 0 means one frame per message, the form every reference peer expects.
#
# Receiving: decode_slice() decodes a received batch a bounded number of frames at a time, so a
# receiver can hand the event loop back between slices of a huge batch; frame_count() counts the
# frames of a batch from their headers alone.

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memmove


cdef class Batcher:
    """Packs complete CLASP frames back to back into DataChannel messages of at most ``limit`` bytes.

    ``add_message()`` / ``add_frame()`` append one frame and return the previous pending message
    (bytes) when the new frame did not fit beside it, else None. When ``full`` is true after an add,
    ``take()`` the pending message and send it. ``take()`` also flushes a partial message.
    """

    cdef WriteBuf wb
    cdef readonly Py_ssize_t limit
    cdef readonly Py_ssize_t pending_frames
    cdef readonly Py_ssize_t stopped_at
    cdef object left  # the message add_item() pushed out of the batch, until take_left()
    # has_room(): the bytes held below the batcher are held_by.<held_attribute>.
    cdef object held_by
    cdef object held_attribute
    cdef Py_ssize_t high_water_mark

    def __init__(self, Py_ssize_t limit=0):
        if limit < 0:
            raise ValueError(f"batch limit must be >= 0, got {limit}")
        self.limit = limit

    def __dealloc__(self):
        wb_free(&self.wb)

    @property
    def pending_size(self) -> int:
        """Bytes in the pending message."""
        return self.wb.len

    @property
    def full(self) -> bool:
        """True when the pending message has reached the limit and should be sent now."""
        return self._full()

    cdef inline bint _full(self) noexcept:
        return self.wb.len > 0 and self.wb.len >= self.limit

    cdef object _settle(self, Py_ssize_t start):
        # The new frame sits at [start, wb.len). If it pushed a non-empty message over the limit,
        # the message before it leaves and the frame starts the next one.
        cdef Py_ssize_t tail
        cdef object out
        if start > 0 and self.wb.len > self.limit:
            out = PyBytes_FromStringAndSize(self.wb.data, start)
            tail = self.wb.len - start
            memmove(self.wb.data, self.wb.data + start, tail)
            self.wb.len = tail
            self.pending_frames = 1
            return out
        self.pending_frames += 1
        return None

    def add_message(self, message, int qos=-1, timestamp=None):
        """Encode ``message`` (QoS ``qos``, -1 = its default) into the pending message."""
        cdef Py_ssize_t start = self.wb.len
        encode_message_into(&self.wb, message, qos, timestamp)  # leaves wb unchanged on error
        return self._settle(start)

    def add_frame(self, frame):
        """Append one complete, already encoded frame (bytes-like; exactly one frame, no trailing bytes)."""
        return self._add_frame(frame)

    cdef object _add_frame(self, frame):
        cdef Input src
        cdef const unsigned char* p
        cdef Py_ssize_t n, declared
        cdef Py_ssize_t start = self.wb.len
        input_open(&src, frame)
        try:
            p = src.data
            n = src.length
            if n < 4:
                raise _encode_error(f"a frame needs a 4-byte header, got {n} byte(s)")
            if p[0] != MAGIC:
                raise _encode_error(f"frame magic is 0x{p[0]:02x}, expected 0x53 (byte offset 0)")
            declared = header_size(p[1]) + load_u16(p + 2)
            if declared != n:
                raise _encode_error(
                    f"frame header declares {declared} bytes but {n} were given "
                    f"(add_frame takes exactly one complete frame)")
            wb_raw(&self.wb, <const char*>p, n)
        finally:
            input_close(&src)
        return self._settle(start)

    def set_high_water_mark(self, held_by, str held_attribute, Py_ssize_t high_water_mark):
        """What ``has_room()`` checks: ``getattr(held_by, held_attribute)``, the bytes held for
        sending below the batcher (a DataChannel's ``bufferedAmount``), plus ``pending_size``."""
        self.held_by = held_by
        self.held_attribute = held_attribute
        self.high_water_mark = high_water_mark

    def has_room(self):
        """True while the bytes held below plus ``pending_size`` are at most the high-water mark
        (False before ``set_high_water_mark()``)."""
        cdef Py_ssize_t held
        if self.held_by is None:
            return False
        held = getattr(self.held_by, self.held_attribute)
        return held + self.wb.len <= self.high_water_mark

    def add_item(self, item, int qos=-1, bint flush_scheduled=False):
        """``add_frame(item)`` for a bytes-like item, else ``add_message(item, qos)``: a channel's send.

        Returns False when nothing more is due: no message left the batch, the batch is not full,
        and a flush is scheduled if it holds anything (``flush_scheduled``). Else True: send
        ``take_left()`` when not None, then ``take()`` the batch if ``full``, else schedule its flush.
        """
        if self.left is not None:
            raise RuntimeError("add_item() before take_left() took the message pushed out of the batch")
        self.left = self._add_item(item, qos)
        return self.left is not None or self._full() or (self.wb.len > 0 and not flush_scheduled)

    cdef object _add_item(self, item, int qos):
        # A bytes-like item is a complete frame, anything else a message; returns what _settle does.
        cdef Py_ssize_t start
        if isinstance(item, (bytes, bytearray, memoryview)):
            return self._add_frame(item)
        start = self.wb.len
        encode_message_into(&self.wb, item, qos, None)  # leaves wb unchanged on error
        return self._settle(start)

    def take_left(self):
        """The message the last ``add_item()`` pushed out of the batch (None if none), once."""
        cdef object out = self.left
        self.left = None
        return out

    def add_many(self, list items, Py_ssize_t start, int qos, list ready):
        """Add ``items[start:]`` (messages, or complete frames as bytes-like objects) in order until
        a DataChannel message is ready: it goes on ``ready`` (with the full pending message, when
        the last frame filled it) and the index after the last item added is returned; at the end
        of the items, ``len(items)``. On an item that cannot be added, ``stopped_at`` is its index,
        the items before it are in, and the EncodeError propagates.
        """
        cdef Py_ssize_t i = start
        cdef object item, out
        if i < 0:
            raise IndexError(f"start must be >= 0, got {start}")
        # len() each time: encoding may run Python code (a value's __float__, say) that changes the list.
        while i < len(items):
            item = items[i]
            self.stopped_at = i
            out = self._add_item(item, qos)
            i += 1
            if out is not None:
                ready.append(out)
            if self._full():
                ready.append(self.take())
            if ready:
                break
        self.stopped_at = i
        return i

    def take(self):
        """The pending message as bytes (None when empty); the batcher starts a new one."""
        cdef object out
        if self.wb.len == 0:
            return None
        out = PyBytes_FromStringAndSize(self.wb.data, self.wb.len)
        self.wb.len = 0
        self.pending_frames = 0
        return out


cdef object _DecodeError = None  # clasp_fast.errors.DecodeError, imported on first use


cdef Py_ssize_t collect_frames(const unsigned char* data, Py_ssize_t length, Py_ssize_t pos,
                               Py_ssize_t max_frames, list messages, list problems) except -2:
    """Decode frames from data[pos:length] into `messages`, malformed ones into `problems`.

    Stops after `max_frames` frames (-1: no limit) and returns the offset of the next frame, or
    `length` when the buffer is done. A frame whose header is intact but whose payload is
    malformed is recorded and skipped; a broken header is recorded and ends the walk (nothing
    after it can be delimited).
    """
    cdef Py_ssize_t done = 0
    global _DecodeError
    if _DecodeError is None:
        from clasp_fast.errors import DecodeError
        _DecodeError = DecodeError
    while pos < length and done != max_frames:
        # One try block around the walk (entering one costs time): an error leaves the inner
        # loop, is recorded, and the walk goes on where decode_next left `pos`.
        try:
            while pos < length and done != max_frames:
                done += 1
                messages.append(decode_next(data, length, &pos))
        except _DecodeError as e:
            problems.append(e)
    return pos


def decode_slice(data, Py_ssize_t start=0, Py_ssize_t max_frames=-1):
    """Decode at most `max_frames` frames (-1: all) of a batch, from byte offset `start`.

    Returns (messages, errors, end): `end` is where the next slice starts, len(data) once the
    batch is done. Errors are DecodeErrors with offsets from the start of `data`, as
    decode_all(data, errors="collect") reports them.
    """
    cdef Input src
    cdef list messages = []
    cdef list problems = []
    cdef Py_ssize_t end
    input_open(&src, data)
    try:
        if start < 0 or start > src.length:
            raise ValueError(f"start {start} outside the buffer (length {src.length})")
        if max_frames == 0 or max_frames < -1:
            raise ValueError(f"max_frames must be positive or -1, got {max_frames}")
        end = collect_frames(src.data, src.length, start, max_frames, messages, problems)
    finally:
        input_close(&src)
    return messages, problems, end


def frame_count(data) -> int:
    """Frames in a batch, counted from their headers (a broken header counts once and ends it)."""
    cdef Input src
    input_open(&src, data)
    try:
        return count_frames(src.data, src.length)
    finally:
        input_close(&src)


cdef Py_ssize_t count_frames(const unsigned char* data, Py_ssize_t length) noexcept:
    """frame_count() on raw bytes."""
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t payload
    while pos < length:
        count += 1
        if data[pos] != MAGIC or length - pos < 4:
            break
        payload = load_u16(data + pos + 2)
        if payload == 0:
            break  # an empty payload is a broken header too
        pos += header_size(data[pos + 1]) + payload
    return count

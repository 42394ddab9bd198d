# A read-only view of a caller's bytes-like object, a bounds-checked read cursor and a growable
# write buffer, all big-endian.
#
# Everything here is `cdef inline`, so the structs and functions compile into each module that
# cimports them (codec, dispatch, sctp, dtls); there is no buffers module.
# setup.py turns Cython's own bounds checks off: every read in the codec goes through
# `need()` (or a reader that calls it), which is what keeps decoding inside the buffer.

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


# ---------------------------------------------------------------------------------------------
# Input: the bytes of a bytes-like argument, held until input_close()

cdef struct Input:
    const unsigned char* data
    Py_ssize_t length
    Py_buffer view
    bint held                   # view must be released (not for bytes: the caller holds those)


cdef inline int input_open(Input* src, object data) except -1:
    """Point `src` at the bytes of `data`; pair with input_close() (in a finally)."""
    src.held = False
    if type(data) is bytes:
        src.data = <const unsigned char*>PyBytes_AS_STRING(data)
        src.length = PyBytes_GET_SIZE(data)
        return 0
    try:
        PyObject_GetBuffer(data, &src.view, PyBUF_SIMPLE)
    except (TypeError, BufferError) as e:
        raise TypeError(f"expected a bytes-like object, not {type(data).__name__} ({e})") from None
    src.held = True
    src.data = <const unsigned char*>src.view.buf
    src.length = src.view.len
    return 0


cdef inline void input_close(Input* src) noexcept:
    if src.held:
        src.held = False
        PyBuffer_Release(&src.view)


# ---------------------------------------------------------------------------------------------
# Big-endian loads and stores on raw pointers (the caller has checked the length)

cdef inline unsigned int load_u16(const unsigned char* p) noexcept nogil:
    return (<unsigned int>p[0] << 8) | p[1]


cdef inline uint32_t load_u32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3])


cdef inline uint64_t load_u64(const unsigned char* p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
            | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
            | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline void store_u16(char* p, unsigned int v) noexcept nogil:
    p[0] = <char>((v >> 8) & 0xFF)
    p[1] = <char>(v & 0xFF)


cdef inline void store_u32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>((v >> 24) & 0xFF)
    p[1] = <char>((v >> 16) & 0xFF)
    p[2] = <char>((v >> 8) & 0xFF)
    p[3] = <char>(v & 0xFF)


cdef inline void store_u64(char* p, uint64_t v) noexcept nogil:
    p[0] = <char>((v >> 56) & 0xFF)
    p[1] = <char>((v >> 48) & 0xFF)
    p[2] = <char>((v >> 40) & 0xFF)
    p[3] = <char>((v >> 32) & 0xFF)
    p[4] = <char>((v >> 24) & 0xFF)
    p[5] = <char>((v >> 16) & 0xFF)
    p[6] = <char>((v >> 8) & 0xFF)
    p[7] = <char>(v & 0xFF)


# ---------------------------------------------------------------------------------------------
# Read cursor

cdef struct Reader:
    const unsigned char* data   # start of the caller's buffer
    Py_ssize_t pos              # next byte to read (index into data)
    Py_ssize_t end              # reads must stay below this index
    Py_ssize_t base             # offset of data[0] in the caller's buffer (for error offsets)


cdef inline int decode_fail(Py_ssize_t offset, str reason, str field) except -1:
    from clasp_fast.errors import DecodeError
    raise DecodeError(reason, offset, field)


cdef inline int need(Reader* r, Py_ssize_t n, str field) except -1:
    if r.end - r.pos < n:
        decode_fail(r.base + r.pos,
                    f"truncated: {n} byte(s) needed, {r.end - r.pos} left", field)
    return 0


cdef inline int rd_u8(Reader* r, str field) except -1:
    need(r, 1, field)
    r.pos += 1
    return r.data[r.pos - 1]


cdef inline int rd_u16(Reader* r, str field) except -1:
    need(r, 2, field)
    r.pos += 2
    return <int>load_u16(r.data + r.pos - 2)


cdef inline int64_t rd_u32(Reader* r, str field) except -1:
    need(r, 4, field)
    r.pos += 4
    return <int64_t>load_u32(r.data + r.pos - 4)


cdef inline int rd_u64(Reader* r, uint64_t* out, str field) except -1:
    need(r, 8, field)
    out[0] = load_u64(r.data + r.pos)
    r.pos += 8
    return 0


cdef inline int rd_f64(Reader* r, double* out, str field) except -1:
    cdef uint64_t bits
    need(r, 8, field)
    bits = load_u64(r.data + r.pos)
    r.pos += 8
    memcpy(out, &bits, 8)
    return 0


cdef inline int rd_f32(Reader* r, double* out, str field) except -1:
    cdef uint32_t bits
    cdef float value
    bits = <uint32_t>rd_u32(r, field)
    memcpy(&value, &bits, 4)
    out[0] = value
    return 0


# ---------------------------------------------------------------------------------------------
# Write buffer

cdef struct WriteBuf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef inline int wb_grow(WriteBuf* wb, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = wb.cap * 2 if wb.cap else 256
    while cap < wb.len + extra:
        cap *= 2
    cdef char* data = <char*>PyMem_Realloc(wb.data, cap)
    if data == NULL:
        raise MemoryError()
    wb.data = data
    wb.cap = cap
    return 0


cdef inline int wb_reserve(WriteBuf* wb, Py_ssize_t extra) except -1:
    if wb.len + extra > wb.cap:
        wb_grow(wb, extra)
    return 0


cdef inline void wb_free(WriteBuf* wb) noexcept:
    PyMem_Free(wb.data)
    wb.data = NULL
    wb.len = 0
    wb.cap = 0


cdef inline int wb_u8(WriteBuf* wb, unsigned int v) except -1:
    wb_reserve(wb, 1)
    wb.data[wb.len] = <char>(v & 0xFF)
    wb.len += 1
    return 0


cdef inline int wb_u16(WriteBuf* wb, unsigned int v) except -1:
    wb_reserve(wb, 2)
    store_u16(wb.data + wb.len, v)
    wb.len += 2
    return 0


cdef inline int wb_u32(WriteBuf* wb, uint32_t v) except -1:
    wb_reserve(wb, 4)
    store_u32(wb.data + wb.len, v)
    wb.len += 4
    return 0


cdef inline int wb_u64(WriteBuf* wb, uint64_t v) except -1:
    wb_reserve(wb, 8)
    store_u64(wb.data + wb.len, v)
    wb.len += 8
    return 0


cdef inline int wb_f64(WriteBuf* wb, double v) except -1:
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    return wb_u64(wb, bits)


cdef inline int wb_raw(WriteBuf* wb, const char* src, Py_ssize_t n) except -1:
    wb_reserve(wb, n)
    if n:
        memcpy(wb.data + wb.len, src, n)
    wb.len += n
    return 0

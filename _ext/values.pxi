# CLASP values (docs/protocol.md §4): Python object <-> type code + data.
#
# Encoding always emits i64 (0x05) for ints and f64 (0x07) for floats; decoding accepts every
# width and widens. Containers may nest MAX_NESTING deep (a list directly inside a SET value is
# depth 1); deeper values are refused both ways, so the decoder's recursion stays bounded.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    # Declared without an exception spec: put_utf8 checks for NULL and raises its own error.
    const char* utf8_of_str "PyUnicode_AsUTF8AndSize" (object s, Py_ssize_t* size)
    void PyErr_Clear()
    PyObject* utf8_to_str "PyUnicode_DecodeUTF8" (const char* s, Py_ssize_t size, const char* errors)


MAX_NESTING = 64
"""Deepest nesting of arrays/maps (and of bundles) accepted by encode and decode."""

cdef enum:
    C_MAX_NESTING = 64
    V_NULL = 0x00
    V_BOOL = 0x01
    V_I8 = 0x02
    V_I16 = 0x03
    V_I32 = 0x04
    V_I64 = 0x05
    V_F32 = 0x06
    V_F64 = 0x07
    V_STR = 0x08
    V_BYTES = 0x09
    V_ARRAY = 0x0A
    V_MAP = 0x0B


class _BadValue(Exception):
    """Internal: an unencodable value; `path` grows while unwinding out of containers."""

    def __init__(self, reason):
        self.reason = reason
        self.path = []


cdef object _encode_error(str reason):
    from clasp_fast.errors import EncodeError
    return EncodeError(reason)


cdef object _bad_value_error(object bad, str field):
    path = "".join(reversed(bad.path))
    return _encode_error(f"{bad.reason} at {field}{path}")


cdef inline int value_code(object v) except -1:
    """The wire type code for `v`, or raise _BadValue."""
    cdef type t = type(v)
    if t is float:
        return V_F64
    if t is int:
        return V_I64
    if t is str:
        return V_STR
    if v is None:
        return V_NULL
    if t is bool:
        return V_BOOL
    if t is dict:
        return V_MAP
    if t is list or t is tuple:
        return V_ARRAY
    if t is bytes or t is bytearray or t is memoryview:
        return V_BYTES
    return _value_code_slow(v)


cdef int _value_code_slow(object v) except -1:
    # Subclasses and numpy scalars.
    if isinstance(v, bool):
        return V_BOOL
    if isinstance(v, float):
        return V_F64
    if isinstance(v, int):
        return V_I64
    if isinstance(v, str):
        return V_STR
    if isinstance(v, (bytes, bytearray, memoryview)):
        return V_BYTES
    if isinstance(v, (list, tuple)):
        return V_ARRAY
    if isinstance(v, dict):
        return V_MAP
    tname = type(v).__module__ + "." + type(v).__qualname__
    if tname.startswith("numpy."):
        if tname == "numpy.bool" or tname == "numpy.bool_":
            return V_BOOL
        if hasattr(v, "__index__"):
            return V_I64
        if hasattr(v, "__float__") and hasattr(v, "dtype") and v.dtype.kind == "f":
            return V_F64
    raise _BadValue(f"unsupported value type {type(v).__name__}")


cdef int put_utf8(WriteBuf* wb, object s, str what, bint as_value) except -1:
    """u16 length + UTF-8 bytes of str `s`. Problems raise _BadValue (as_value) or EncodeError."""
    cdef Py_ssize_t n
    cdef const char* p = utf8_of_str(s, &n)
    if p == NULL:
        PyErr_Clear()
        reason = f"{what} is not encodable as UTF-8 (it holds a lone surrogate)"
        if as_value:
            raise _BadValue(reason)
        raise _encode_error(reason)
    if n > 0xFFFF:
        reason = f"{what} of {n} UTF-8 bytes exceeds 65535"
        if as_value:
            raise _BadValue(reason)
        raise _encode_error(reason)
    wb_reserve(wb, 2 + n)
    store_u16(wb.data + wb.len, <unsigned int>n)
    memcpy(wb.data + wb.len + 2, p, n)
    wb.len += 2 + n
    return 0


cdef inline int encode_utf8(WriteBuf* wb, object s, str what) except -1:
    return put_utf8(wb, s, what, True)


cdef int encode_value_data(WriteBuf* wb, object v, int code, int depth) except -1:
    """The data of value `v` whose type code `code` came from value_code()."""
    cdef int overflow = 0
    cdef long long i
    cdef Py_ssize_t n, k
    cdef int item_code
    cdef bytes raw
    if code == V_F64:
        if type(v) is float:
            return wb_f64(wb, PyFloat_AS_DOUBLE(v))
        return wb_f64(wb, float(v))
    if code == V_I64:
        if type(v) is not int:
            v = v.__index__()
        i = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow:
            raise _BadValue(f"int {v} out of i64 range")
        return wb_u64(wb, <uint64_t>i)
    if code == V_STR:
        return encode_utf8(wb, v, "string")
    if code == V_NULL:
        return 0
    if code == V_BOOL:
        return wb_u8(wb, 1 if v else 0)
    if code == V_BYTES:
        raw = v if type(v) is bytes else bytes(v)
        n = PyBytes_GET_SIZE(raw)
        if n > 0xFFFF:
            raise _BadValue(f"bytes of length {n} exceeds 65535")
        wb_u16(wb, <unsigned int>n)
        return wb_raw(wb, PyBytes_AS_STRING(raw), n)
    if depth >= C_MAX_NESTING:
        raise _BadValue(f"nesting deeper than {C_MAX_NESTING}")
    if code == V_ARRAY:
        n = len(v)
        if n > 0xFFFF:
            raise _BadValue(f"array of {n} items exceeds 65535")
        wb_u16(wb, <unsigned int>n)
        k = 0
        for item in v:
            try:
                item_code = value_code(item)
                wb_u8(wb, item_code)
                encode_value_data(wb, item, item_code, depth + 1)
            except _BadValue as bad:
                bad.path.append(f"[{k}]")
                raise
            k += 1
        return 0
    if code == V_MAP:
        n = len(v)
        if n > 0xFFFF:
            raise _BadValue(f"map of {n} entries exceeds 65535")
        wb_u16(wb, <unsigned int>n)
        for key, item in v.items():
            try:
                if not isinstance(key, str):
                    raise _BadValue(f"map key {key!r} is not a str")
                encode_utf8(wb, key, "map key")
                item_code = value_code(item)
                wb_u8(wb, item_code)
                encode_value_data(wb, item, item_code, depth + 1)
            except _BadValue as bad:
                bad.path.append(f"[{key!r}]")
                raise
        return 0
    raise _BadValue(f"unsupported value type code {code}")


cdef int encode_value(WriteBuf* wb, object v, str field) except -1:
    """Type code + data of `v`; any problem becomes an EncodeError naming `field`."""
    cdef int code
    try:
        code = value_code(v)
        wb_u8(wb, code)
        encode_value_data(wb, v, code, 0)
    except _BadValue as bad:
        raise _bad_value_error(bad, field) from None
    return 0


# ---------------------------------------------------------------------------------------------
# Decoding

cdef object rd_str(Reader* r, str field):
    """u16 length + UTF-8 string; invalid UTF-8 is a DecodeError."""
    cdef int n = rd_u16(r, field)
    need(r, n, field)
    cdef const char* p = <const char*>(r.data + r.pos)
    cdef PyObject* s = utf8_to_str(p, n, NULL)
    if s == NULL:
        PyErr_Clear()
        _invalid_utf8(r, p, n, field)
    r.pos += n
    text = <object>s
    Py_DECREF(text)  # utf8_to_str returned a new reference; `text` holds its own
    return text


cdef int _invalid_utf8(Reader* r, const char* p, Py_ssize_t n, str field) except -1:
    try:
        PyBytes_FromStringAndSize(p, n).decode("utf-8")
    except UnicodeDecodeError as e:
        decode_fail(r.base + r.pos + e.start, f"invalid UTF-8 in string ({e.reason})", field)
    decode_fail(r.base + r.pos, "invalid UTF-8 in string", field)


cdef object rd_opt_str(Reader* r, str field):
    """A string where "" means absent (None)."""
    s = rd_str(r, field)
    return s if s else None


cdef object decode_value(Reader* r, int code, int depth, str field):
    """The data of a value whose type code has been read already."""
    cdef uint64_t u
    cdef double d
    cdef Py_ssize_t n, k, start
    cdef int c
    if code == V_F64:
        rd_f64(r, &d, field)
        return PyFloat_FromDouble(d)
    if code == V_I64:
        rd_u64(r, &u, field)
        return PyLong_FromLongLong(<long long>u)
    if code == V_STR:
        return rd_str(r, field)
    if code == V_NULL:
        return None
    if code == V_BOOL:
        return rd_u8(r, field) != 0
    if code == V_I8:
        return PyLong_FromLongLong(<int8_t>rd_u8(r, field))
    if code == V_I16:
        return PyLong_FromLongLong(<int16_t>rd_u16(r, field))
    if code == V_I32:
        return PyLong_FromLongLong(<int32_t>rd_u32(r, field))
    if code == V_F32:
        rd_f32(r, &d, field)
        return PyFloat_FromDouble(d)
    if code == V_BYTES:
        n = rd_u16(r, field)
        need(r, n, field)
        start = r.pos
        r.pos += n
        return PyBytes_FromStringAndSize(<const char*>(r.data + start), n)
    if code == V_ARRAY or code == V_MAP:
        if depth >= C_MAX_NESTING:
            decode_fail(r.base + r.pos - 1, f"value nesting deeper than {C_MAX_NESTING}", field)
        n = rd_u16(r, field)
        if code == V_ARRAY:
            items = []
            for k in range(n):
                c = rd_u8(r, field)
                items.append(decode_value(r, c, depth + 1, field))
            return items
        mapping = {}
        for k in range(n):
            key = rd_str(r, field)
            c = rd_u8(r, field)
            mapping[key] = decode_value(r, c, depth + 1, field)
        return mapping
    decode_fail(r.base + r.pos - 1, f"unknown value type 0x{code:02x}", field)


cdef object rd_value(Reader* r, str field):
    """Type code + data."""
    cdef int code = rd_u8(r, field)
    return decode_value(r, code, 0, field)

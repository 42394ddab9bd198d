# The C interface of clasp_fast._codec (built from codec.pyx): what another compiled module
# reaches with `from clasp_fast._codec cimport ...`, calling in C and reading message fields
# straight from the object structs.
#
# The file is named after the module it describes, not after its source: Cython finds the
# .pxd of a module by the module's full name ("clasp_fast._codec.pxd" in the include path).

from libc.stdint cimport uint64_t

from buffers cimport Reader, WriteBuf


cdef struct FrameHead:
    int flags
    Py_ssize_t header        # 4, or 12 with the timestamp field
    Py_ssize_t payload_len
    uint64_t timestamp


# ---------------------------------------------------------------------------------------------
# Messages (messages.pxi) and their parts

cdef class _Record:
    pass


cdef class Message(_Record):
    pass


cdef class Ttl:
    cdef readonly str mode
    cdef readonly object secs


cdef class SignalMeta(_Record):
    cdef public object unit
    cdef public object range
    cdef public object default
    cdef public object description


cdef class SignalInfo(_Record):
    cdef public object address
    cdef public object signal_type
    cdef public object datatype
    cdef public object access
    cdef public object meta


cdef class SubscribeOptions(_Record):
    cdef public object max_rate
    cdef public object epsilon
    cdef public object history
    cdef public object window


cdef class Param(_Record):
    cdef public object address
    cdef public object value
    cdef public object revision
    cdef public object writer
    cdef public object timestamp


cdef class Hello(Message):
    cdef public object name
    cdef public object features
    cdef public object version
    cdef public object token


cdef class Welcome(Message):
    cdef public object session
    cdef public object name
    cdef public object features
    cdef public object time
    cdef public object version
    cdef public object token


cdef class Announce(Message):
    cdef public object namespace
    cdef public object signals


cdef class FederationSync(Message):
    cdef public object op
    cdef public object patterns
    cdef public object revisions
    cdef public object since_revision
    cdef public object origin


cdef class Subscribe(Message):
    cdef public object id
    cdef public object pattern
    cdef public object types
    cdef public object options


cdef class Unsubscribe(Message):
    cdef public object id


cdef class Publish(Message):
    cdef public object address
    cdef public object signal
    cdef public object value
    cdef public object samples
    cdef public object timestamp
    cdef public object id
    cdef public object phase
    cdef public object rate


cdef class Set(Message):
    cdef public object address
    cdef public object value
    cdef public object revision
    cdef public object lock
    cdef public object unlock
    cdef public object ttl


cdef class Get(Message):
    cdef public object address


cdef class Snapshot(Message):
    cdef public object params


cdef class Replay(Message):
    cdef public object pattern
    cdef public object from_
    cdef public object to
    cdef public object limit
    cdef public object types


cdef class Bundle(Message):
    cdef public object messages
    cdef public object timestamp


cdef class Sync(Message):
    cdef public object t1
    cdef public object t2
    cdef public object t3


cdef class Ping(Message):
    pass


cdef class Pong(Message):
    pass


cdef class Ack(Message):
    cdef public object address
    cdef public object revision
    cdef public object locked
    cdef public object holder
    cdef public object correlation_id


cdef class Error(Message):
    cdef public object code
    cdef public object message
    cdef public object address
    cdef public object correlation_id


cdef class Query(Message):
    cdef public object pattern


cdef class Result(Message):
    cdef public object signals


cdef class Frame:
    cdef readonly object message
    cdef readonly int qos
    cdef readonly object timestamp
    cdef readonly int version
    cdef readonly bint encrypted
    cdef readonly bint compressed
    cdef readonly Py_ssize_t size


# ---------------------------------------------------------------------------------------------
# Encoding and decoding

cdef int encode_message_into(WriteBuf* wb, object message, int qos, object timestamp) except -1
    # Append one complete frame for `message` to `wb` (qos < 0: its default QoS). Raises
    # EncodeError and leaves `wb` as it was on bad content.

cdef int parse_header(const unsigned char* p, Py_ssize_t n, Py_ssize_t base, FrameHead* h) except -1
    # Check and read the header of the frame at p[0:n] (base: its offset, for errors); the
    # whole frame must be present.

cdef object decode_payload(Reader* r, int depth)
    # One message from the payload bytes r.pos..r.end.

cdef object decode_next(const unsigned char* data, Py_ssize_t length, Py_ssize_t* pos)
    # The message of the frame at data[pos[0]:length]; moves pos[0] past that frame. On a
    # DecodeError pos[0] is past the frame when only its payload was bad (the walk can go on),
    # and `length` when its header was broken (nothing after it can be delimited).

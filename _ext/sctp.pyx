# SCTP packets for WebRTC data channels (RFC 4960 / RFC 9260, RFC 3758): parse and build in C.
#
# parse_packet() checks the common header and CRC32c, then walks the chunks. DATA chunks become
# DataChunk objects, SACK and FORWARD-TSN chunks become tuples; every other chunk type is handed back
# as (type, flags, body) for the Python side to interpret. Every read is checked against the packet
# length through the Reader in buffers.pxd; a malformed packet raises DecodeError with the offset.
#
# build_packet() writes one packet: common header, pre-built control chunks (SACK, FORWARD-TSN),
# then DATA chunks straight from DataChunk fields, padded to 4 bytes, then the checksum.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy, memset

from buffers cimport Reader, need, rd_u8, rd_u16, rd_u32, decode_fail
from clasp_fast._dtls cimport RecordLayer

cdef enum:
    COMMON_HEADER = 12
    CHUNK_HEADER = 4
    DATA_HEADER = 16
    PROTOCOL_DCEP = 50  # the payload protocol of the data channel establishment protocol (RFC 8832)

CHUNK_DATA = 0
CHUNK_SACK = 3
CHUNK_FORWARD_TSN = 192
COMMON_HEADER_LENGTH = COMMON_HEADER
DATA_CHUNK_HEADER_LENGTH = DATA_HEADER


# ---------------------------------------------------------------------------------------------
# CRC32c (Castagnoli), reflected polynomial 0x82F63B78, slicing by 8.

cdef uint32_t CRC_TABLE[8][256]


cdef void _crc_init() noexcept:
    cdef uint32_t crc
    cdef int i, j, k
    for i in range(256):
        crc = i
        for j in range(8):
            crc = (crc >> 1) ^ (<uint32_t>0x82F63B78 if crc & 1 else <uint32_t>0)
        CRC_TABLE[0][i] = crc
    for i in range(256):
        crc = CRC_TABLE[0][i]
        for k in range(1, 8):
            crc = CRC_TABLE[0][crc & 0xFF] ^ (crc >> 8)
            CRC_TABLE[k][i] = crc


_crc_init()


cdef inline uint32_t _crc_update(uint32_t crc, const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t lo, hi
    while n >= 8:
        lo = crc ^ (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24))
        hi = <uint32_t>p[4] | (<uint32_t>p[5] << 8) | (<uint32_t>p[6] << 16) | (<uint32_t>p[7] << 24)
        crc = (CRC_TABLE[7][lo & 0xFF] ^ CRC_TABLE[6][(lo >> 8) & 0xFF]
               ^ CRC_TABLE[5][(lo >> 16) & 0xFF] ^ CRC_TABLE[4][lo >> 24]
               ^ CRC_TABLE[3][hi & 0xFF] ^ CRC_TABLE[2][(hi >> 8) & 0xFF]
               ^ CRC_TABLE[1][(hi >> 16) & 0xFF] ^ CRC_TABLE[0][hi >> 24])
        p += 8
        n -= 8
    while n > 0:
        crc = CRC_TABLE[0][(crc ^ p[0]) & 0xFF] ^ (crc >> 8)
        p += 1
        n -= 1
    return crc


# The CPU's CRC32C instruction where there is one (x86-64 with SSE 4.2, checked at run time): about
# ten times the table's speed, which matters for 16 KiB packets. Same polynomial, same result.
cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    #include <string.h>
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <nmmintrin.h>
    #define CF_HW_CRC 1
    __attribute__((target("sse4.2")))
    static uint32_t cf_crc32c_hw(uint32_t crc, const unsigned char* p, Py_ssize_t n) {
        uint64_t c = crc;
        while (n >= 8) {
            uint64_t word;
            memcpy(&word, p, 8);
            c = _mm_crc32_u64(c, word);
            p += 8;
            n -= 8;
        }
        crc = (uint32_t)c;
        while (n > 0) {
            crc = _mm_crc32_u8(crc, *p);
            p++;
            n--;
        }
        return crc;
    }
    static int cf_crc32c_hw_available(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("sse4.2");
    }
    #else
    #define CF_HW_CRC 0
    static uint32_t cf_crc32c_hw(uint32_t crc, const unsigned char* p, Py_ssize_t n) { return crc; }
    static int cf_crc32c_hw_available(void) { return 0; }
    #endif
    """
    uint32_t cf_crc32c_hw(uint32_t crc, const unsigned char* p, Py_ssize_t n) noexcept nogil
    int cf_crc32c_hw_available() noexcept nogil


cdef bint _hw_crc = cf_crc32c_hw_available() != 0
#: Whether CRC32c uses the CPU's instruction (else the slicing-by-8 table).
_HARDWARE_CRC32C = bool(_hw_crc)


def _use_hardware_crc32c(bint enabled) -> bool:
    """Use the CPU's CRC32C instruction (when it has one) or the table; returns what is in use."""
    global _hw_crc
    _hw_crc = enabled and cf_crc32c_hw_available() != 0
    return bool(_hw_crc)


cdef inline uint32_t _crc(uint32_t crc, const unsigned char* p, Py_ssize_t n) noexcept nogil:
    if _hw_crc:
        return cf_crc32c_hw(crc, p, n)
    return _crc_update(crc, p, n)


cdef inline uint32_t _packet_crc(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    # The checksum field (bytes 8..11) counts as zero.
    cdef unsigned char[4] zero
    zero[0] = 0
    zero[1] = 0
    zero[2] = 0
    zero[3] = 0
    cdef uint32_t crc = ~(<uint32_t>0)
    crc = _crc(crc, p, 8)
    crc = _crc(crc, &zero[0], 4)
    crc = _crc(crc, p + 12, n - 12)
    return ~crc


def crc32c(data) -> int:
    """CRC32c of ``data`` (bytes-like), as SCTP computes it."""
    cdef const unsigned char[::1] view = data
    if view.shape[0] == 0:
        return 0
    return ~_crc(~(<uint32_t>0), &view[0], view.shape[0])


# ---------------------------------------------------------------------------------------------
# DATA chunk

cdef class DataChunk:
    """One DATA chunk: the wire fields plus the sender's bookkeeping (RFC 4960 section 6).

    The attribute names match aiortc's ``DataChunk`` so that aiortc's inbound reassembly and its
    SACK, abandon and retransmission code work on these objects unchanged.
    """

    cdef public int flags
    cdef public uint32_t tsn
    cdef public int stream_id
    cdef public int stream_seq
    cdef public uint32_t protocol
    cdef public bytes user_data
    # sender bookkeeping
    cdef public bint _acked
    cdef public bint _abandoned
    cdef public bint _in_flight
    cdef public bint _retransmit
    cdef public Py_ssize_t _book_size
    cdef public int _misses
    cdef public int _sent_count
    cdef public object _expiry
    cdef public object _max_retransmits
    cdef public object _sent_time

    type = CHUNK_DATA

    def __init__(self, int flags=0, uint32_t tsn=0, int stream_id=0, int stream_seq=0,
                 uint32_t protocol=0, bytes user_data=b""):
        self.flags = flags
        self.tsn = tsn
        self.stream_id = stream_id
        self.stream_seq = stream_seq
        self.protocol = protocol
        self.user_data = user_data
        self._book_size = chunk_size(len(user_data))

    def __bytes__(self) -> bytes:
        cdef Py_ssize_t n = _padded(DATA_HEADER + PyBytes_GET_SIZE(self.user_data))
        out = PyBytes_FromStringAndSize(NULL, n)
        _write_data(<unsigned char*>PyBytes_AS_STRING(out), self)
        return out

    def __repr__(self) -> str:
        return (f"DataChunk(flags={self.flags}, tsn={self.tsn}, stream_id={self.stream_id}, "
                f"stream_seq={self.stream_seq}, length={len(self.user_data)})")


cdef inline Py_ssize_t _padded(Py_ssize_t n) noexcept nogil:
    return (n + 3) & ~(<Py_ssize_t>3)


def chunk_size(Py_ssize_t user_data_length) -> int:
    """Bytes a DATA chunk with this much user data takes in a packet, padding included."""
    return _padded(DATA_HEADER + user_data_length)


cdef inline void _put_u16(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void _put_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef Py_ssize_t _write_data(unsigned char* p, DataChunk chunk) except -1:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(chunk.user_data)
    cdef Py_ssize_t length = DATA_HEADER + size
    p[0] = 0
    p[1] = chunk.flags & 0xFF
    _put_u16(p + 2, <uint32_t>length)
    _put_u32(p + 4, chunk.tsn)
    _put_u16(p + 8, <uint32_t>chunk.stream_id)
    _put_u16(p + 10, <uint32_t>chunk.stream_seq)
    _put_u32(p + 12, chunk.protocol)
    memcpy(p + DATA_HEADER, PyBytes_AS_STRING(chunk.user_data), size)
    memset(p + length, 0, _padded(length) - length)
    return _padded(length)


# ---------------------------------------------------------------------------------------------
# Building

cdef Py_ssize_t _packet_length(bytes control, list chunks) except -1:
    """Bytes of the packet holding ``control`` then the DataChunks ``chunks`` (checked)."""
    cdef Py_ssize_t total = COMMON_HEADER + PyBytes_GET_SIZE(control)
    cdef DataChunk chunk
    for item in chunks:
        chunk = <DataChunk?>item
        if PyBytes_GET_SIZE(chunk.user_data) > 0xFFFF - DATA_HEADER:
            raise ValueError(f"DATA chunk TSN {chunk.tsn}: {len(chunk.user_data)} bytes of user data do not fit one chunk")
        total += _padded(DATA_HEADER + PyBytes_GET_SIZE(chunk.user_data))
    if PyBytes_GET_SIZE(control) & 3:
        raise ValueError("control chunks must be padded to a multiple of 4 bytes")
    return total


cdef void _write_packet(unsigned char* p, Py_ssize_t total, int source_port, int destination_port,
                        uint32_t verification_tag, bytes control, list chunks) noexcept:
    # ``total`` is _packet_length(control, chunks): the chunks were checked there.
    _put_u16(p, <uint32_t>source_port)
    _put_u16(p + 2, <uint32_t>destination_port)
    _put_u32(p + 4, verification_tag)
    cdef Py_ssize_t pos = COMMON_HEADER
    memcpy(p + pos, PyBytes_AS_STRING(control), PyBytes_GET_SIZE(control))
    pos += PyBytes_GET_SIZE(control)
    for item in chunks:
        pos += _write_data(p + pos, <DataChunk>item)
    cdef uint32_t crc = _packet_crc(p, total)
    # The checksum is stored least significant byte first (RFC 4960 appendix B).
    p[8] = crc & 0xFF
    p[9] = (crc >> 8) & 0xFF
    p[10] = (crc >> 16) & 0xFF
    p[11] = (crc >> 24) & 0xFF


def build_packet(int source_port, int destination_port, uint32_t verification_tag,
                 bytes control, list chunks) -> bytes:
    """One SCTP packet: ``control`` (ready, padded chunks such as a SACK) then every DataChunk in ``chunks``.

    The caller keeps the packet within the path MTU; this function only checks the 16-bit
    chunk length field.
    """
    cdef Py_ssize_t total = _packet_length(control, chunks)
    out = PyBytes_FromStringAndSize(NULL, total)
    _write_packet(<unsigned char*>PyBytes_AS_STRING(out), total, source_port, destination_port,
                  verification_tag, control, chunks)
    return out


def seal_packets(RecordLayer layer, int source_port, int destination_port, uint32_t verification_tag,
                 list packets):
    """The DTLS records of the SCTP packets ``packets`` ((control, chunks) pairs, as build_packet
    takes them), each packet written straight into its record and encrypted there by ``layer``
    (one allocation and no copy per packet). Returns ``(records, data_chunks)``.

    ``layer`` must use the EVP backend (``layer.backend == "evp"``); it raises as
    :meth:`RecordLayer.protect` does (write side closed, sequence numbers exhausted, a packet
    over 2^14 bytes) before sealing the packet concerned.
    """
    cdef Py_ssize_t total, offset = layer.plaintext_offset()
    cdef Py_ssize_t overhead = layer.record_overhead
    cdef Py_ssize_t data_chunks = 0
    cdef list records = []
    cdef bytes control, record
    cdef list chunks
    cdef unsigned char* p
    if layer.backend != "evp":
        raise ValueError("seal_packets needs a record layer with the EVP backend")
    for item in packets:
        control = <bytes?>(<tuple?>item)[0]
        chunks = <list?>(<tuple>item)[1]
        total = _packet_length(control, chunks)
        record = PyBytes_FromStringAndSize(NULL, total + overhead)
        p = <unsigned char*>PyBytes_AS_STRING(record)
        _write_packet(p + offset, total, source_port, destination_port, verification_tag, control, chunks)
        layer.seal_in_place(p, total)
        records.append(record)
        data_chunks += len(chunks)
    return records, data_chunks


def build_chunk(int chunk_type, int flags, bytes body) -> bytes:
    """A generic chunk (header + body), padded to 4 bytes."""
    cdef Py_ssize_t length = CHUNK_HEADER + PyBytes_GET_SIZE(body)
    if length > 0xFFFF:
        raise ValueError(f"chunk type {chunk_type}: body of {len(body)} bytes is too long")
    out = PyBytes_FromStringAndSize(NULL, _padded(length))
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = chunk_type & 0xFF
    p[1] = flags & 0xFF
    _put_u16(p + 2, <uint32_t>length)
    memcpy(p + CHUNK_HEADER, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
    memset(p + length, 0, _padded(length) - length)
    return out


def build_sack(uint32_t cumulative_tsn, uint32_t advertised_rwnd, list gaps, list duplicates) -> bytes:
    """A SACK chunk; ``gaps`` holds (start, end) offsets from the cumulative TSN, ``duplicates`` TSNs."""
    cdef Py_ssize_t ngaps = len(gaps)
    cdef Py_ssize_t ndups = len(duplicates)
    if ngaps > 0xFFFF or ndups > 0xFFFF or 16 + 4 * (ngaps + ndups) > 0xFFFF:
        raise ValueError(f"SACK with {ngaps} gap blocks and {ndups} duplicates does not fit one chunk")
    cdef Py_ssize_t length = 16 + 4 * (ngaps + ndups)
    out = PyBytes_FromStringAndSize(NULL, length)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = CHUNK_SACK
    p[1] = 0
    _put_u16(p + 2, <uint32_t>length)
    _put_u32(p + 4, cumulative_tsn)
    _put_u32(p + 8, advertised_rwnd)
    _put_u16(p + 12, <uint32_t>ngaps)
    _put_u16(p + 14, <uint32_t>ndups)
    cdef Py_ssize_t pos = 16
    for start, end in gaps:
        _put_u16(p + pos, <uint32_t>start)
        _put_u16(p + pos + 2, <uint32_t>end)
        pos += 4
    for tsn in duplicates:
        _put_u32(p + pos, <uint32_t>tsn)
        pos += 4
    return out


cdef int _offset_order(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*>a)[0], y = (<const uint32_t*>b)[0]
    return (x > y) - (x < y)


def sack_gaps(misordered, uint32_t cumulative, Py_ssize_t max_gaps):
    """The gap ack blocks that report the TSNs of ``misordered`` received beyond ``cumulative``:
    ascending ``(start, end)`` offsets from it, at most ``max_gaps``. A TSN more than 65,535
    ahead is left out (no block can say it; it is reported once the cumulative TSN moves)."""
    cdef Py_ssize_t n = len(misordered), count = 0, i
    cdef uint32_t offset, start = 0, end = 0
    cdef list gaps = []
    if n == 0 or max_gaps <= 0:
        return gaps
    cdef uint32_t* offsets = <uint32_t*>malloc(n * sizeof(uint32_t))
    if offsets == NULL:
        raise MemoryError()
    try:
        for tsn in misordered:
            offset = <uint32_t>tsn - cumulative
            if 0 < offset <= 0xFFFF:
                offsets[count] = offset
                count += 1
        qsort(offsets, count, sizeof(uint32_t), _offset_order)
        for i in range(count):
            offset = offsets[i]
            if i and offset == end + 1:
                end = offset
                continue
            if i:
                gaps.append((start, end))
                if len(gaps) == max_gaps:
                    return gaps
            start = end = offset
        if count:
            gaps.append((start, end))
    finally:
        free(offsets)
    return gaps


def build_forward_tsn(uint32_t new_cumulative_tsn, list streams) -> bytes:
    """A FORWARD-TSN chunk (RFC 3758 section 3.2); ``streams`` holds (stream id, stream sequence)."""
    cdef Py_ssize_t length = 8 + 4 * len(streams)
    if length > 0xFFFF:
        raise ValueError(f"FORWARD-TSN with {len(streams)} streams does not fit one chunk")
    out = PyBytes_FromStringAndSize(NULL, length)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = CHUNK_FORWARD_TSN
    p[1] = 0
    _put_u16(p + 2, <uint32_t>length)
    _put_u32(p + 4, new_cumulative_tsn)
    cdef Py_ssize_t pos = 8
    for stream_id, stream_seq in streams:
        _put_u16(p + pos, <uint32_t>stream_id)
        _put_u16(p + pos + 2, <uint32_t>stream_seq)
        pos += 4
    return out


# ---------------------------------------------------------------------------------------------
# Parsing

def parse_packet(data):
    """Parse one SCTP packet into ``(source_port, destination_port, verification_tag, chunks)``.

    Each chunk is a :class:`DataChunk`, ``(CHUNK_SACK, cumulative_tsn, a_rwnd, gaps, duplicates)``,
    ``(CHUNK_FORWARD_TSN, new_cumulative_tsn, streams)`` or ``(type, flags, body)`` for any other
    type. Raises DecodeError (with byte offset and field) for a short packet, a bad checksum, or a
    chunk whose length runs past the packet or is too short for its type.
    """
    return _parse_packet(data)


cdef tuple _parse_packet(data):
    cdef const unsigned char[::1] view
    if type(data) is bytes:  # the common case, without the cost of acquiring a buffer view
        return _parse_buffer(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    view = data
    if view.shape[0] == 0:
        return _parse_buffer(NULL, 0)
    return _parse_buffer(&view[0], view.shape[0])


cdef tuple _parse_buffer(const unsigned char* data, Py_ssize_t n):
    cdef Reader r
    if n < COMMON_HEADER + CHUNK_HEADER:
        decode_fail(0, f"SCTP packet of {n} bytes is shorter than a header and one chunk header", "packet")
    r.data = data
    r.pos = 0
    r.end = n
    r.base = 0
    cdef int source_port = rd_u16(&r, "source port")
    cdef int destination_port = rd_u16(&r, "destination port")
    cdef int64_t tag = rd_u32(&r, "verification tag")
    cdef uint32_t stored = (<uint32_t>r.data[8] | (<uint32_t>r.data[9] << 8)
                            | (<uint32_t>r.data[10] << 16) | (<uint32_t>r.data[11] << 24))
    if _packet_crc(r.data, n) != stored:
        decode_fail(8, "SCTP checksum mismatch", "checksum")
    r.pos = COMMON_HEADER

    cdef list chunks = []
    cdef int ctype, cflags, clength
    cdef Py_ssize_t start, chunk_end
    while r.end - r.pos >= CHUNK_HEADER:
        start = r.pos
        ctype = rd_u8(&r, "chunk type")
        cflags = rd_u8(&r, "chunk flags")
        clength = rd_u16(&r, "chunk length")
        if clength < CHUNK_HEADER:
            decode_fail(start + 2, f"chunk length {clength} is shorter than the chunk header", "chunk length")
        if clength > n - start:
            decode_fail(start + 2, f"chunk length {clength} runs past the packet end ({n - start} bytes left)",
                        "chunk length")
        chunk_end = start + clength
        if ctype == CHUNK_DATA:
            chunks.append(_parse_data(&r, cflags, start, chunk_end))
        elif ctype == CHUNK_SACK:
            chunks.append(_parse_sack(&r, start, chunk_end))
        elif ctype == CHUNK_FORWARD_TSN:
            chunks.append(_parse_forward_tsn(&r, start, chunk_end))
        else:
            chunks.append((ctype, cflags, PyBytes_FromStringAndSize(<const char*>(data + r.pos), chunk_end - r.pos)))
        r.pos = min(n, _padded(chunk_end))
    return source_port, destination_port, tag, chunks


cdef DataChunk _parse_data(Reader* r, int flags, Py_ssize_t start, Py_ssize_t end):
    if end - start < DATA_HEADER:
        decode_fail(start + 2, f"DATA chunk length {end - start} is shorter than its 16-byte header", "chunk length")
    cdef DataChunk chunk = DataChunk.__new__(DataChunk)
    cdef Py_ssize_t saved_end = r.end
    r.end = end
    chunk.flags = flags
    chunk.tsn = <uint32_t>rd_u32(r, "DATA TSN")
    chunk.stream_id = rd_u16(r, "DATA stream id")
    chunk.stream_seq = rd_u16(r, "DATA stream sequence")
    chunk.protocol = <uint32_t>rd_u32(r, "DATA payload protocol")
    chunk.user_data = PyBytes_FromStringAndSize(<const char*>(r.data + r.pos), end - r.pos)
    chunk._book_size = _padded(end - start)
    r.end = saved_end
    return chunk


cdef tuple _parse_sack(Reader* r, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t saved_end = r.end
    r.end = end
    cdef int64_t cumulative = rd_u32(r, "SACK cumulative TSN")
    cdef int64_t rwnd = rd_u32(r, "SACK a_rwnd")
    cdef int ngaps = rd_u16(r, "SACK gap block count")
    cdef int ndups = rd_u16(r, "SACK duplicate count")
    cdef list gaps = []
    cdef list dups = []
    cdef int i, gap_start, gap_end
    need(r, 4 * (<Py_ssize_t>ngaps + ndups), "SACK gap blocks")
    for i in range(ngaps):
        gap_start = rd_u16(r, "SACK gap start")
        gap_end = rd_u16(r, "SACK gap end")
        gaps.append((gap_start, gap_end))
    for i in range(ndups):
        dups.append(rd_u32(r, "SACK duplicate TSN"))
    r.end = saved_end
    return (CHUNK_SACK, cumulative, rwnd, gaps, dups)


cdef tuple _parse_forward_tsn(Reader* r, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t saved_end = r.end
    r.end = end
    cdef int64_t cumulative = rd_u32(r, "FORWARD-TSN new cumulative TSN")
    cdef list streams = []
    cdef int sid, seq
    while r.end - r.pos >= 4:
        sid = rd_u16(r, "FORWARD-TSN stream id")
        seq = rd_u16(r, "FORWARD-TSN stream sequence")
        streams.append((sid, seq))
    r.end = saved_end
    return (CHUNK_FORWARD_TSN, cumulative, streams)


# ---------------------------------------------------------------------------------------------
# The per-chunk loops of the data path (clasp_fast.transport.sctp calls them; the association's
# state stays in its Python attributes, read and written once per call, not once per chunk).
#
# Each loop handles the common case only and stops where something else needs aiortc's rules
# (a gap, an abandoned or refused message, a window to probe): the Python side goes on from there
# with its own code, so the state it sees is always one that code could have produced itself.

cdef enum:
    CHUNK_INIT = 1  # RFC 4960 section 3.3.2: never bundled, answered under the tag rules
    FLAG_LAST = 1
    FLAG_FIRST = 2
    FLAG_UNORDERED = 4


cdef inline bint _tsn_gte(uint32_t a, uint32_t b) noexcept nogil:
    return <uint32_t>(a - b) < 0x80000000u


def fragment(queue, bytes user_data, Py_ssize_t piece_max, int base_flags, uint32_t tsn,
             int stream_id, int stream_seq, uint32_t protocol, expiry, max_retransmits):
    """Split one message into DATA chunks appended to ``queue`` (RFC 4960 section 6.9).

    Returns ``(next_tsn, booked_bytes)``: the TSN after the last fragment and the bytes the
    chunks take in packets.
    """
    if piece_max <= 0:
        raise ValueError(f"piece_max must be positive, got {piece_max}")
    cdef Py_ssize_t booked = 0
    tsn = _fragment(queue.append, user_data, piece_max, base_flags, tsn, stream_id, stream_seq, protocol,
                    expiry, max_retransmits, &booked)
    return tsn, booked


cdef uint32_t _fragment(append, bytes user_data, Py_ssize_t piece_max, int base_flags, uint32_t tsn,
                        int stream_id, int stream_seq, uint32_t protocol, expiry, max_retransmits,
                        Py_ssize_t* booked_out) except? 0:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(user_data)
    cdef Py_ssize_t fragments = 1 if size <= piece_max else (size + piece_max - 1) // piece_max
    cdef Py_ssize_t index, offset, length
    cdef Py_ssize_t booked = 0
    cdef int flags
    cdef DataChunk chunk
    cdef const char* data = PyBytes_AS_STRING(user_data)
    for index in range(fragments):
        flags = base_flags
        if index == 0:
            flags |= FLAG_FIRST
        if index == fragments - 1:
            flags |= FLAG_LAST
        chunk = DataChunk.__new__(DataChunk)
        chunk.flags = flags
        chunk.tsn = tsn
        chunk.stream_id = stream_id
        chunk.stream_seq = stream_seq
        chunk.protocol = protocol
        if fragments == 1:
            chunk.user_data = user_data
            length = size
        else:
            offset = index * piece_max
            length = min(piece_max, size - offset)
            chunk.user_data = PyBytes_FromStringAndSize(data + offset, length)
        chunk._book_size = _padded(DATA_HEADER + length)
        chunk._expiry = expiry
        chunk._max_retransmits = max_retransmits
        append(chunk)
        booked += chunk._book_size
        tsn += 1
    booked_out[0] += booked
    return tsn


def take_messages(queue, outbound_queue, Py_ssize_t outbound_bytes, Py_ssize_t room, uint32_t tsn,
                  Py_ssize_t piece_max, dict stream_seqs, list released, clock):
    """Move messages from the front of aiortc's data channel queue (``(channel, protocol,
    user_data)`` entries) onto ``outbound_queue`` as DATA chunks while ``outbound_bytes`` stays
    under ``room`` (RFC 4960 section 6.9; ordered messages take their stream's next sequence
    number from ``stream_seqs``; unordered ones 0 and the U flag).

    Application messages (not DCEP) expire ``channel.maxPacketLifeTime`` ms after ``clock()``;
    the bytes taken off each channel are appended to ``released`` as ``(channel, bytes)``, one
    entry per run of one channel. Stops at a message whose channel has no stream id yet, leaving
    it at the front. Returns ``(next_tsn, outbound_bytes, that channel or None)``.
    """
    if piece_max <= 0:
        raise ValueError(f"piece_max must be positive, got {piece_max}")
    popleft = queue.popleft
    append = outbound_queue.append
    current = None  # the channel of the previous application message, whose settings are read
    cdef Py_ssize_t amount = 0
    cdef int stream_id = 0
    cdef int stream_seq
    cdef int base_flags = 0
    cdef uint32_t protocol
    cdef bint ordered = True
    cdef bint dcep
    life = None
    max_retransmits = None
    while queue and outbound_bytes < room:
        entry = queue[0]
        channel = entry[0]
        if channel is not current:
            if channel.id is None:
                break
            if amount:
                released.append((current, amount))
                amount = 0
            current = channel
            stream_id = channel.id
            life = channel.maxPacketLifeTime
            max_retransmits = channel.maxRetransmits
            ordered = channel.ordered
        protocol = entry[1]
        user_data = entry[2]
        if type(user_data) is not bytes:
            raise TypeError(f"data channel queue entry holds {type(user_data).__name__}, not bytes")
        popleft()
        # Channel set-up messages (DCEP) are ordered, reliable and not counted in bufferedAmount.
        dcep = protocol == PROTOCOL_DCEP
        if dcep or ordered:
            stream_seq = stream_seqs.get(stream_id, 0)
            stream_seqs[stream_id] = (stream_seq + 1) & 0xFFFF
            base_flags = 0
        else:
            stream_seq = 0
            base_flags = FLAG_UNORDERED
        if dcep:
            expiry = retransmits = None
        else:
            expiry = clock() + life / 1000 if life else None
            retransmits = max_retransmits
            amount += PyBytes_GET_SIZE(user_data)
        tsn = _fragment(append, user_data, piece_max, base_flags, tsn, stream_id, stream_seq, protocol,
                        expiry, retransmits, &outbound_bytes)
    if amount:
        released.append((current, amount))
    return tsn, outbound_bytes, (queue[0][0] if queue and outbound_bytes < room else None)


cdef inline Py_ssize_t _leave_flight(DataChunk chunk) noexcept:
    # A chunk stops counting in the flight size once (aiortc's _flight_size_decrease): its bytes.
    if not chunk._in_flight:
        return 0
    chunk._in_flight = False
    return chunk._book_size


def acknowledge(sent_queue, uint32_t cumulative):
    """Take the chunks up to ``cumulative`` off the front of ``sent_queue`` (a SACK without gaps).

    Returns ``(chunks, newly_acked_bytes, left_flight_bytes, sent_time)``: how many chunks, the
    bytes of those not acknowledged before (by gap blocks), the bytes that left the flight, and
    the send time of the first chunk when it was sent once (an RTT sample), else None.
    """
    cdef Py_ssize_t done = 0, done_bytes = 0, flight = 0
    cdef DataChunk chunk
    sent_time = None
    popleft = sent_queue.popleft
    while sent_queue:
        chunk = <DataChunk?>sent_queue[0]
        if not _tsn_gte(cumulative, chunk.tsn):
            break
        popleft()
        done += 1
        if not chunk._acked:
            done_bytes += chunk._book_size
        flight += _leave_flight(chunk)
        if done == 1 and chunk._sent_count == 1 and chunk._sent_time is not None:
            sent_time = chunk._sent_time
    return done, done_bytes, flight, sent_time


# ---------------------------------------------------------------------------------------------
# The loss path: gap blocks, miss indications, retransmission marks

cdef struct Block:
    # A gap ack block as offsets from the SACK's cumulative TSN (RFC 4960 section 3.3.4).
    uint32_t start
    uint32_t end


cdef int _block_order(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const Block*>a).start, y = (<const Block*>b).start
    return (x > y) - (x < y)


cdef Py_ssize_t _read_blocks(gaps, Block** out, uint32_t* highest) except -1:
    """Copy the valid blocks of ``gaps`` ((start, end) pairs) into a new array sorted by start;
    ``highest`` gets the largest end. Returns how many; the caller frees ``out``."""
    cdef Py_ssize_t n = len(gaps), count = 0, i
    cdef long start, end
    cdef bint ordered = True
    cdef Block* blocks = <Block*>malloc(max(n, 1) * sizeof(Block))
    if blocks == NULL:
        raise MemoryError()
    highest[0] = 0
    try:
        for gap in gaps:
            start = gap[0]
            end = gap[1]
            if start < 1 or end < start or end > 0xFFFF:
                continue  # a block that acknowledges nothing (the parser only yields 16-bit values)
            if count and <uint32_t>start < blocks[count - 1].start:
                ordered = False
            blocks[count].start = <uint32_t>start
            blocks[count].end = <uint32_t>end
            if <uint32_t>end > highest[0]:
                highest[0] = <uint32_t>end
            count += 1
    except BaseException:
        free(blocks)
        raise
    if not ordered:
        qsort(blocks, count, sizeof(Block), _block_order)
    out[0] = blocks
    return count


cdef inline bint _in_blocks(const Block* blocks, Py_ssize_t count, Py_ssize_t* at, uint32_t offset) noexcept nogil:
    # Offsets are asked in increasing order: skip the blocks that end before this one.
    while at[0] < count and blocks[at[0]].end < offset:
        at[0] += 1
    return at[0] < count and blocks[at[0]].start <= offset


cdef inline bint _may_abandon(DataChunk chunk) noexcept:
    # Whether aiortc's _maybe_abandon could say yes (otherwise it returns False and changes nothing).
    return chunk._abandoned or chunk._max_retransmits is not None or chunk._expiry is not None


cdef Py_ssize_t _mark_lost(sctp, DataChunk chunk) except -1:
    """A chunk taken for lost: abandoned where ``sctp._maybe_abandon`` says so (asked only for a
    chunk with a lifetime or retransmission limit), else marked for retransmission; either way out
    of the flight. Returns the bytes that left the flight."""
    if not (_may_abandon(chunk) and sctp._maybe_abandon(chunk)):
        chunk._retransmit = True
    return _leave_flight(chunk)


def acknowledge_gaps(sctp, sent_queue, uint32_t cumulative, gaps):
    """Apply a SACK's gap ack blocks to ``sent_queue``, whose chunks up to ``cumulative`` were
    taken off with :func:`acknowledge` (RFC 4960 sections 6.3.3 and 7.2.4, as aiortc does).

    Chunks inside a block are acknowledged and leave the flight. Then every chunk before the
    highest TSN newly acknowledged that no block covers counts one more miss indication; at the
    third it is lost: ``sctp._maybe_abandon(chunk)`` decides (only for a chunk with a lifetime or
    retransmission limit) whether it is abandoned, and otherwise it is marked for retransmission
    and leaves the flight. Returns ``(newly_acked_bytes, left_flight_bytes, lost)``.
    """
    cdef Block* blocks = NULL
    cdef uint32_t highest, offset, newly_acked = 0
    cdef Py_ssize_t count, at = 0, done_bytes = 0, flight = 0
    cdef bint lost = False
    cdef DataChunk chunk
    count = _read_blocks(gaps, &blocks, &highest)
    try:
        if count == 0:
            return 0, 0, False
        for item in sent_queue:
            chunk = <DataChunk?>item
            offset = chunk.tsn - cumulative
            if offset > highest:
                break
            if _in_blocks(blocks, count, &at, offset):
                if not chunk._acked:
                    done_bytes += chunk._book_size
                    chunk._acked = True
                    newly_acked = offset
                flight += _leave_flight(chunk)
        at = 0
        for item in sent_queue:
            chunk = <DataChunk>item
            offset = chunk.tsn - cumulative
            if offset > newly_acked:
                break
            if _in_blocks(blocks, count, &at, offset):
                continue
            chunk._misses += 1
            if chunk._misses == 3:
                chunk._misses = 0
                chunk._acked = False
                flight += _mark_lost(sctp, chunk)
                lost = True
    finally:
        free(blocks)
    return done_bytes, flight, lost


def mark_for_retransmission(sctp, sent_queue):
    """Mark every chunk of ``sent_queue`` for retransmission when the retransmission timer expires
    (RFC 4960 section 6.3.3), or abandoned where ``sctp._maybe_abandon`` says so; none stays in
    the flight. Returns the bytes that left the flight."""
    cdef Py_ssize_t flight = 0
    for item in sent_queue:
        flight += _mark_lost(sctp, <DataChunk?>item)
    return flight


@cython.final
cdef class Bundler:
    """The packets of one transmit opportunity, filled chunk by chunk: each is ``(control, chunks)``
    with at most ``room`` bytes of chunks, the control chunks (a SACK, a FORWARD-TSN) in the first."""

    cdef readonly list packets
    cdef readonly bytes control  # control chunks of the packet being filled
    cdef readonly list packet    # DATA chunks of the packet being filled
    cdef readonly Py_ssize_t used
    cdef readonly Py_ssize_t room

    def __init__(self, Py_ssize_t room, bytes control):
        self.packets = []
        self.control = control
        self.packet = []
        self.used = len(control)
        self.room = room

    cpdef add(self, DataChunk chunk):
        """Append ``chunk`` to the packet being filled, or to a new one when it would pass ``room``."""
        if self.used + chunk._book_size > self.room and (self.packet or self.control):
            self.packets.append((self.control, self.packet))
            self.control = b""
            self.packet = []
            self.used = 0
        self.packet.append(chunk)
        self.used += chunk._book_size

    def finish(self):
        """Every packet, the last one included: ``[(control, chunks), ...]``."""
        if self.packet or self.control:
            self.packets.append((self.control, self.packet))
            self.control = b""
            self.packet = []
            self.used = 0
        return self.packets


def take_retransmissions(sent_queue, Py_ssize_t flight_size, Py_ssize_t cwnd, bint recovery_transmit,
                         Bundler bundler):
    """Put the chunks of ``sent_queue`` marked for retransmission into ``bundler``'s packets while
    the congestion window has room; the first one of a fast recovery (``recovery_transmit``) goes
    regardless (RFC 4960 section 7.2.4).

    Returns ``(flight_size, recovery_transmit, blocked, retransmitted, earliest)``: ``blocked``
    when a marked chunk is left for want of window, ``earliest`` when the first chunk of the queue
    was among those sent (the timer restarts).
    """
    cdef Py_ssize_t retransmitted = 0
    cdef bint blocked = False, earliest = False, first = True
    cdef DataChunk chunk
    for item in sent_queue:
        chunk = <DataChunk?>item
        if chunk._retransmit:
            if recovery_transmit:
                recovery_transmit = False
            elif flight_size >= cwnd:
                blocked = True
                break
            if not chunk._in_flight:
                chunk._in_flight = True
                flight_size += chunk._book_size
            chunk._misses = 0
            chunk._retransmit = False
            chunk._sent_count += 1
            retransmitted += 1
            bundler.add(chunk)
            if first:
                earliest = True
        first = False
    return flight_size, recovery_transmit, blocked, retransmitted, earliest


def take_new_data(queue, sent_queue, Py_ssize_t flight_size, Py_ssize_t cwnd, Py_ssize_t window,
                  Bundler bundler, now):
    """Move new chunks from ``queue`` to ``sent_queue`` and into ``bundler``'s packets while the
    congestion window has room and each chunk fits the peer's receive window (``window`` < 0: not
    known yet). Stops at the first chunk the receive window does not take (the caller applies its
    probing rules to it). Returns ``(flight_size, booked_bytes_taken)``.
    """
    cdef Py_ssize_t taken = 0
    cdef DataChunk chunk
    popleft = queue.popleft
    append_sent = sent_queue.append
    while queue and flight_size < cwnd:
        chunk = <DataChunk?>queue[0]
        if window >= 0 and flight_size + chunk._book_size > window and not chunk._abandoned:
            break
        popleft()
        taken += chunk._book_size
        append_sent(chunk)
        if chunk._abandoned:
            continue  # its TSN is skipped with a FORWARD-TSN
        if not chunk._in_flight:
            chunk._in_flight = True
            flight_size += chunk._book_size
        chunk._sent_count += 1
        chunk._sent_time = now
        bundler.add(chunk)
    return flight_size, taken


cdef struct InOrder:
    # The receive state the in-order path works on, read from the FastSctpTransport once per call
    # and written back before the Python path can see it again.
    uint32_t last          # the cumulative TSN
    Py_ssize_t rwnd        # the advertised receive window
    Py_ssize_t max_size    # the largest message taken (the advertised maximum)
    Py_ssize_t taken       # DATA chunks taken


cdef bint _load(InOrder* state, sctp) except -1:
    """Read the state; False when nothing can be taken in order (no INIT yet, a gap, a reset)."""
    if sctp._last_received_tsn is None or sctp._sack_misordered or sctp._reconfig_deferred is not None:
        return False
    state.last = sctp._last_received_tsn
    state.rwnd = sctp._advertised_rwnd
    state.max_size = sctp._max_receive_size
    state.taken = 0
    return True


cdef bint _load_with_gaps(InOrder* state, sctp) except -1:
    """As _load, with TSNs received beyond a gap allowed (only above_gap takes chunks then)."""
    if sctp._last_received_tsn is None or sctp._reconfig_deferred is not None:
        return False
    state.last = sctp._last_received_tsn
    state.rwnd = sctp._advertised_rwnd
    state.max_size = sctp._max_receive_size
    state.taken = 0
    return True


cdef int _store(InOrder* state, sctp, Py_ssize_t packets, Py_ssize_t answered_later) except -1:
    """Write the state back: cumulative TSN, window, SACK bookkeeping and counters."""
    if state.taken:
        sctp._last_received_tsn = state.last
        sctp._advertised_rwnd = state.rwnd
        sctp._sack_needed = True
        stats = sctp.stats
        stats.data_chunks_received += state.taken
        state.taken = 0
    if packets:
        stats = sctp.stats
        stats.packets_received += packets
    if answered_later:
        sctp._packets_since_sack += answered_later
    return 0


@cython.final
cdef class _Stream:
    """The inbound stream of the last chunk taken, for one compiled receive call: its reassembly
    list and next sequence number, and its entry of the transport's ``_tail_message_bytes``
    (written back when the stream changes and before the call returns). A run of fragments of one
    message then costs no dictionary or attribute lookup per chunk."""

    cdef int stream_id
    cdef object stream
    cdef list reassembly
    cdef int sequence
    cdef bint has_tail
    cdef bint tail_changed
    cdef uint32_t tail_tsn
    cdef Py_ssize_t tail_total

    def __cinit__(self):
        self.stream_id = -1

    cdef int flush(self, dict tails) except -1:
        if self.tail_changed:
            tails[self.stream_id] = (self.tail_tsn, self.tail_total)
            self.tail_changed = False
        return 0

    cdef bint switch(self, int stream_id, dict streams, dict refused, dict tails) except -1:
        """Make ``stream_id`` the current stream; False if it does not exist or is refused."""
        self.flush(tails)
        self.stream_id = -1
        self.stream = streams.get(stream_id)
        if self.stream is None or (refused and stream_id in refused):
            self.stream = None
            return False
        self.stream_id = stream_id
        self.reassembly = self.stream.reassembly
        self.sequence = self.stream.sequence_number
        counted = tails.get(stream_id)
        self.has_tail = counted is not None
        if self.has_tail:
            self.tail_tsn = (<tuple>counted)[0]
            self.tail_total = (<tuple>counted)[1]
        return True

    cdef int advance(self, int stream_seq) except -1:
        """The ordered message ``stream_seq`` was handed up: the stream expects the next one."""
        self.sequence = (stream_seq + 1) & 0xFFFF
        self.stream.sequence_number = self.sequence
        return 0

    cdef void count_tail(self, uint32_t tsn, Py_ssize_t total) noexcept:
        """The run of fragments at the end of the reassembly now ends at ``tsn`` with ``total`` bytes."""
        self.has_tail = self.tail_changed = True
        self.tail_tsn = tsn
        self.tail_total = total


cdef Py_ssize_t _take_in_order(InOrder* state, list chunks, Py_ssize_t index, dict streams, dict refused,
                               dict tails, list messages, _Stream current) except -1:
    cdef Py_ssize_t count = len(chunks)
    cdef DataChunk chunk, first, previous
    cdef Py_ssize_t size, total
    cdef int flags
    cdef list reassembly
    while index < count:
        item = chunks[index]
        if type(item) is not DataChunk:
            break
        chunk = <DataChunk>item
        size = PyBytes_GET_SIZE(chunk.user_data)
        if chunk.tsn != <uint32_t>(state.last + 1) or state.rwnd < size:
            break
        if chunk.stream_id != current.stream_id and not current.switch(chunk.stream_id, streams, refused, tails):
            break
        reassembly = current.reassembly
        flags = chunk.flags
        if (flags & (FLAG_FIRST | FLAG_LAST)) == (FLAG_FIRST | FLAG_LAST):
            if reassembly:
                break
            if flags & FLAG_UNORDERED:
                pass
            elif chunk.stream_seq == current.sequence:
                current.advance(chunk.stream_seq)
            else:
                break
            messages.append((chunk.stream_id, chunk.protocol, chunk.user_data))
        else:
            if flags & FLAG_UNORDERED:
                break
            if flags & FLAG_FIRST:
                if reassembly or chunk.stream_seq != current.sequence:
                    break
                total = size
            else:
                if not reassembly:
                    break
                previous = <DataChunk?>reassembly[len(reassembly) - 1]
                first = <DataChunk?>reassembly[0]
                if (previous.tsn != state.last or previous.flags & (FLAG_LAST | FLAG_UNORDERED)
                        or not first.flags & FLAG_FIRST or first.flags & FLAG_UNORDERED
                        or <uint32_t>(chunk.tsn - first.tsn) != <uint32_t>len(reassembly)
                        or first.stream_seq != current.sequence or chunk.stream_seq != first.stream_seq):
                    break
                if not current.has_tail or current.tail_tsn != previous.tsn:
                    break
                total = current.tail_total + size
            if total > state.max_size:
                break  # the Python side refuses the message
            if flags & FLAG_LAST:
                # every fragment was counted against the window while it waited; the message
                # is handed up now, so the window gets it all back
                state.rwnd += total - size
                reassembly.append(chunk)
                messages.append((chunk.stream_id, chunk.protocol,
                                 b"".join([(<DataChunk>c).user_data for c in reassembly])))
                current.reassembly = []
                current.stream.reassembly = current.reassembly
                current.advance(chunk.stream_seq)
            else:
                state.rwnd -= size
                reassembly.append(chunk)
            current.count_tail(chunk.tsn, total)
        state.last = chunk.tsn
        state.taken += 1
        index += 1
    return index


cdef enum:
    TSN_AHEAD_MAX = 0xFFFF  # the farthest a gap block can report (FastSctpTransport's MAX_TSN_AHEAD)


cdef inline bint _seq_after(int a, int b) noexcept nogil:
    # Serial number arithmetic on 16-bit stream sequence numbers (RFC 1982), as aiortc's uint16_gt.
    return (a < b and b - a > 0x8000) or (a > b and a - b < 0x8000)


cdef Py_ssize_t _take_above_gap(InOrder* state, list chunks, Py_ssize_t index, dict streams, dict refused,
                                dict tails, list messages, _Stream current, set misordered) except -1:
    """Take the DATA chunks from ``index`` on that arrive beyond the cumulative TSN (a gap open
    before them): the TSN joins ``misordered`` and the chunk is delivered (a whole message its
    stream can take now) or appended to its stream's reassembly where nothing can complete yet.
    Stops at the first chunk that needs more (a duplicate, one filling the gap, one inserted before
    others of its stream, unordered fragments, a message that may complete, a full window, a
    refused or unknown stream, a message over the maximum): the Python path's."""
    cdef Py_ssize_t count = len(chunks)
    cdef DataChunk chunk, previous, head
    cdef Py_ssize_t size, total
    cdef uint32_t offset
    cdef int flags
    cdef list reassembly
    cdef bint whole
    while index < count:
        item = chunks[index]
        if type(item) is not DataChunk:
            break
        chunk = <DataChunk>item
        size = PyBytes_GET_SIZE(chunk.user_data)
        offset = chunk.tsn - state.last
        if offset < 2 or offset > TSN_AHEAD_MAX or state.rwnd < size or chunk.tsn in misordered:
            break
        if chunk.stream_id != current.stream_id and not current.switch(chunk.stream_id, streams, refused, tails):
            break
        reassembly = current.reassembly
        flags = chunk.flags
        whole = (flags & (FLAG_FIRST | FLAG_LAST)) == (FLAG_FIRST | FLAG_LAST)
        if whole and not reassembly and (flags & FLAG_UNORDERED or chunk.stream_seq == current.sequence):
            if not flags & FLAG_UNORDERED:
                current.advance(chunk.stream_seq)
            messages.append((chunk.stream_id, chunk.protocol, chunk.user_data))
        else:
            if flags & FLAG_UNORDERED:
                break
            total = size
            if reassembly:
                previous = <DataChunk?>reassembly[len(reassembly) - 1]
                if not _tsn_gte(chunk.tsn, previous.tsn + 1):
                    break  # goes before fragments already held
                if (chunk.tsn == <uint32_t>(previous.tsn + 1) and not previous.flags & FLAG_LAST
                        and not flags & FLAG_FIRST and current.has_tail and current.tail_tsn == previous.tsn):
                    total += current.tail_total
                head = <DataChunk?>reassembly[0]
            else:
                head = chunk
            if total > state.max_size:
                break  # the Python side refuses the message
            if flags & FLAG_LAST and not (not head.flags & FLAG_UNORDERED and (
                    not head.flags & FLAG_FIRST or _seq_after(head.stream_seq, current.sequence))):
                break  # a message might complete: the Python side's reassembly
            reassembly.append(chunk)
            state.rwnd -= size
            current.count_tail(chunk.tsn, total)
        misordered.add(chunk.tsn)
        state.taken += 1
        index += 1
    return index


def receive_in_order(sctp, list chunks, Py_ssize_t start, list messages):
    """Take the DATA chunks of ``chunks[start:]`` that continue the association in order.

    ``sctp`` is the FastSctpTransport. A chunk is taken when its TSN is the next one with no gap
    outstanding, the receive window holds it, its stream exists and is neither refused nor being
    reset, and it is a whole message (ordered: the stream's next) or the next fragment of the
    ordered message being received. Once a gap is open, chunks beyond it are taken as
    ``_take_above_gap`` says. Completed messages are appended to ``messages`` as
    ``(stream_id, protocol, data)``. Returns the index of the first chunk not taken: the caller
    handles that one and the rest its own way.
    """
    cdef InOrder state
    if start >= len(chunks) or type(chunks[start]) is not DataChunk or not _load_with_gaps(&state, sctp):
        return start
    cdef _Stream current = _Stream.__new__(_Stream)
    cdef set misordered = sctp._sack_misordered
    tails = sctp._tail_message_bytes
    index = start
    try:
        if not misordered:
            index = _take_in_order(&state, chunks, index, sctp._inbound_streams, sctp._refused, tails,
                                   messages, current)
        if index < len(chunks) and not sctp._sack_duplicates:
            index = _take_above_gap(&state, chunks, index, sctp._inbound_streams, sctp._refused, tails,
                                    messages, current, misordered)
    finally:
        current.flush(tails)
        _store(&state, sctp, 0, 0)
    return index


cdef bint _has_init(list chunks):
    for chunk in chunks:
        if type(chunk) is tuple and (<tuple>chunk)[0] == CHUNK_INIT:
            return True
    return False


def receive_datagrams(RecordLayer layer, sctp, list batch, Py_ssize_t index, Py_ssize_t stop, list messages):
    """Handle the DTLS datagrams of ``batch[index:stop]`` ((data, address) pairs) as far as each
    carries SCTP packets of in-order DATA only (what :func:`receive_in_order` takes).

    ``layer`` is the connection's DtlsRecordLayer, ``sctp`` its FastSctpTransport (inside a
    received batch: ``_receiving_batch`` set). Completed messages are appended to ``messages``.
    Stops before a datagram that is not DTLS (STUN), and after one that needs the Python path or
    ended the connection (``layer.peer_closed``).

    Returns ``(index, rest_chunks, rest_records, datagrams, size)``: the index of the next datagram
    to handle; the chunks of the last packet that the caller still has to handle (None when there
    are none), then the records of that datagram still to handle (None likewise); and how many
    datagrams and bytes this call read.
    """
    cdef Py_ssize_t datagrams = 0, size = 0, count, position, taken, packets = 0, answered_later = 0
    cdef bytes data
    cdef list records, chunks
    cdef tuple record
    cdef int first
    cdef InOrder state
    # Only the Python path changes these, and it does not run during this call: read them once.
    cdef bint usable = (_load(&state, sctp) and not sctp._sack_duplicates and sctp._receiving_batch)
    cdef dict streams = sctp._inbound_streams
    cdef dict refused = sctp._refused
    cdef dict tails = sctp._tail_message_bytes
    cdef _Stream current = _Stream.__new__(_Stream)
    tag = sctp._local_verification_tag
    try:
        while index < stop:
            item = batch[index]
            data = <bytes?>(<tuple?>item)[0]
            if PyBytes_GET_SIZE(data) == 0:
                break
            first = <unsigned char>PyBytes_AS_STRING(data)[0]
            if first <= 19 or first >= 64:
                break  # STUN (or anything else that is not DTLS): the caller's
            index += 1
            datagrams += 1
            size += PyBytes_GET_SIZE(data)
            records = layer.unprotect_datagram(data)
            count = len(records)
            for position in range(count):
                record = <tuple>records[position]
                plaintext = record[1]
                if not usable or record[0] != 23 or not plaintext:
                    return index, None, records[position:], datagrams, size
                try:
                    parsed = _parse_packet(plaintext)
                except ValueError:
                    return index, None, records[position:], datagrams, size  # the caller counts it
                chunks = <list>(<tuple>parsed)[3]
                if (<tuple>parsed)[2] != tag or _has_init(chunks):
                    return index, None, records[position:], datagrams, size  # the tag rules: the caller's
                taken = _take_in_order(&state, chunks, 0, streams, refused, tails, messages, current)
                if taken == 0:
                    return index, None, records[position:], datagrams, size
                packets += 1
                if taken < len(chunks):
                    return index, chunks[taken:], records[position + 1:] or None, datagrams, size
                answered_later += 1
            if layer.peer_closed:
                break
        return index, None, None, datagrams, size
    finally:
        current.flush(tails)
        if usable:
            _store(&state, sctp, packets, answered_later)

# DTLS 1.2 records of one epoch with an AEAD cipher: protect, unprotect, replay window, alerts.
#
# Record layout (RFC 6347 section 4.1): type(1) version(2) epoch(2) sequence(6) length(2) fragment.
# AES-GCM (RFC 5288): fragment = explicit nonce(8) || ciphertext || tag(16), nonce = the 4-byte
# implicit IV || explicit nonce; we send epoch||sequence as the explicit nonce, as OpenSSL does.
# ChaCha20-Poly1305 (RFC 7905): fragment = ciphertext || tag(16), nonce = the 12-byte IV XOR
# (4 zero bytes || epoch || sequence). Both: additional data = epoch || sequence || type ||
# version || plaintext length (RFC 5246 section 6.2.3.3).
#
# The cipher itself is not here: the layer is handed two AEAD objects (``cryptography``'s AESGCM or
# ChaCha20Poly1305, or anything with the same encrypt/decrypt(nonce, data, aad) methods) and builds
# the nonce, the additional data and the record around their calls. Every read of a received
# datagram goes through the length-checked Reader of buffers.pxd.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from buffers cimport Reader, decode_fail, need, rd_u8, rd_u16

cdef enum:
    HEADER = 13           # type, version, epoch, sequence, length
    EXPLICIT_NONCE = 8    # AES-GCM only
    TAG = 16
    MAX_PLAINTEXT = 16384                 # 2^14 (RFC 5246 section 6.2.1)
    MAX_FRAGMENT = 16384 + 2048           # 2^14 + 2048 (RFC 5246 section 6.2.3)
    VERSION_DTLS12 = 0xFEFD

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23
ALERT_WARNING = 1
ALERT_FATAL = 2
ALERT_CLOSE_NOTIFY = 0
RECORD_HEADER_LENGTH = HEADER
MAX_SEQUENCE = (1 << 48) - 1

cdef uint64_t SEQUENCE_LIMIT = (<uint64_t>1 << 48) - 1


cdef inline void _store_epoch_sequence(unsigned char* p, int epoch, uint64_t sequence) noexcept:
    # epoch(2) || sequence(6): the record header's middle and the 8-byte "seq_num" of RFC 6347.
    p[0] = <unsigned char>((epoch >> 8) & 0xFF)
    p[1] = <unsigned char>(epoch & 0xFF)
    p[2] = <unsigned char>((sequence >> 40) & 0xFF)
    p[3] = <unsigned char>((sequence >> 32) & 0xFF)
    p[4] = <unsigned char>((sequence >> 24) & 0xFF)
    p[5] = <unsigned char>((sequence >> 16) & 0xFF)
    p[6] = <unsigned char>((sequence >> 8) & 0xFF)
    p[7] = <unsigned char>(sequence & 0xFF)


cdef inline uint64_t _load_u48(const unsigned char* p) noexcept:
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24)
            | (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | <uint64_t>p[5])


cdef inline bytes _additional_data(const unsigned char* epoch_sequence, int content_type,
                                   Py_ssize_t plaintext_length):
    cdef bytes aad = PyBytes_FromStringAndSize(NULL, 13)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(aad)
    memcpy(p, epoch_sequence, 8)
    p[8] = <unsigned char>content_type
    p[9] = 0xFE
    p[10] = 0xFD
    p[11] = <unsigned char>((plaintext_length >> 8) & 0xFF)
    p[12] = <unsigned char>(plaintext_length & 0xFF)
    return aad


cdef inline bytes _nonce(const unsigned char* iv, bint chacha, const unsigned char* eight):
    # ChaCha20-Poly1305 (RFC 7905): the 12-byte IV XOR (4 zero bytes || epoch || sequence), with
    # ``eight`` = epoch || sequence. AES-GCM (RFC 5288): the 4-byte IV || the explicit nonce ``eight``.
    cdef bytes nonce = PyBytes_FromStringAndSize(NULL, 12)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(nonce)
    cdef int i
    if chacha:
        memcpy(p, iv, 12)
        for i in range(8):
            p[4 + i] ^= eight[i]
    else:
        memcpy(p, iv, 4)
        memcpy(p + 4, eight, 8)
    return nonce


cdef inline int _read_header(Reader* r, int* content_type, int* version, int* epoch,
                             uint64_t* sequence, int* length) except -1:
    content_type[0] = rd_u8(r, "record type")
    version[0] = rd_u16(r, "record version")
    epoch[0] = rd_u16(r, "record epoch")
    need(r, 6, "record sequence number")
    sequence[0] = _load_u48(r.data + r.pos)
    r.pos += 6
    length[0] = rd_u16(r, "record length")
    if length[0] > MAX_FRAGMENT:
        decode_fail(r.base + r.pos - 2, f"record length {length[0]} exceeds {MAX_FRAGMENT}",
                    "record length")
    need(r, length[0], "record fragment")
    return 0


cdef inline bytes _as_bytes(object data):
    if type(data) is bytes:
        return <bytes>data
    return bytes(data)


def parse_records(data) -> list:
    """The records of one datagram as (type, version, epoch, sequence, fragment offset, length).

    Raises DecodeError (with the byte offset and field) if a header is truncated or a record's
    length runs past the end of the datagram or exceeds 2^14 + 2048.
    """
    cdef bytes raw = _as_bytes(data)
    cdef Reader r
    cdef int content_type, version, epoch, length
    cdef uint64_t sequence
    r.data = <const unsigned char*>PyBytes_AS_STRING(raw)
    r.pos = 0
    r.end = PyBytes_GET_SIZE(raw)
    r.base = 0
    records = []
    while r.pos < r.end:
        _read_header(&r, &content_type, &version, &epoch, &sequence, &length)
        records.append((content_type, version, epoch, sequence, r.pos, length))
        r.pos += length
    return records


cdef class RecordLayer:
    """Protects and unprotects the DTLS 1.2 records of one epoch with an AEAD cipher.

    ``cipher`` is ``"aes-gcm"`` or ``"chacha20-poly1305"``; ``write_aead``/``read_aead`` encrypt
    and decrypt (``cryptography``'s AEAD classes); ``write_iv``/``read_iv`` are the implicit IVs
    from the key block (4 bytes for AES-GCM, 12 for ChaCha20-Poly1305). ``write_sequence`` is the
    sequence number of the next record written. ``read_sequence``, when given, is the highest
    sequence number already read in this epoch by someone else (OpenSSL): it and everything
    below it count as seen. ``auth_error`` is the exception the AEAD raises for a bad tag.

    Received records are never raised about: a record of another epoch, a replay, a bad tag or a
    malformed header is dropped and counted (see the counter attributes).
    """

    cdef object _seal
    cdef object _open
    cdef object _auth_error
    cdef bint _chacha
    cdef int _explicit
    cdef unsigned char _write_iv[12]
    cdef unsigned char _read_iv[12]
    cdef uint64_t _write_sequence
    cdef uint64_t _read_top
    cdef uint64_t _read_seen
    cdef bint _read_any

    cdef readonly int epoch
    cdef readonly str cipher
    cdef readonly bint write_closed
    cdef readonly bint peer_closed
    cdef readonly object last_alert
    cdef readonly unsigned long long records_sent
    cdef readonly unsigned long long records_received
    cdef readonly unsigned long long replayed
    cdef readonly unsigned long long wrong_epoch
    cdef readonly unsigned long long bad_mac
    cdef readonly unsigned long long malformed
    cdef readonly unsigned long long after_close
    cdef readonly unsigned long long alerts_received

    def __init__(self, str cipher, write_aead, bytes write_iv, read_aead, bytes read_iv, *,
                 write_sequence, read_sequence=None, int epoch=1, auth_error=Exception):
        cdef Py_ssize_t iv_length
        if cipher == "aes-gcm":
            self._chacha = False
            self._explicit = EXPLICIT_NONCE
            iv_length = 4
        elif cipher == "chacha20-poly1305":
            self._chacha = True
            self._explicit = 0
            iv_length = 12
        else:
            raise ValueError(f"cipher must be 'aes-gcm' or 'chacha20-poly1305', got {cipher!r}")
        if len(write_iv) != iv_length or len(read_iv) != iv_length:
            raise ValueError(f"{cipher} needs {iv_length}-byte IVs, got {len(write_iv)} and {len(read_iv)}")
        if not 0 <= epoch <= 0xFFFF:
            raise ValueError(f"epoch must be 0..65535, got {epoch}")
        if not 0 <= write_sequence <= MAX_SEQUENCE:
            raise ValueError(f"write_sequence must be 0..2^48-1, got {write_sequence}")
        self.cipher = cipher
        self._seal = write_aead.encrypt
        self._open = read_aead.decrypt
        self._auth_error = auth_error
        memcpy(self._write_iv, PyBytes_AS_STRING(write_iv), iv_length)
        memcpy(self._read_iv, PyBytes_AS_STRING(read_iv), iv_length)
        self.epoch = epoch
        self._write_sequence = write_sequence
        self._read_any = False
        self._read_top = 0
        self._read_seen = 0
        if read_sequence is not None:
            if not 0 <= read_sequence <= MAX_SEQUENCE:
                raise ValueError(f"read_sequence must be 0..2^48-1, got {read_sequence}")
            self._read_any = True
            self._read_top = read_sequence
            self._read_seen = ~(<uint64_t>0)
        self.last_alert = None

    @property
    def write_sequence(self) -> int:
        """Sequence number of the next record :meth:`protect` writes."""
        return self._write_sequence

    @property
    def highest_read_sequence(self):
        """Highest sequence number accepted (or counted as seen) so far, None before any."""
        return self._read_top if self._read_any else None

    def stats(self) -> dict:
        """The counters as a dict."""
        return {
            "records_sent": self.records_sent,
            "records_received": self.records_received,
            "replayed": self.replayed,
            "wrong_epoch": self.wrong_epoch,
            "bad_mac": self.bad_mac,
            "malformed": self.malformed,
            "after_close": self.after_close,
            "alerts_received": self.alerts_received,
        }

    # -- writing -----------------------------------------------------------------------------

    cpdef bytes protect(self, plaintext, int content_type=CONTENT_APPLICATION_DATA):
        """One record holding ``plaintext`` (application data, or an alert with type 21)."""
        cdef Py_ssize_t n = len(plaintext)
        cdef unsigned char header[HEADER]
        if content_type != CONTENT_APPLICATION_DATA and content_type != CONTENT_ALERT:
            raise ValueError(f"the record layer writes application data (23) and alerts (21), not {content_type}")
        if self.write_closed:
            raise ConnectionError("DTLS write side is closed (close_notify or a fatal alert was sent)")
        if n > MAX_PLAINTEXT:
            raise ValueError(f"DTLS record plaintext is at most {MAX_PLAINTEXT} bytes, got {n}")
        if self._write_sequence > SEQUENCE_LIMIT:
            raise ConnectionError("DTLS write sequence numbers are exhausted for this epoch")
        header[0] = <unsigned char>content_type
        header[1] = 0xFE
        header[2] = 0xFD
        _store_epoch_sequence(&header[3], self.epoch, self._write_sequence)
        cdef Py_ssize_t fragment = self._explicit + n + TAG
        header[11] = <unsigned char>((fragment >> 8) & 0xFF)
        header[12] = <unsigned char>(fragment & 0xFF)
        sealed = self._seal(_nonce(self._write_iv, self._chacha, &header[3]), plaintext,
                            _additional_data(&header[3], content_type, n))
        if PyBytes_GET_SIZE(sealed) != n + TAG:
            raise RuntimeError("the AEAD returned an unexpected ciphertext length")
        cdef bytes record = PyBytes_FromStringAndSize(NULL, HEADER + fragment)
        cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(record)
        memcpy(out, header, HEADER)
        if self._explicit:
            memcpy(out + HEADER, &header[3], EXPLICIT_NONCE)
        memcpy(out + HEADER + self._explicit, PyBytes_AS_STRING(sealed), n + TAG)
        self._write_sequence += 1
        self.records_sent += 1
        return record

    def alert(self, int level, int description) -> bytes:
        """An alert record; after close_notify or a fatal alert the write side is closed."""
        cdef unsigned char body[2]
        if not (0 <= level <= 255 and 0 <= description <= 255):
            raise ValueError(f"alert level and description are bytes, got {level}, {description}")
        body[0] = <unsigned char>level
        body[1] = <unsigned char>description
        record = self.protect(PyBytes_FromStringAndSize(<char*>body, 2), CONTENT_ALERT)
        if description == ALERT_CLOSE_NOTIFY or level == ALERT_FATAL:
            self.write_closed = True
        return record

    def close_notify(self) -> bytes:
        """The close_notify alert record (RFC 5246 section 7.2.1); closes the write side."""
        return self.alert(ALERT_WARNING, ALERT_CLOSE_NOTIFY)

    # -- reading -----------------------------------------------------------------------------

    cdef inline bint _is_replay(self, uint64_t sequence) noexcept:
        # RFC 6347 section 4.1.2.6: a 64-record window ending at the highest sequence accepted.
        cdef uint64_t behind
        if not self._read_any or sequence > self._read_top:
            return False
        behind = self._read_top - sequence
        if behind >= 64:
            return True
        return (self._read_seen >> behind) & 1

    cdef inline void _mark_read(self, uint64_t sequence) noexcept:
        cdef uint64_t ahead
        if not self._read_any:
            self._read_any = True
            self._read_top = sequence
            self._read_seen = 1
        elif sequence > self._read_top:
            ahead = sequence - self._read_top
            self._read_seen = (self._read_seen << ahead) | 1 if ahead < 64 else 1
            self._read_top = sequence
        else:
            self._read_seen |= (<uint64_t>1) << (self._read_top - sequence)

    cdef object _open_record(self, const unsigned char* record, int content_type, int epoch,
                             uint64_t sequence, Py_ssize_t length):
        # ``record`` points at the 13-byte header; the fragment follows (length checked by caller).
        cdef const unsigned char* fragment = record + HEADER
        cdef Py_ssize_t plain_length
        if epoch != self.epoch:
            self.wrong_epoch += 1
            return None
        if self.peer_closed:
            self.after_close += 1
            return None
        if length < self._explicit + TAG:
            self.malformed += 1
            return None
        if self._is_replay(sequence):
            self.replayed += 1
            return None
        plain_length = length - self._explicit - TAG
        try:
            plaintext = self._open(
                _nonce(self._read_iv, self._chacha, record + 3 if self._chacha else fragment),
                PyBytes_FromStringAndSize(<char*>fragment + self._explicit, length - self._explicit),
                _additional_data(record + 3, content_type, plain_length),
            )
        except Exception as error:
            if not isinstance(error, self._auth_error):
                raise
            self.bad_mac += 1
            return None
        self._mark_read(sequence)
        self.records_received += 1
        if content_type == CONTENT_ALERT:
            self._note_alert(plaintext)
        return (content_type, plaintext)

    cdef void _note_alert(self, bytes body):
        cdef const unsigned char* p
        if PyBytes_GET_SIZE(body) != 2:
            return
        p = <const unsigned char*>PyBytes_AS_STRING(body)
        self.alerts_received += 1
        self.last_alert = (p[0], p[1])
        if p[1] == ALERT_CLOSE_NOTIFY or p[0] == ALERT_FATAL:
            self.peer_closed = True

    def unprotect(self, record):
        """(type, plaintext) of the one record in ``record``, or None if it was dropped (and counted)."""
        result = self.unprotect_datagram(record)
        return result[0] if len(result) == 1 else None

    cpdef list unprotect_datagram(self, datagram):
        """(type, plaintext) of every record in ``datagram`` that is accepted, in order.

        Records of another epoch, replays, records that fail authentication or follow the peer's
        close_notify are dropped and counted; a malformed header ends the datagram (counted once).
        """
        cdef bytes raw = _as_bytes(datagram)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(raw)
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t length
        cdef int version
        cdef list accepted = []
        while pos < end:
            if end - pos < HEADER:
                self.malformed += 1
                break
            length = (<Py_ssize_t>p[pos + 11] << 8) | p[pos + 12]
            if length > MAX_FRAGMENT or end - pos - HEADER < length:
                self.malformed += 1
                break
            version = (p[pos + 1] << 8) | p[pos + 2]
            if version != VERSION_DTLS12:
                self.malformed += 1
            else:
                opened = self._open_record(p + pos, p[pos], (p[pos + 3] << 8) | p[pos + 4],
                                           _load_u48(p + pos + 5), length)
                if opened is not None:
                    accepted.append(opened)
            pos += HEADER + length
        return accepted

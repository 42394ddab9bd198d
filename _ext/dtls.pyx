# DTLS 1.2 records of one epoch with an AEAD cipher: protect, unprotect, replay window, alerts.
#
# Record layout (RFC 6347 section 4.1): type(1) version(2) epoch(2) sequence(6) length(2) fragment.
# AES-GCM (RFC 5288): fragment = explicit nonce(8) || ciphertext || tag(16), nonce = the 4-byte
# implicit IV || explicit nonce; we send epoch||sequence as the explicit nonce, as OpenSSL does.
# ChaCha20-Poly1305 (RFC 7905): fragment = ciphertext || tag(16), nonce = the 12-byte IV XOR
# (4 zero bytes || epoch || sequence). Both: additional data = epoch || sequence || type ||
# version || plaintext length (RFC 5246 section 6.2.3.3).
#
# The cipher is OpenSSL's: either its EVP AEAD functions called from here (EvpAead, sealing in place
# into the record; their addresses are handed in at run time) or any objects with encrypt/decrypt
# (nonce, data, aad) methods, such as ``cryptography``'s AESGCM and ChaCha20Poly1305. The layer
# builds the nonce, the additional data and the record around them. Every length of a received
# datagram is checked before a byte of it is read.

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


cdef inline void _additional_data_into(unsigned char* p, const unsigned char* epoch_sequence,
                                      int content_type, Py_ssize_t plaintext_length) noexcept:
    # epoch || sequence || type || version || plaintext length (RFC 5246 section 6.2.3.3).
    memcpy(p, epoch_sequence, 8)
    p[8] = <unsigned char>content_type
    p[9] = 0xFE
    p[10] = 0xFD
    p[11] = <unsigned char>((plaintext_length >> 8) & 0xFF)
    p[12] = <unsigned char>(plaintext_length & 0xFF)


cdef inline bytes _additional_data(const unsigned char* epoch_sequence, int content_type,
                                   Py_ssize_t plaintext_length):
    cdef bytes aad = PyBytes_FromStringAndSize(NULL, 13)
    _additional_data_into(<unsigned char*>PyBytes_AS_STRING(aad), epoch_sequence, content_type,
                          plaintext_length)
    return aad


cdef inline void _nonce_into(unsigned char* p, const unsigned char* iv, bint chacha,
                             const unsigned char* eight) noexcept:
    # ChaCha20-Poly1305 (RFC 7905): the 12-byte IV XOR (4 zero bytes || epoch || sequence), with
    # ``eight`` = epoch || sequence. AES-GCM (RFC 5288): the 4-byte IV || the explicit nonce ``eight``.
    cdef int i
    if chacha:
        memcpy(p, iv, 12)
        for i in range(8):
            p[4 + i] ^= eight[i]
    else:
        memcpy(p, iv, 4)
        memcpy(p + 4, eight, 8)


cdef inline bytes _nonce(const unsigned char* iv, bint chacha, const unsigned char* eight):
    cdef bytes nonce = PyBytes_FromStringAndSize(NULL, 12)
    _nonce_into(<unsigned char*>PyBytes_AS_STRING(nonce), iv, chacha, eight)
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


# ---------------------------------------------------------------------------------------------
# OpenSSL's EVP AEAD interface, called directly. The functions are not linked at build time (the
# wheel then needs no OpenSSL headers or library): clasp_fast.dtls_records finds the libcrypto the
# Python process already uses and hands their addresses to install_evp(). EVP_CipherInit_ex,
# EVP_CipherUpdate, EVP_CipherFinal_ex and EVP_CIPHER_CTX_ctrl have had these signatures since
# OpenSSL 1.1.0.

ctypedef void* (*evp_ctx_new_t)() noexcept nogil
ctypedef void (*evp_ctx_free_t)(void*) noexcept nogil
ctypedef const void* (*evp_cipher_t)() noexcept nogil
ctypedef int (*evp_init_t)(void*, const void*, void*, const unsigned char*, const unsigned char*,
                           int) noexcept nogil
ctypedef int (*evp_update_t)(void*, unsigned char*, int*, const unsigned char*, int) noexcept nogil
ctypedef int (*evp_final_t)(void*, unsigned char*, int*) noexcept nogil
ctypedef int (*evp_ctrl_t)(void*, int, int, void*) noexcept nogil

cdef struct EvpApi:
    evp_ctx_new_t ctx_new
    evp_ctx_free_t ctx_free
    evp_cipher_t aes_128_gcm
    evp_cipher_t aes_256_gcm
    evp_cipher_t chacha20_poly1305
    evp_init_t init
    evp_update_t update
    evp_final_t final
    evp_ctrl_t ctrl

cdef EvpApi _evp
cdef bint _evp_installed = False

cdef enum:
    EVP_CTRL_AEAD_GET_TAG = 0x10
    EVP_CTRL_AEAD_SET_TAG = 0x11

EVP_FUNCTIONS = ("EVP_CIPHER_CTX_new", "EVP_CIPHER_CTX_free", "EVP_aes_128_gcm", "EVP_aes_256_gcm",
                 "EVP_chacha20_poly1305", "EVP_CipherInit_ex", "EVP_CipherUpdate", "EVP_CipherFinal_ex",
                 "EVP_CIPHER_CTX_ctrl")


def install_evp(dict addresses) -> None:
    """Use these function addresses (name -> int, every name of EVP_FUNCTIONS) for EvpAead."""
    global _evp, _evp_installed
    cdef EvpApi api
    cdef size_t[9] values
    cdef int i
    for i, name in enumerate(EVP_FUNCTIONS):
        value = addresses.get(name)
        if not value:
            raise ValueError(f"no address for {name}")
        values[i] = <size_t>value
    api.ctx_new = <evp_ctx_new_t>values[0]
    api.ctx_free = <evp_ctx_free_t>values[1]
    api.aes_128_gcm = <evp_cipher_t>values[2]
    api.aes_256_gcm = <evp_cipher_t>values[3]
    api.chacha20_poly1305 = <evp_cipher_t>values[4]
    api.init = <evp_init_t>values[5]
    api.update = <evp_update_t>values[6]
    api.final = <evp_final_t>values[7]
    api.ctrl = <evp_ctrl_t>values[8]
    _evp = api
    _evp_installed = True


def evp_installed() -> bool:
    return _evp_installed


cdef class EvpAead:
    """One direction's AEAD through OpenSSL's EVP interface: one cipher context, keyed once.

    ``cipher``: "aes-gcm" (16- or 32-byte key) or "chacha20-poly1305" (32-byte key); ``encrypt``
    chooses the direction. encrypt()/decrypt() mirror ``cryptography``'s AEAD methods (decrypt
    raises ValueError on a bad tag); the record layer calls the C methods, which write in place.
    """

    def __init__(self, str cipher, bytes key, bint encrypt):
        cdef const void* kind
        if not _evp_installed:
            raise RuntimeError("OpenSSL's EVP functions are not installed (install_evp)")
        if cipher == "aes-gcm" and len(key) == 16:
            kind = _evp.aes_128_gcm()
        elif cipher == "aes-gcm" and len(key) == 32:
            kind = _evp.aes_256_gcm()
        elif cipher == "chacha20-poly1305" and len(key) == 32:
            kind = _evp.chacha20_poly1305()
        else:
            raise ValueError(f"no EVP cipher for {cipher!r} with a {len(key)}-byte key")
        if kind == NULL:
            raise ValueError(f"this libcrypto has no {cipher}")
        if self._ctx == NULL:
            self._ctx = _evp.ctx_new()
        if self._ctx == NULL:
            raise MemoryError()
        if _evp.init(self._ctx, kind, NULL, <const unsigned char*>PyBytes_AS_STRING(key), NULL, encrypt) != 1:
            raise ValueError("EVP_CipherInit_ex refused the key")
        self.encrypting = encrypt

    def __dealloc__(self):
        if self._ctx != NULL:
            _evp.ctx_free(self._ctx)
            self._ctx = NULL

    cdef int seal(self, const unsigned char* nonce, const unsigned char* aad,
                  const unsigned char* plaintext, int length, unsigned char* out) noexcept:
        """Ciphertext (``length`` bytes) then the 16-byte tag into ``out``; 0, or -1 on failure."""
        cdef int written = 0, final = 0
        if (_evp.init(self._ctx, NULL, NULL, NULL, nonce, 1) != 1
                or _evp.update(self._ctx, NULL, &written, aad, 13) != 1
                or _evp.update(self._ctx, out, &written, plaintext, length) != 1
                or _evp.final(self._ctx, out + written, &final) != 1
                or written + final != length
                or _evp.ctrl(self._ctx, EVP_CTRL_AEAD_GET_TAG, TAG, out + length) != 1):
            return -1
        return 0

    cdef int unseal(self, const unsigned char* nonce, const unsigned char* aad,
                    const unsigned char* sealed, int length, unsigned char* out) noexcept:
        """Plaintext of ``sealed`` (``length`` bytes of ciphertext, then the tag) into ``out``;
        0, or -1 if the tag does not match."""
        cdef int written = 0, final = 0
        if (_evp.init(self._ctx, NULL, NULL, NULL, nonce, 0) != 1
                or _evp.update(self._ctx, NULL, &written, aad, 13) != 1
                or _evp.update(self._ctx, out, &written, sealed, length) != 1
                or _evp.ctrl(self._ctx, EVP_CTRL_AEAD_SET_TAG, TAG, <void*>(sealed + length)) != 1
                or _evp.final(self._ctx, out + written, &final) != 1):
            return -1
        return 0

    def encrypt(self, bytes nonce, bytes data, bytes associated_data) -> bytes:
        return self._whole(nonce, data, associated_data, True)

    def decrypt(self, bytes nonce, bytes data, bytes associated_data) -> bytes:
        return self._whole(nonce, data, associated_data, False)

    cdef bytes _whole(self, bytes nonce, bytes data, bytes aad, bint sealing):
        if sealing != self.encrypting:
            raise ValueError(f"this EvpAead {'encrypts' if self.encrypting else 'decrypts'} only")
        if len(nonce) != 12 or len(aad) != 13 or (not sealing and len(data) < TAG):
            raise ValueError("needs a 12-byte nonce, 13 bytes of associated data (and a tag to decrypt)")
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data) - (0 if sealing else TAG)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n + TAG if sealing else n)
        cdef const unsigned char* p_nonce = <const unsigned char*>PyBytes_AS_STRING(nonce)
        cdef const unsigned char* p_aad = <const unsigned char*>PyBytes_AS_STRING(aad)
        cdef const unsigned char* p_data = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef unsigned char* p_out = <unsigned char*>PyBytes_AS_STRING(out)
        if sealing:
            if self.seal(p_nonce, p_aad, p_data, <int>n, p_out) != 0:
                raise ValueError("EVP encryption failed")
        elif self.unseal(p_nonce, p_aad, p_data, <int>n, p_out) != 0:
            raise ValueError("authentication failed")
        return out

cdef class RecordLayer:
    """Protects and unprotects the DTLS 1.2 records of one epoch with an AEAD cipher.

    ``cipher`` is ``"aes-gcm"`` or ``"chacha20-poly1305"``; ``write_aead``/``read_aead`` encrypt
    and decrypt (two EvpAead, or ``cryptography``'s AEAD classes); ``write_iv``/``read_iv`` are the
    implicit IVs from the key block (4 bytes for AES-GCM, 12 for ChaCha20-Poly1305). ``write_sequence`` is the
    sequence number of the next record written. ``read_sequence``, when given, is the highest
    sequence number already read in this epoch by someone else (OpenSSL): it and everything
    below it count as seen. ``auth_error`` is the exception the AEAD raises for a bad tag.

    Received records are never raised about: a record of another epoch, a replay, a bad tag or a
    malformed header is dropped and counted (see the counter attributes).
    """

    # The fields are declared in clasp_fast/_dtls.pxd.

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
        if isinstance(write_aead, EvpAead) and isinstance(read_aead, EvpAead):
            if not (<EvpAead>write_aead).encrypting or (<EvpAead>read_aead).encrypting:
                raise ValueError("write_aead must encrypt and read_aead decrypt")
            self._evp_write = write_aead
            self._evp_read = read_aead
            self.backend = "evp"
        else:
            self.backend = "python-aead"
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

    @property
    def record_overhead(self) -> int:
        """Bytes a record adds to its plaintext: header, explicit nonce (AES-GCM) and tag."""
        return self.plaintext_offset() + TAG

    cdef Py_ssize_t plaintext_offset(self) noexcept:
        """Where a record's plaintext (ciphertext once sealed) starts: after header and explicit nonce."""
        return HEADER + self._explicit

    cdef int _check_writable(self, Py_ssize_t n, int content_type) except -1:
        if content_type != CONTENT_APPLICATION_DATA and content_type != CONTENT_ALERT:
            raise ValueError(f"the record layer writes application data (23) and alerts (21), not {content_type}")
        if self.write_closed:
            raise ConnectionError("DTLS write side is closed (close_notify or a fatal alert was sent)")
        if n > MAX_PLAINTEXT:
            raise ValueError(f"DTLS record plaintext is at most {MAX_PLAINTEXT} bytes, got {n}")
        if self._write_sequence > SEQUENCE_LIMIT:
            raise ConnectionError("DTLS write sequence numbers are exhausted for this epoch")
        return 0

    cdef void _write_header(self, unsigned char* out, int content_type, Py_ssize_t n) noexcept:
        # The header, then the explicit nonce (AES-GCM: epoch || sequence, as in the header).
        cdef Py_ssize_t fragment = self._explicit + n + TAG
        out[0] = <unsigned char>content_type
        out[1] = 0xFE
        out[2] = 0xFD
        _store_epoch_sequence(&out[3], self.epoch, self._write_sequence)
        out[11] = <unsigned char>((fragment >> 8) & 0xFF)
        out[12] = <unsigned char>(fragment & 0xFF)
        if self._explicit:
            memcpy(out + HEADER, &out[3], EXPLICIT_NONCE)

    cdef int seal_in_place(self, unsigned char* record, Py_ssize_t n) except -1:
        """Make ``record`` an application data record: the ``n`` bytes of plaintext are already in
        place after the header and explicit nonce, and the tag's 16 bytes follow them. Writes the
        header and nonce, encrypts in place and writes the tag. The EVP backend only."""
        self._check_writable(n, CONTENT_APPLICATION_DATA)
        if self._evp_write is None:
            raise RuntimeError("sealing in place needs the EVP backend")
        self._write_header(record, CONTENT_APPLICATION_DATA, n)
        self._seal_evp(record, CONTENT_APPLICATION_DATA, record + self.plaintext_offset(), n)
        self._write_sequence += 1
        self.records_sent += 1
        return 0

    cdef int _seal_evp(self, unsigned char* record, int content_type, const unsigned char* source,
                       Py_ssize_t n) except -1:
        # ``record`` has its header and explicit nonce written: encrypt the ``n`` bytes at ``source``
        # into the record's body (``source`` may be the body itself) and write the tag after them.
        cdef unsigned char nonce[12]
        cdef unsigned char aad[13]
        _nonce_into(nonce, self._write_iv, self._chacha, &record[3])
        _additional_data_into(aad, &record[3], content_type, n)
        if self._evp_write.seal(nonce, aad, source, <int>n, record + self.plaintext_offset()) != 0:
            raise RuntimeError("OpenSSL EVP encryption failed")
        return 0

    cpdef bytes protect(self, plaintext, int content_type=CONTENT_APPLICATION_DATA):
        """One record holding ``plaintext`` (application data, or an alert with type 21)."""
        cdef Py_ssize_t n = len(plaintext)
        cdef const unsigned char* source
        self._check_writable(n, content_type)
        cdef bytes record = PyBytes_FromStringAndSize(NULL, self.plaintext_offset() + n + TAG)
        cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(record)
        cdef const unsigned char[::1] view
        self._write_header(out, content_type, n)
        if self._evp_write is not None:
            if type(plaintext) is bytes:
                source = <const unsigned char*>PyBytes_AS_STRING(plaintext)
            else:
                view = plaintext
                source = &view[0] if n else out  # nothing is read from it
            self._seal_evp(out, content_type, source, n)
        else:
            sealed = self._seal(_nonce(self._write_iv, self._chacha, &out[3]), plaintext,
                                _additional_data(&out[3], content_type, n))
            if PyBytes_GET_SIZE(sealed) != n + TAG:
                raise RuntimeError("the AEAD returned an unexpected ciphertext length")
            memcpy(out + self.plaintext_offset(), PyBytes_AS_STRING(sealed), n + TAG)
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

    cdef bint _is_replay(self, uint64_t sequence) noexcept:
        # RFC 6347 section 4.1.2.6: a 64-record window ending at the highest sequence accepted.
        cdef uint64_t behind
        if not self._read_any or sequence > self._read_top:
            return False
        behind = self._read_top - sequence
        if behind >= 64:
            return True
        return (self._read_seen >> behind) & 1

    cdef void _mark_read(self, uint64_t sequence) noexcept:
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
        cdef unsigned char nonce[12]
        cdef unsigned char aad[13]
        if self._evp_read is not None:
            _nonce_into(nonce, self._read_iv, self._chacha, record + 3 if self._chacha else fragment)
            _additional_data_into(aad, record + 3, content_type, plain_length)
            plaintext = PyBytes_FromStringAndSize(NULL, plain_length)
            if self._evp_read.unseal(nonce, aad, fragment + self._explicit, <int>plain_length,
                                     <unsigned char*>PyBytes_AS_STRING(plaintext)) != 0:
                self.bad_mac += 1
                return None
            return self._accepted(content_type, sequence, plaintext)
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
        return self._accepted(content_type, sequence, plaintext)

    cdef tuple _accepted(self, int content_type, uint64_t sequence, bytes plaintext):
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

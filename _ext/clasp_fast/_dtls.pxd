# The C interface of clasp_fast._dtls (built from dtls.pyx): the record layer, for the compiled
# SCTP sender, which writes each packet straight into its record and seals it there
# (`from clasp_fast._dtls cimport RecordLayer`).

from libc.stdint cimport uint64_t


cdef class EvpAead:
    cdef void* _ctx
    cdef readonly bint encrypting

    cdef int seal(self, const unsigned char* nonce, const unsigned char* aad,
                  const unsigned char* plaintext, int length, unsigned char* out) noexcept
    cdef int unseal(self, const unsigned char* nonce, const unsigned char* aad,
                    const unsigned char* sealed, int length, unsigned char* out) noexcept
    cdef bytes _whole(self, bytes nonce, bytes data, bytes aad, bint sealing)


cdef class RecordLayer:
    cdef object _seal
    cdef object _open
    cdef EvpAead _evp_write      # set when the AEADs are EvpAead: records are sealed in place
    cdef EvpAead _evp_read
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
    cdef readonly str backend    # "evp" or "python-aead" (objects with encrypt/decrypt methods)
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

    cpdef bytes protect(self, plaintext, int content_type=*)
    cdef int _check_writable(self, Py_ssize_t plaintext_length, int content_type) except -1
    cdef Py_ssize_t plaintext_offset(self) noexcept
    cdef void _write_header(self, unsigned char* out, int content_type, Py_ssize_t n) noexcept
    cdef int _seal_evp(self, unsigned char* record, int content_type, const unsigned char* source,
                       Py_ssize_t n) except -1
    cdef int seal_in_place(self, unsigned char* record, Py_ssize_t plaintext_length) except -1
    cdef bint _is_replay(self, uint64_t sequence) noexcept
    cdef void _mark_read(self, uint64_t sequence) noexcept
    cdef object _open_record(self, const unsigned char* record, int content_type, int epoch,
                             uint64_t sequence, Py_ssize_t length)
    cdef tuple _accepted(self, int content_type, uint64_t sequence, bytes plaintext)
    cdef void _note_alert(self, bytes body)
    cpdef list unprotect_datagram(self, datagram)

# The C interface of clasp_fast._address (built from address.pyx): the subscription index and
# the compiled patterns, for other compiled modules (`from clasp_fast._address cimport ...`).
#
# Another module needs only SubscriptionIndex.match / match_entries (cpdef: a C call from
# compiled code, a method from Python). The other classes are here because the index's
# fields are typed with them; their fields are the index's private state.

from cpython.object cimport PyObject


cdef struct _Hit:
    unsigned long long seq
    PyObject* sub


cdef class _Glob:
    cdef bint negated
    cdef tuple programs

    cdef bint match(self, const char* s, Py_ssize_t n) except -1


cdef class Pattern:
    cdef readonly str pattern
    cdef bytes _utf8
    cdef const char* _p
    cdef Py_ssize_t _n
    cdef Py_ssize_t _nseg
    cdef Py_ssize_t* _seg_start
    cdef Py_ssize_t* _seg_len
    cdef unsigned char* _seg_kind
    cdef bint _literal
    cdef bint _needs_glob
    cdef _Glob _glob
    cdef tuple _segments

    cdef bint _segments_match(self, const char* p, Py_ssize_t n) noexcept nogil
    cdef bint _matches_utf8(self, const char* p, Py_ssize_t n) except -1


cdef class _Node


cdef class _Prefixes:
    cdef dict next               # byte (int) -> _Prefixes, None while empty
    cdef list nodes              # partial _Nodes whose prefix ends here, None while empty

    cdef add(self, bytes prefix, _Node node)
    cdef bint discard(self, bytes prefix, _Node node)


cdef class _Node:
    cdef dict literal            # segment str -> _Node, None while empty
    cdef _Node star
    cdef _Node globstar
    cdef dict partial_edges      # (segment bytes, checked) -> partial _Node, None while empty
    cdef list partial            # partial children tried on every segment, None while empty
    cdef _Prefixes prefixes      # filtered partial children by literal prefix, None while empty
    cdef list subs               # [_Subscription] ending here, in subscription order
    cdef Pattern pattern         # the pattern every subscription here shares
    cdef _Node parent
    cdef object edge             # literal: the segment str; partial: (segment, checked)
    cdef int kind
    cdef unsigned long long mark  # last walk step that put this node in a state set
    cdef bytes seg               # partial: the segment's UTF-8 bytes
    cdef bint checked            # partial: filter the segment with _star_glob
    cdef bytes prefix            # partial, checked: the bytes before the first '*'

    cdef bint is_empty(self)


cdef class SubscriptionIndex:
    cdef _Node _root
    cdef dict _by_key
    cdef dict _by_owner
    cdef dict _cache
    cdef dict _entry_cache
    cdef Py_ssize_t _cache_size
    cdef unsigned long long _seq
    cdef unsigned long long _mark
    cdef Py_ssize_t _next_key
    cdef Py_ssize_t _nodes
    cdef PyObject** _cur
    cdef PyObject** _nxt
    cdef Py_ssize_t _states_cap
    cdef _Hit* _hits
    cdef Py_ssize_t _hits_cap

    cdef int _reserve_states(self) except -1
    cdef int _reserve_hits(self, Py_ssize_t want) except -1
    cdef _invalidate(self)
    cdef _Node _child(self, _Node node, bytes seg, int kind, bint checked)
    cdef _prune(self, _Node node)
    cdef Py_ssize_t _walk(self, object address) except -1

    cpdef tuple match(self, str address)
        # The subscribers whose pattern matches `address`, in subscription order (a cached
        # result is the same tuple object: do not change it).
    cpdef tuple match_entries(self, str address)
        # The same as (key, pattern str, subscriber) triples.

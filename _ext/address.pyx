"""Address validation, compiled wildcard patterns and the subscription index.

Semantics follow the reference router (docs/protocol.md §9): addresses and patterns
are split into segments after their first character; a whole segment ``*``
matches exactly one segment (possibly empty), a whole segment ``**`` matches
zero or more, a segment with an embedded ``*`` matches one segment and the
whole pattern must also satisfy the glob of §9.3; everything else is literal.

All matching works on the UTF-8 bytes of the ``str`` (CPython caches them),
every index into those bytes is bounded by their length, and nothing recurses.

C interface for other compiled modules: ``clasp_fast._address.pxd``.
"""

from cpython.object cimport PyObject
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.string cimport memcmp, memchr, memset
from libc.stdlib cimport malloc, realloc, free, qsort

from clasp_fast.errors import AddressError, PatternError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    void PyErr_Clear()


# ---------------------------------------------------------------------------
# UTF-8 access

cdef const char* _utf8(object text, Py_ssize_t* size, str what) except NULL:
    """The UTF-8 bytes of ``text`` (borrowed from the str object)."""
    cdef const char* data
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    data = PyUnicode_AsUTF8AndSize(text, size)
    if data == NULL:
        PyErr_Clear()
        if what == "pattern":
            raise PatternError("pattern is not encodable as UTF-8 (lone surrogate)", text)
        raise AddressError("address is not encodable as UTF-8 (lone surrogate)", text)
    return data


cdef inline Py_ssize_t _first_char_len(const char* p, Py_ssize_t n) noexcept nogil:
    """Byte length of the first character (the live matcher drops it unseen)."""
    cdef unsigned char lead
    cdef Py_ssize_t width
    if n == 0:
        return 0
    lead = <unsigned char>p[0]
    if lead < 0x80:
        width = 1
    elif lead >= 0xF0:
        width = 4
    elif lead >= 0xE0:
        width = 3
    elif lead >= 0xC0:
        width = 2
    else:
        width = 1
    return width if width <= n else n


cdef inline Py_ssize_t _segment_end(const char* p, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    """Offset of the ``/`` ending the segment that starts at ``start``, or ``n``."""
    cdef const char* slash
    if start >= n:
        return n
    slash = <const char*>memchr(p + start, b'/', <size_t>(n - start))
    if slash == NULL:
        return n
    return slash - p


# ---------------------------------------------------------------------------
# Validation (§9.1)

cdef str _address_problem(const char* p, Py_ssize_t n):
    cdef Py_ssize_t i
    if n == 0:
        return "address is empty"
    if p[0] != b'/':
        return "address must start with '/'"
    for i in range(1, n):
        if p[i] == b'/' and p[i - 1] == b'/':
            return f"empty segment at byte offset {i}"
    return None


def validate_address(address: str) -> None:
    """Raise :class:`AddressError` unless ``address`` is a valid CLASP address (docs/protocol.md §9.1).

    Valid: non-empty, starts with ``/``, no empty segment except a trailing one
    (``/a/`` is valid, ``/a//b`` is not). Any other character is allowed.
    """
    cdef Py_ssize_t n
    cdef const char* p = _utf8(address, &n, "address")
    cdef str problem = _address_problem(p, n)
    if problem is not None:
        raise AddressError(problem, address)


def is_valid_address(address) -> bool:
    """True when :func:`validate_address` would accept ``address``."""
    cdef Py_ssize_t n
    cdef const char* p
    if not isinstance(address, str):
        return False
    p = PyUnicode_AsUTF8AndSize(address, &n)
    if p == NULL:
        PyErr_Clear()
        return False
    return _address_problem(p, n) is None


def validate_pattern(pattern: str) -> None:
    """Raise :class:`PatternError` unless the router would accept ``pattern`` in a SUBSCRIBE.

    The reference router checks a pattern only with the address rules
    (§9.1, ERROR 202 otherwise); wildcard characters are never rejected.
    """
    cdef Py_ssize_t n
    cdef const char* p = _utf8(pattern, &n, "pattern")
    cdef str problem = _address_problem(p, n)
    if problem is not None:
        raise PatternError(problem.replace("address", "pattern"), pattern)


# ---------------------------------------------------------------------------
# Glob (§9.3): compiled to small byte programs, run over sorted position sets

cdef enum:
    OP_LIT = 1        # one literal byte follows
    OP_ONE = 2        # ``?``: any byte but '/'
    OP_CLASS = 3      # ``[...]``: a 32-byte bit set follows
    OP_STAR = 4       # ``*``: a run of bytes without '/'
    OP_ANY = 5        # ``**`` at the very end: any run of bytes
    OP_DIRS = 6       # ``**/`` as a whole component: nothing, or a run ending in '/'

cdef enum:
    MAX_BRACE_DEPTH = 10
    MAX_ALTERNATIVES = 1024   # a glob expanding to more alternatives matches nothing
    STACK_POSITIONS = 256


class _InvalidGlob(Exception):
    pass


cdef Py_ssize_t _skip_class(bytes g, Py_ssize_t i):
    """Index just past the ``[...]`` class opening at ``i`` (len(g) if unterminated)."""
    cdef Py_ssize_t n = len(g)
    cdef bint first = True
    i += 1
    if i < n and g[i] in b"!^":
        i += 1
    while i < n and (first or g[i] != 0x5D):  # ']'
        if g[i] == 0x5C:  # backslash
            i += 1
        i += 1
        first = False
    return i + 1 if i < n else n


cdef tuple _parse_sequence(bytes g, Py_ssize_t i, int depth):
    """Expand braces in ``g[i:]`` up to a ``,``/``}`` closing this depth."""
    cdef Py_ssize_t n = len(g), j
    cdef list results = [b""]
    cdef list alternatives
    cdef int c
    while i < n:
        c = g[i]
        if c == 0x5C:  # backslash: keep the escape pair for the tokenizer
            j = i + 2 if i + 1 < n else n
        elif c == 0x5B:  # '['
            j = _skip_class(g, i)
        elif c == 0x7B:  # '{'
            if depth >= MAX_BRACE_DEPTH:
                raise _InvalidGlob()
            alternatives, i = _parse_alternatives(g, i + 1, depth + 1)
            results = [head + tail for head in results for tail in alternatives]
            if len(results) > MAX_ALTERNATIVES:
                raise _InvalidGlob()
            continue
        elif depth > 0 and (c == 0x2C or c == 0x7D):  # ',' or '}'
            break
        else:
            j = i + 1
        chunk = g[i:j]
        results = [head + chunk for head in results]
        i = j
    return results, i


cdef tuple _parse_alternatives(bytes g, Py_ssize_t i, int depth):
    cdef list alternatives = []
    cdef list sequence
    cdef Py_ssize_t n = len(g)
    while True:
        sequence, i = _parse_sequence(g, i, depth)
        alternatives.extend(sequence)
        if i < n and g[i] == 0x2C:
            i += 1
            continue
        if i < n and g[i] == 0x7D:
            return alternatives, i + 1
        raise _InvalidGlob()  # unterminated '{'


cdef int _unescape(int c) noexcept:
    if c == 0x62:  # \b
        return 0x08
    if c == 0x6E:  # \n
        return 0x0A
    if c == 0x72:  # \r
        return 0x0D
    if c == 0x74:  # \t
        return 0x09
    return c


cdef bytes _tokenize(bytes a):
    """Compile one brace-free glob into a program; None when it is malformed."""
    cdef bytearray out = bytearray()
    cdef bytearray bits
    cdef Py_ssize_t n = len(a), i = 0, j, last_pair
    cdef int c, low, high, b
    cdef bint negate, first
    while i < n:
        c = a[i]
        if c == 0x2A:  # '*'
            if i + 1 < n and a[i + 1] == 0x2A:
                j = i + 2
                while j + 3 <= n and a[j:j + 3] == b"/**":
                    j += 3
                last_pair = j - 2
                if j == n:
                    out.append(OP_ANY)
                    i = j
                elif (last_pair == 0 or a[last_pair - 1] == 0x2F) and a[j] == 0x2F:
                    out.append(OP_DIRS)
                    i = j + 1
                else:
                    out.append(OP_STAR)
                    i = j
            else:
                out.append(OP_STAR)
                i += 1
        elif c == 0x3F:  # '?'
            out.append(OP_ONE)
            i += 1
        elif c == 0x5B:  # '['
            bits = bytearray(32)
            i += 1
            negate = i < n and a[i] in b"!^"
            if negate:
                i += 1
            first = True
            while i < n and (first or a[i] != 0x5D):
                low = a[i]
                if low == 0x5C:
                    i += 1
                    if i >= n:
                        return None
                    low = _unescape(a[i])
                i += 1
                high = low
                if i + 1 < n and a[i] == 0x2D and a[i + 1] != 0x5D:  # range a-z
                    i += 1
                    high = a[i]
                    if high == 0x5C:
                        i += 1
                        if i >= n:
                            return None
                        high = _unescape(a[i])
                    i += 1
                for b in range(low, high + 1):
                    bits[b >> 3] |= 1 << (b & 7)
                first = False
            if i >= n:
                return None  # unterminated class: the glob matches nothing
            i += 1
            if negate:
                for b in range(32):
                    bits[b] ^= 0xFF
            out.append(OP_CLASS)
            out += bits
        elif c == 0x5C:  # backslash escape
            if i + 1 >= n:
                return None
            out.append(OP_LIT)
            out.append(_unescape(a[i + 1]))
            i += 2
        else:
            out.append(OP_LIT)
            out.append(c)
            i += 1
    return bytes(out)


cdef bint _run_program(const unsigned char* prog, Py_ssize_t plen,
                       const unsigned char* s, Py_ssize_t n,
                       Py_ssize_t* cur, Py_ssize_t* nxt) noexcept nogil:
    """Whether the program matches all of ``s``; cur/nxt hold n + 1 positions each."""
    cdef Py_ssize_t ncur = 1, nn, i, p, q, last, pc = 0, k
    cdef Py_ssize_t* swap
    cdef unsigned char op, c
    cdef const unsigned char* bits
    cur[0] = 0
    while pc < plen:
        op = prog[pc]
        nn = 0
        if op == OP_LIT:
            c = prog[pc + 1]
            pc += 2
            for i in range(ncur):
                p = cur[i]
                if p < n and s[p] == c:
                    nxt[nn] = p + 1
                    nn += 1
        elif op == OP_ONE:
            pc += 1
            for i in range(ncur):
                p = cur[i]
                if p < n and s[p] != b'/':
                    nxt[nn] = p + 1
                    nn += 1
        elif op == OP_CLASS:
            bits = prog + pc + 1
            pc += 33
            for i in range(ncur):
                p = cur[i]
                if p < n and (bits[s[p] >> 3] >> (s[p] & 7)) & 1:
                    nxt[nn] = p + 1
                    nn += 1
        elif op == OP_STAR:
            pc += 1
            last = -1
            for i in range(ncur):
                p = cur[i]
                if p <= last:
                    continue  # its run was already emitted by an earlier start
                q = p
                nxt[nn] = q
                nn += 1
                while q < n and s[q] != b'/':
                    q += 1
                    nxt[nn] = q
                    nn += 1
                last = q
        elif op == OP_ANY:
            pc += 1
            for p in range(cur[0], n + 1):
                nxt[nn] = p
                nn += 1
        else:  # OP_DIRS
            pc += 1
            k = 0
            for p in range(cur[0], n + 1):
                while k < ncur and cur[k] < p:
                    k += 1
                if k < ncur and cur[k] == p and (p == 0 or (p < n and s[p - 1] == b'/')):
                    nxt[nn] = p  # the component vanishes: a/**/b matches a/b
                    nn += 1
                elif p > cur[0] and s[p - 1] == b'/':
                    nxt[nn] = p
                    nn += 1
        if nn == 0:
            return False
        swap = cur
        cur = nxt
        nxt = swap
        ncur = nn
    return cur[ncur - 1] == n


cdef class _Glob:
    """A glob compiled for repeated matching (brace alternatives expanded)."""

    def __cinit__(self, bytes glob):
        cdef Py_ssize_t i = 0
        cdef list alternatives
        cdef bytes prog
        self.negated = False
        while i < len(glob) and glob[i] == 0x21:  # leading '!' negates, repeatably
            self.negated = not self.negated
            i += 1
        try:
            alternatives, _ = _parse_sequence(glob, i, 0)
        except _InvalidGlob:
            self.programs = None
            return
        programs = []
        for alternative in alternatives:
            prog = _tokenize(alternative)
            if prog is not None:
                programs.append(prog)
        self.programs = tuple(programs) if programs else None

    cdef bint match(self, const char* s, Py_ssize_t n) except -1:
        cdef Py_ssize_t stack_a[STACK_POSITIONS]
        cdef Py_ssize_t stack_b[STACK_POSITIONS]
        cdef Py_ssize_t* cur = stack_a
        cdef Py_ssize_t* nxt = stack_b
        cdef bint found = False
        cdef bytes prog
        if self.programs is None:
            return False  # malformed glob: matches nothing, negated or not
        if n + 1 > STACK_POSITIONS:
            cur = <Py_ssize_t*>malloc(2 * (n + 1) * sizeof(Py_ssize_t))
            if cur == NULL:
                raise MemoryError()
            nxt = cur + n + 1
        try:
            for prog in self.programs:
                if _run_program(<const unsigned char*>(<char*>prog), len(prog),
                                <const unsigned char*>s, n, cur, nxt):
                    found = True
                    break
        finally:
            if cur != stack_a:
                free(cur)
        return found != self.negated


def glob_match(pattern: str, address: str) -> bool:
    """``glob_match`` of docs/protocol.md §9.3: the router's subscribe-time SNAPSHOT and QUERY matcher.

    Byte-oriented: ``*`` (no ``/``), ``**`` as a whole component (any number
    of components, trailing ``/**`` needs the ``/``), ``?``, ``[...]``,
    ``{a,b}``, leading ``!``, ``\\`` escapes. Not used for live routing.
    """
    cdef Py_ssize_t gn, n
    cdef const char* g = _utf8(pattern, &gn, "pattern")
    cdef const char* s = _utf8(address, &n, "address")
    return _Glob(g[:gn]).match(s, n)


# ---------------------------------------------------------------------------
# Pattern

cdef enum:
    SEG_LITERAL = 0
    SEG_STAR = 1
    SEG_GLOBSTAR = 2
    SEG_PARTIAL = 3          # embedded '*': one segment, verified by the glob
    SEG_PARTIAL_CHECKED = 4  # same, and the segment alone must pass _star_glob


cdef bint _star_glob(const char* pat, Py_ssize_t plen, const char* s, Py_ssize_t n) noexcept nogil:
    """Segment-level glob where only ``*`` is special (a quick filter for simple patterns)."""
    cdef Py_ssize_t pi = 0, si = 0, star_pi = -1, star_si = 0
    while si < n:
        if pi < plen and pat[pi] == b'*':
            star_pi = pi
            star_si = si
            pi += 1
        elif pi < plen and pat[pi] == s[si]:
            pi += 1
            si += 1
        elif star_pi >= 0:
            star_si += 1
            si = star_si
            pi = star_pi + 1
        else:
            return False
    while pi < plen and pat[pi] == b'*':
        pi += 1
    return pi == plen


cdef list _segment_kinds(bytes body, list segments):
    """Kind of each pattern segment; partial ones get the cheap filter when it is sound."""
    cdef list kinds = []
    # The filter is sound when '*' is the only glob syntax in the pattern and no
    # embedded '**' can cross '/' or merge with a neighbouring '/**' component:
    # then the glob lines the pattern's segments up with the address's, as the trie does.
    cdef bint simple = not any(ch in body for ch in (b"?", b"[", b"{", b"\\"))
    for seg in segments:
        if b"**" in seg and seg != b"**":
            simple = False
    for seg in segments:
        if seg == b"**":
            kinds.append(SEG_GLOBSTAR)
        elif seg == b"*":
            kinds.append(SEG_STAR)
        elif b"*" in seg:
            if simple:
                kinds.append(SEG_PARTIAL_CHECKED)
            else:
                kinds.append(SEG_PARTIAL)
        else:
            kinds.append(SEG_LITERAL)
    return kinds


cdef inline bint _segment_ok(Pattern pattern, Py_ssize_t i, const char* s,
                             Py_ssize_t n) noexcept nogil:
    """Whether address segment s[0:n] fits segment ``i`` of ``pattern``."""
    cdef unsigned char kind = pattern._seg_kind[i]
    if kind == SEG_LITERAL:
        return n == pattern._seg_len[i] and memcmp(s, pattern._p + pattern._seg_start[i], n) == 0
    if kind == SEG_PARTIAL_CHECKED:
        return _star_glob(pattern._p + pattern._seg_start[i], pattern._seg_len[i], s, n)
    return True  # '*' and unchecked partial segments take any one segment


cdef class Pattern:
    """A subscription pattern compiled for the router's live semantics (docs/protocol.md §9.2).

    ``Pattern("/lumen/*/opacity").matches("/lumen/3/opacity")`` is True.
    Raises :class:`PatternError` for a pattern the router would reject.
    """

    def __cinit__(self, pattern: str):
        cdef Py_ssize_t n, i, offset
        cdef const char* p = _utf8(pattern, &n, "pattern")
        cdef str problem = _address_problem(p, n)
        cdef list segments, kinds
        if problem is not None:
            raise PatternError(problem.replace("address", "pattern"), pattern)
        self.pattern = pattern
        self._utf8 = p[:n]
        self._p = <const char*>self._utf8
        self._n = n
        segments = self._utf8[1:].split(b"/")
        kinds = _segment_kinds(self._utf8, segments)
        self._segments = tuple(segments)
        self._nseg = len(segments)
        self._seg_start = <Py_ssize_t*>malloc(self._nseg * sizeof(Py_ssize_t))
        self._seg_len = <Py_ssize_t*>malloc(self._nseg * sizeof(Py_ssize_t))
        self._seg_kind = <unsigned char*>malloc(self._nseg)
        if self._seg_start == NULL or self._seg_len == NULL or self._seg_kind == NULL:
            raise MemoryError()
        offset = 1
        for i in range(self._nseg):
            self._seg_start[i] = offset
            self._seg_len[i] = len(segments[i])
            self._seg_kind[i] = kinds[i]
            offset += len(segments[i]) + 1
        self._literal = b"*" not in self._utf8
        self._needs_glob = SEG_PARTIAL in kinds or SEG_PARTIAL_CHECKED in kinds
        self._glob = _Glob(self._utf8) if self._needs_glob else None

    def __dealloc__(self):
        free(self._seg_start)
        free(self._seg_len)
        free(self._seg_kind)

    @property
    def is_literal(self) -> bool:
        """True when the pattern has no ``*`` at all: it matches one address, byte for byte."""
        return self._literal

    cdef bint _segments_match(self, const char* p, Py_ssize_t n) noexcept nogil:
        """The trie walk for this one pattern: '**' backtracks, everything else takes one segment."""
        cdef Py_ssize_t a = _first_char_len(p, n)  # start of the current address segment
        cdef Py_ssize_t pi = 0, star_pi = -1, star_a = 0, e
        while a <= n:
            e = _segment_end(p, a, n)
            if pi < self._nseg:
                if self._seg_kind[pi] == SEG_GLOBSTAR:
                    star_pi = pi
                    star_a = a
                    pi += 1
                    continue
                if _segment_ok(self, pi, p + a, e - a):
                    pi += 1
                    a = e + 1
                    continue
            if star_pi >= 0 and star_a <= n:
                star_a = _segment_end(p, star_a, n) + 1  # '**' absorbs one more segment
                a = star_a
                pi = star_pi + 1
                continue
            return False
        while pi < self._nseg and self._seg_kind[pi] == SEG_GLOBSTAR:
            pi += 1
        return pi == self._nseg

    cdef bint _matches_utf8(self, const char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t skip
        if self._literal:
            skip = _first_char_len(p, n)
            return n - skip == self._n - 1 and memcmp(p + skip, self._p + 1, n - skip) == 0
        if not self._segments_match(p, n):
            return False
        if self._needs_glob:
            return self._glob.match(p, n)
        return True

    def matches(self, address: str) -> bool:
        """Whether the router delivers a live SET/PUBLISH on ``address`` to this pattern.

        ``address`` is not validated (the router routes invalid ones too).
        """
        cdef Py_ssize_t n
        cdef const char* p = _utf8(address, &n, "address")
        return self._matches_utf8(p, n)

    def __eq__(self, other):
        if isinstance(other, Pattern):
            return self.pattern == (<Pattern>other).pattern
        return NotImplemented

    def __hash__(self):
        return hash((Pattern, self.pattern))

    def __repr__(self):
        return f"Pattern({self.pattern!r})"

    def __reduce__(self):
        return (Pattern, (self.pattern,))


# ---------------------------------------------------------------------------
# Subscription index

cdef enum:
    NODE_ROOT = 0
    NODE_LITERAL = 1
    NODE_STAR = 2
    NODE_GLOBSTAR = 3
    NODE_PARTIAL = 4


cdef tuple _BYTE_KEYS = tuple(range(256))  # CPython's cached small ints: lookups allocate nothing


cdef class _Prefixes:
    """Byte trie of the literal prefixes (before the first '*') of filtered partial segments.

    Walking it with an address segment visits only the partial children whose
    prefix the segment starts with, however many siblings there are.
    """

    cdef add(self, bytes prefix, _Node node):
        cdef _Prefixes here = self, child
        for byte in prefix:
            if here.next is None:
                here.next = {}
            child = here.next.get(byte)
            if child is None:
                child = _Prefixes()
                here.next[byte] = child
            here = child
        if here.nodes is None:
            here.nodes = []
        here.nodes.append(node)

    cdef bint discard(self, bytes prefix, _Node node):
        """Remove ``node``; True when this trie is then empty."""
        cdef list path = [self]
        cdef _Prefixes here = self
        cdef Py_ssize_t i
        for byte in prefix:
            here = here.next[byte]
            path.append(here)
        here.nodes.remove(node)
        if not here.nodes:
            here.nodes = None
        for i in range(len(prefix), 0, -1):
            here = path[i]
            if here.nodes is not None or here.next is not None:
                break
            del (<_Prefixes>path[i - 1]).next[prefix[i - 1]]
            if not (<_Prefixes>path[i - 1]).next:
                (<_Prefixes>path[i - 1]).next = None
        return self.nodes is None and self.next is None


cdef class _Node:
    def __cinit__(self):
        self.subs = []

    cdef bint is_empty(self):
        return (not self.subs and self.literal is None and self.star is None
                and self.globstar is None and self.partial_edges is None)


cdef class _Subscription:
    cdef readonly object key
    cdef readonly Pattern pattern
    cdef readonly object subscriber
    cdef unsigned long long seq
    cdef _Node node
    cdef object owner


cdef class _Identity:
    """Stands for an unhashable subscriber in the per-subscriber table."""

    cdef object obj

    def __cinit__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _Identity) and (<_Identity>other).obj is self.obj


cdef object _owner_key(object subscriber):
    try:
        hash(subscriber)
    except TypeError:
        return _Identity(subscriber)
    return subscriber


cdef int _compare_hits(const void* a, const void* b) noexcept nogil:
    cdef unsigned long long x = (<const _Hit*>a).seq, y = (<const _Hit*>b).seq
    return -1 if x < y else (1 if x > y else 0)


cdef inline Py_ssize_t _push(PyObject** states, Py_ssize_t count, _Node node,
                             unsigned long long mark) noexcept:
    """Add ``node`` and the '**' nodes right below it (they may match zero segments)."""
    while node is not None and node.mark != mark:
        node.mark = mark
        states[count] = <PyObject*>node
        count += 1
        node = node.globstar
    return count


cdef class SubscriptionIndex:
    """Subscribers by pattern, matched against addresses with the router's live semantics.

    A segment trie (literal children by segment, plus ``*``, ``**`` and
    embedded-``*`` branches): a lookup costs according to the address depth,
    not the number of subscriptions. Recent results are cached per address
    (``cache_size`` addresses; 0 disables the cache); any add or remove
    empties the cache.

    ``match(address)`` returns a tuple of subscribers in subscription order,
    one item per matching subscription (a subscriber with two matching
    patterns appears twice). A cached result is the same tuple object.
    """

    def __cinit__(self, cache_size: int = 4096):
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._cache_size = cache_size
        self._cache = {}
        self._entry_cache = {}
        self._by_key = {}
        self._by_owner = {}
        self._root = _Node()
        self._root.kind = NODE_ROOT
        self._nodes = 1
        self._next_key = 0
        self._states_cap = 0
        self._hits_cap = 0
        self._reserve_states()

    def __dealloc__(self):
        free(self._cur)
        free(self._nxt)
        free(self._hits)

    cdef int _reserve_states(self) except -1:
        cdef Py_ssize_t want = self._nodes + 1
        cdef PyObject** cur
        cdef PyObject** nxt
        if want <= self._states_cap:
            return 0
        want = max(want, 2 * self._states_cap, 64)
        cur = <PyObject**>realloc(self._cur, want * sizeof(PyObject*))
        if cur == NULL:
            raise MemoryError()
        self._cur = cur
        nxt = <PyObject**>realloc(self._nxt, want * sizeof(PyObject*))
        if nxt == NULL:
            raise MemoryError()
        self._nxt = nxt
        self._states_cap = want
        return 0

    cdef int _reserve_hits(self, Py_ssize_t want) except -1:
        cdef _Hit* hits
        if want <= self._hits_cap:
            return 0
        want = max(want, 2 * self._hits_cap, 64)
        hits = <_Hit*>realloc(self._hits, want * sizeof(_Hit))
        if hits == NULL:
            raise MemoryError()
        self._hits = hits
        self._hits_cap = want
        return 0

    cdef _invalidate(self):
        if self._cache:
            self._cache.clear()
        if self._entry_cache:
            self._entry_cache.clear()

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key) -> bool:
        return key in self._by_key

    @property
    def cache_size(self) -> int:
        """How many addresses the result cache holds at most (0: no cache)."""
        return self._cache_size

    # -- changes ------------------------------------------------------------

    cdef _Node _child(self, _Node node, bytes seg, int kind, bint checked):
        cdef _Node child
        cdef str text
        cdef object edge
        if kind == SEG_GLOBSTAR:
            child = node.globstar
            if child is None:
                child = _Node()
                child.kind = NODE_GLOBSTAR
                node.globstar = child
                self._nodes += 1
        elif kind == SEG_STAR:
            child = node.star
            if child is None:
                child = _Node()
                child.kind = NODE_STAR
                node.star = child
                self._nodes += 1
        elif kind == SEG_LITERAL:
            text = seg.decode("utf-8")
            if node.literal is None:
                node.literal = {}
            child = node.literal.get(text)
            if child is None:
                child = _Node()
                child.kind = NODE_LITERAL
                child.edge = text
                node.literal[text] = child
                self._nodes += 1
        else:
            edge = (seg, checked)
            if node.partial_edges is None:
                node.partial_edges = {}
            child = node.partial_edges.get(edge)
            if child is None:
                child = _Node()
                child.kind = NODE_PARTIAL
                child.edge = edge
                child.seg = seg
                child.checked = checked
                node.partial_edges[edge] = child
                if checked and not seg.startswith(b"*"):
                    child.prefix = seg[:seg.index(b"*")]
                    if node.prefixes is None:
                        node.prefixes = _Prefixes()
                    node.prefixes.add(child.prefix, child)
                else:
                    if node.partial is None:
                        node.partial = []
                    node.partial.append(child)
                self._nodes += 1
        child.parent = node
        return child

    def add(self, pattern, subscriber, key=None):
        """Subscribe ``subscriber`` to ``pattern`` (a str or :class:`Pattern`); returns the key.

        ``key`` identifies this subscription for :meth:`remove`; by default a
        fresh int. Raises :class:`PatternError` for an invalid pattern and
        ValueError when ``key`` is already in use.
        """
        cdef Pattern compiled = pattern if isinstance(pattern, Pattern) else Pattern(pattern)
        cdef _Node node = self._root
        cdef _Subscription sub
        cdef Py_ssize_t i
        if key is None:
            while self._next_key in self._by_key:
                self._next_key += 1
            key = self._next_key
            self._next_key += 1
        elif key in self._by_key:
            raise ValueError(f"subscription key {key!r} is already in use")
        for i in range(compiled._nseg):
            node = self._child(node, compiled._segments[i], compiled._seg_kind[i],
                               compiled._seg_kind[i] == SEG_PARTIAL_CHECKED)
        self._reserve_states()
        if node.pattern is None:
            node.pattern = compiled
        sub = _Subscription()
        sub.key = key
        sub.pattern = node.pattern
        sub.subscriber = subscriber
        self._seq += 1
        sub.seq = self._seq
        sub.node = node
        sub.owner = _owner_key(subscriber)
        node.subs.append(sub)
        self._by_key[key] = sub
        owned = self._by_owner.get(sub.owner)
        if owned is None:
            self._by_owner[sub.owner] = {key: None}
        else:
            owned[key] = None
        self._invalidate()
        return key

    cdef _prune(self, _Node node):
        """Detach nodes that no longer lead to any subscription."""
        cdef _Node parent
        while node is not self._root and node.is_empty():
            parent = node.parent
            if node.kind == NODE_LITERAL:
                del parent.literal[node.edge]
                if not parent.literal:
                    parent.literal = None
            elif node.kind == NODE_STAR:
                parent.star = None
            elif node.kind == NODE_GLOBSTAR:
                parent.globstar = None
            else:
                del parent.partial_edges[node.edge]
                if not parent.partial_edges:
                    parent.partial_edges = None
                if node.prefix is not None:
                    if parent.prefixes.discard(node.prefix, node):
                        parent.prefixes = None
                else:
                    parent.partial.remove(node)
                    if not parent.partial:
                        parent.partial = None
            node.parent = None
            self._nodes -= 1
            node = parent

    def remove(self, key) -> bool:
        """Remove the subscription ``key``; False when there is none."""
        cdef _Subscription sub = self._by_key.pop(key, None)
        cdef _Node node
        if sub is None:
            return False
        node = sub.node
        node.subs.remove(sub)
        if not node.subs:
            node.pattern = None
        owned = self._by_owner[sub.owner]
        del owned[key]
        if not owned:
            del self._by_owner[sub.owner]
        sub.node = None
        self._prune(node)
        self._invalidate()
        return True

    def discard_subscriber(self, subscriber) -> int:
        """Remove every subscription of ``subscriber``; returns how many there were."""
        owned = self._by_owner.get(_owner_key(subscriber))
        if owned is None:
            return 0
        keys = list(owned)
        for key in keys:
            self.remove(key)
        return len(keys)

    def clear(self) -> None:
        """Remove every subscription."""
        self._root = _Node()
        self._root.kind = NODE_ROOT
        self._nodes = 1
        self._by_key.clear()
        self._by_owner.clear()
        self._invalidate()

    def patterns(self) -> list:
        """``(key, pattern, subscriber)`` for every subscription, in subscription order."""
        return [(s.key, s.pattern.pattern, s.subscriber) for s in self._by_key.values()]

    # -- lookups ------------------------------------------------------------

    cdef Py_ssize_t _walk(self, object address) except -1:
        """Fill ``_hits`` with the matching subscriptions, in subscription order."""
        cdef Py_ssize_t n, pos, end, ncur, nn, i, j, hits = 0, sources = 0
        cdef const char* p = _utf8(address, &n, "address")
        cdef PyObject** cur = self._cur
        cdef PyObject** nxt = self._nxt
        cdef PyObject** swap
        cdef PyObject* found
        cdef _Node node, part
        cdef _Prefixes prefixes
        cdef _Subscription sub
        cdef object segment
        cdef unsigned long long mark

        self._mark += 1
        ncur = _push(cur, 0, self._root, self._mark)
        pos = _first_char_len(p, n)
        while True:
            end = _segment_end(p, pos, n)
            self._mark += 1
            mark = self._mark
            segment = None
            nn = 0
            for i in range(ncur):
                node = <_Node>cur[i]
                if node.kind == NODE_GLOBSTAR:
                    nn = _push(nxt, nn, node, mark)
                if node.literal is not None:
                    if segment is None:
                        segment = PyUnicode_DecodeUTF8(p + pos, end - pos, NULL)
                    found = PyDict_GetItem(node.literal, segment)
                    if found != NULL:
                        nn = _push(nxt, nn, <_Node>found, mark)
                if node.star is not None:
                    nn = _push(nxt, nn, node.star, mark)
                if node.partial is not None:
                    for part in node.partial:
                        if not part.checked or _star_glob(
                                <const char*>part.seg, len(part.seg), p + pos, end - pos):
                            nn = _push(nxt, nn, part, mark)
                if node.prefixes is not None:
                    prefixes = node.prefixes
                    j = pos
                    while True:
                        if prefixes.nodes is not None:
                            for part in prefixes.nodes:
                                if _star_glob(<const char*>part.seg, len(part.seg), p + pos, end - pos):
                                    nn = _push(nxt, nn, part, mark)
                        if j >= end or prefixes.next is None:
                            break
                        found = PyDict_GetItem(prefixes.next, _BYTE_KEYS[<unsigned char>p[j]])
                        if found == NULL:
                            break
                        prefixes = <_Prefixes>found
                        j += 1
            swap = cur
            cur = nxt
            nxt = swap
            ncur = nn
            if ncur == 0 or end >= n:
                break
            pos = end + 1

        for i in range(ncur):
            node = <_Node>cur[i]
            if not node.subs:
                continue
            if node.pattern._needs_glob and not node.pattern._glob.match(p, n):
                continue
            self._reserve_hits(hits + len(node.subs))
            for sub in node.subs:
                self._hits[hits].seq = sub.seq
                self._hits[hits].sub = <PyObject*>sub
                hits += 1
            sources += 1
        if sources > 1:
            qsort(self._hits, hits, sizeof(_Hit), _compare_hits)
        return hits

    cpdef tuple match(self, str address):
        """Subscribers whose pattern matches ``address``: a tuple, in subscription order.

        ``address`` is not validated (the router routes invalid ones too: its
        first character is dropped unseen, as docs/protocol.md §9.1 describes).
        """
        cdef PyObject* cached
        cdef Py_ssize_t count, i
        cdef tuple result
        cdef object subscriber
        if self._cache_size:
            cached = PyDict_GetItem(self._cache, address)
            if cached != NULL:
                return <object>cached
        count = self._walk(address)
        result = PyTuple_New(count)
        for i in range(count):
            subscriber = (<_Subscription>self._hits[i].sub).subscriber
            Py_INCREF(subscriber)
            PyTuple_SET_ITEM(result, i, subscriber)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            PyDict_SetItem(self._cache, address, result)
        return result

    cpdef tuple match_entries(self, str address):
        """Like :meth:`match`, as ``(key, pattern, subscriber)`` triples (pattern as a str)."""
        cdef PyObject* cached
        cdef Py_ssize_t count, i
        cdef tuple result
        cdef _Subscription sub
        if self._cache_size:
            cached = PyDict_GetItem(self._entry_cache, address)
            if cached != NULL:
                return <object>cached
        count = self._walk(address)
        result = PyTuple_New(count)
        for i in range(count):
            sub = <_Subscription>self._hits[i].sub
            entry = (sub.key, sub.pattern.pattern, sub.subscriber)
            Py_INCREF(entry)
            PyTuple_SET_ITEM(result, i, entry)
        if self._cache_size:
            if len(self._entry_cache) >= self._cache_size:
                self._entry_cache.clear()
            PyDict_SetItem(self._entry_cache, address, result)
        return result

    def __repr__(self):
        return f"<SubscriptionIndex {len(self._by_key)} subscriptions, {self._nodes} nodes>"

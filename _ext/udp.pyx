# Many UDP datagrams per system call (Linux): sendmmsg, UDP GSO (UDP_SEGMENT), recvmmsg, UDP GRO.
#
# The system calls live in the C block below, compiled only on Linux; elsewhere the same functions
# exist and fail with ENOSYS, and HAVE_BATCH_SYSCALLS is False, so the module builds everywhere and
# the Python side (clasp_fast.udp_batch) falls back to one sendto/recvfrom per datagram.
#
# Sending: send_batch() takes a list of bytes and one destination. With GSO, each run of datagrams
# of equal length (a shorter one may end the run: the kernel cuts the concatenation into segments
# of the first one's size) becomes one message with a UDP_SEGMENT control message; every message,
# GSO or not, goes out through sendmmsg. Nothing is copied: the iovecs point into the bytes objects.
#
# Receiving: recv_batch() reads up to `slots` messages with one recvmmsg into buffers allocated
# once; with GRO a message may hold several datagrams of the size given in its UDP_GRO control
# message, and is split back into datagrams. Every length comes from the kernel and is checked
# against the slot size before any bytes are copied.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport errno

cdef extern from *:
    """
    #include <errno.h>
    #include <string.h>
    #if defined(__linux__)
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    #ifndef SOL_UDP
    #define SOL_UDP 17
    #endif
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    #ifndef UDP_GRO
    #define UDP_GRO 104
    #endif
    #define CF_HAVE_BATCH 1
    #else
    #define CF_HAVE_BATCH 0
    #endif

    #define CF_CHUNK 256            /* datagrams handed to one sendmmsg */
    #define CF_GSO_SEGMENTS 64      /* UDP_MAX_SEGMENTS of older kernels */
    #define CF_GSO_BYTES 65000      /* below the 65,507-byte UDP payload limit */
    #define CF_HOST_LENGTH 64

    typedef struct {
        unsigned char addr[128];    /* a struct sockaddr_storage */
        int addrlen;
    } cf_addr;

    /* Send n datagrams to `to` through sendmmsg, as GSO runs when gso is set.
       Returns the number of datagrams sent; stops early on any error and leaves errno set
       (*failed = 1). EIO/EINVAL while a GSO run was tried sets *gso_refused instead. */
    static Py_ssize_t cf_send_batch(int fd, const cf_addr* to, char** bufs, const Py_ssize_t* lens,
                                    Py_ssize_t n, int gso, int* failed, int* gso_refused) {
    #if CF_HAVE_BATCH
        struct mmsghdr msgs[CF_CHUNK];
        struct iovec iov[CF_CHUNK];
        int counts[CF_CHUNK];
        union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } control[CF_CHUNK];
        Py_ssize_t done = 0;
        *failed = 0;
        *gso_refused = 0;
        while (done < n) {
            Py_ssize_t i = done, limit = n - done < CF_CHUNK ? n : done + CF_CHUNK;
            int m = 0, any_gso = 0;
            memset(msgs, 0, sizeof(msgs[0]) * (size_t)(limit - done));  /* the headers this round uses */
            while (i < limit) {
                Py_ssize_t first = i, total = lens[i];
                int k = 1;
                iov[i - done].iov_base = bufs[i];
                iov[i - done].iov_len = (size_t)lens[i];
                i++;
                if (gso) {
                    while (i < limit && k < CF_GSO_SEGMENTS && lens[i] <= lens[first]
                           && total + lens[i] <= CF_GSO_BYTES && lens[first] > 0) {
                        iov[i - done].iov_base = bufs[i];
                        iov[i - done].iov_len = (size_t)lens[i];
                        total += lens[i];
                        k++;
                        i++;
                        if (lens[i - 1] < lens[first]) break;  /* only the last segment may be short */
                    }
                }
                msgs[m].msg_hdr.msg_name = (void*)to->addr;
                msgs[m].msg_hdr.msg_namelen = (socklen_t)to->addrlen;
                msgs[m].msg_hdr.msg_iov = &iov[first - done];
                msgs[m].msg_hdr.msg_iovlen = (size_t)k;
                if (k > 1) {
                    struct cmsghdr* c;
                    msgs[m].msg_hdr.msg_control = control[m].buf;
                    msgs[m].msg_hdr.msg_controllen = sizeof(control[m].buf);
                    c = CMSG_FIRSTHDR(&msgs[m].msg_hdr);
                    c->cmsg_level = SOL_UDP;
                    c->cmsg_type = UDP_SEGMENT;
                    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                    *(uint16_t*)CMSG_DATA(c) = (uint16_t)lens[first];
                    any_gso = 1;
                }
                counts[m] = k;
                m++;
            }
            int offset = 0;
            while (offset < m) {
                int sent = sendmmsg(fd, msgs + offset, (unsigned int)(m - offset), 0);
                if (sent < 0) {
                    if (any_gso && (errno == EIO || errno == EINVAL)) *gso_refused = 1;
                    else *failed = 1;
                    return done;
                }
                for (int j = 0; j < sent; j++) done += counts[offset + j];
                offset += sent;
            }
        }
        return done;
    #else
        *failed = 1;
        *gso_refused = 0;
        errno = ENOSYS;
        return 0;
    #endif
    }

    typedef struct {
        int slots;
        Py_ssize_t slot_size;
        char* data;
    #if CF_HAVE_BATCH
        struct mmsghdr* msgs;
        struct iovec* iov;
        struct sockaddr_storage* names;
        char* control;              /* slots * cf_control_size() bytes */
    #endif
    } cf_rx;

    static size_t cf_control_size(void) {
    #if CF_HAVE_BATCH
        return CMSG_SPACE(sizeof(int));
    #else
        return 0;
    #endif
    }

    static int cf_rx_init(cf_rx* rx, int slots, Py_ssize_t slot_size) {
        memset(rx, 0, sizeof(*rx));
    #if CF_HAVE_BATCH
        rx->slots = slots;
        rx->slot_size = slot_size;
        rx->data = (char*)PyMem_Malloc((size_t)slots * (size_t)slot_size);
        rx->msgs = (struct mmsghdr*)PyMem_Calloc((size_t)slots, sizeof(struct mmsghdr));
        rx->iov = (struct iovec*)PyMem_Calloc((size_t)slots, sizeof(struct iovec));
        rx->names = (struct sockaddr_storage*)PyMem_Calloc((size_t)slots, sizeof(struct sockaddr_storage));
        rx->control = (char*)PyMem_Calloc((size_t)slots, cf_control_size());
        if (!rx->data || !rx->msgs || !rx->iov || !rx->names || !rx->control) return -1;
    #endif
        return 0;
    }

    static void cf_rx_free(cf_rx* rx) {
        PyMem_Free(rx->data);
    #if CF_HAVE_BATCH
        PyMem_Free(rx->msgs);
        PyMem_Free(rx->iov);
        PyMem_Free(rx->names);
        PyMem_Free(rx->control);
    #endif
        memset(rx, 0, sizeof(*rx));
    }

    /* One recvmmsg into the slots; returns the number of messages (0 if none waiting), or -1. */
    static int cf_rx_receive(cf_rx* rx, int fd) {
    #if CF_HAVE_BATCH
        size_t control = cf_control_size();
        for (int i = 0; i < rx->slots; i++) {
            rx->iov[i].iov_base = rx->data + (Py_ssize_t)i * rx->slot_size;
            rx->iov[i].iov_len = (size_t)rx->slot_size;
            memset(&rx->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
            rx->msgs[i].msg_hdr.msg_iov = &rx->iov[i];
            rx->msgs[i].msg_hdr.msg_iovlen = 1;
            rx->msgs[i].msg_hdr.msg_name = &rx->names[i];
            rx->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
            rx->msgs[i].msg_hdr.msg_control = rx->control + (size_t)i * control;
            rx->msgs[i].msg_hdr.msg_controllen = control;
            rx->msgs[i].msg_len = 0;
        }
        int got = recvmmsg(fd, rx->msgs, (unsigned int)rx->slots, MSG_DONTWAIT, NULL);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        return got;
    #else
        errno = ENOSYS;
        return -1;
    #endif
    }

    /* Message i of the last receive: its bytes, length, GRO segment size (0: one datagram),
       whether it was truncated, and its source address. */
    static void cf_rx_message(const cf_rx* rx, int i, const char** data, Py_ssize_t* length,
                              int* segment, int* truncated, cf_addr* source) {
    #if CF_HAVE_BATCH
        const struct msghdr* h = &rx->msgs[i].msg_hdr;
        struct cmsghdr* c;
        *data = rx->data + (Py_ssize_t)i * rx->slot_size;
        *length = (Py_ssize_t)rx->msgs[i].msg_len;
        if (*length > rx->slot_size) *length = rx->slot_size;
        *truncated = (h->msg_flags & MSG_TRUNC) != 0;
        *segment = 0;
        for (c = CMSG_FIRSTHDR((struct msghdr*)h); c != NULL; c = CMSG_NXTHDR((struct msghdr*)h, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO
                && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                memcpy(segment, CMSG_DATA(c), sizeof(int));
            }
        }
        source->addrlen = (int)h->msg_namelen;
        if (source->addrlen > (int)sizeof(source->addr)) source->addrlen = (int)sizeof(source->addr);
        memcpy(source->addr, &rx->names[i], (size_t)source->addrlen);
    #else
        *data = NULL; *length = 0; *segment = 0; *truncated = 0; source->addrlen = 0;
    #endif
    }

    /* host/port (and IPv6 flow info, scope id) of an address; -1 for another family. */
    static int cf_addr_format(const cf_addr* a, char* host, int* port, unsigned int* flowinfo,
                              unsigned int* scope_id) {
    #if CF_HAVE_BATCH
        const struct sockaddr* s = (const struct sockaddr*)a->addr;
        if (a->addrlen >= (int)sizeof(struct sockaddr_in) && s->sa_family == AF_INET) {
            const struct sockaddr_in* v4 = (const struct sockaddr_in*)a->addr;
            if (!inet_ntop(AF_INET, &v4->sin_addr, host, CF_HOST_LENGTH)) return -1;
            *port = ntohs(v4->sin_port);
            return 4;
        }
        if (a->addrlen >= (int)sizeof(struct sockaddr_in6) && s->sa_family == AF_INET6) {
            const struct sockaddr_in6* v6 = (const struct sockaddr_in6*)a->addr;
            if (!inet_ntop(AF_INET6, &v6->sin6_addr, host, CF_HOST_LENGTH)) return -1;
            *port = ntohs(v6->sin6_port);
            *flowinfo = ntohl(v6->sin6_flowinfo);
            *scope_id = v6->sin6_scope_id;
            return 6;
        }
    #endif
        return -1;
    }

    /* An IPv4 or IPv6 literal and port as a socket address; -1 if the host is no such literal. */
    static int cf_addr_parse(cf_addr* a, int family, const char* host, int port,
                             unsigned int flowinfo, unsigned int scope_id) {
        memset(a, 0, sizeof(*a));
    #if CF_HAVE_BATCH
        if (family == 4) {
            struct sockaddr_in* v4 = (struct sockaddr_in*)a->addr;
            v4->sin_family = AF_INET;
            v4->sin_port = htons((uint16_t)port);
            if (inet_pton(AF_INET, host, &v4->sin_addr) != 1) return -1;
            a->addrlen = sizeof(struct sockaddr_in);
            return 0;
        }
        if (family == 6) {
            struct sockaddr_in6* v6 = (struct sockaddr_in6*)a->addr;
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons((uint16_t)port);
            v6->sin6_flowinfo = htonl(flowinfo);
            v6->sin6_scope_id = scope_id;
            if (inet_pton(AF_INET6, host, &v6->sin6_addr) != 1) return -1;
            a->addrlen = sizeof(struct sockaddr_in6);
            return 0;
        }
    #endif
        return -1;
    }

    static int cf_addr_equal(const cf_addr* a, const cf_addr* b) {
        return a->addrlen == b->addrlen && memcmp(a->addr, b->addr, (size_t)a->addrlen) == 0;
    }
    """
    int CF_HAVE_BATCH
    int CF_HOST_LENGTH
    ctypedef struct cf_addr:
        int addrlen
    ctypedef struct cf_rx:
        int slots
        Py_ssize_t slot_size
    Py_ssize_t cf_send_batch(int fd, const cf_addr* to, char** bufs, const Py_ssize_t* lens,
                             Py_ssize_t n, int gso, int* failed, int* gso_refused) nogil
    int cf_rx_init(cf_rx* rx, int slots, Py_ssize_t slot_size)
    void cf_rx_free(cf_rx* rx)
    int cf_rx_receive(cf_rx* rx, int fd) nogil
    void cf_rx_message(const cf_rx* rx, int i, const char** data, Py_ssize_t* length,
                       int* segment, int* truncated, cf_addr* source)
    int cf_addr_format(const cf_addr* a, char* host, int* port, unsigned int* flowinfo,
                       unsigned int* scope_id)
    int cf_addr_parse(cf_addr* a, int family, const char* host, int port, unsigned int flowinfo,
                      unsigned int scope_id)
    int cf_addr_equal(const cf_addr* a, const cf_addr* b)


#: True where sendmmsg/recvmmsg (and so GSO/GRO batching) are compiled in (Linux).
HAVE_BATCH_SYSCALLS = bool(CF_HAVE_BATCH)
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104


cdef class BatchSender:
    """Sends lists of datagrams to one address with sendmmsg, optionally as UDP GSO runs.

    ``fd`` is a non-blocking UDP socket's file descriptor; ``address`` a (host, port) tuple (IPv4)
    or (host, port[, flowinfo, scope_id]) (IPv6) with a literal IP address. ``gso`` turns GSO on.
    """

    cdef int _fd
    cdef cf_addr _to
    cdef readonly object address
    cdef readonly bint gso
    cdef readonly unsigned long long syscall_batches
    cdef readonly unsigned long long datagrams_sent

    def __init__(self, int fd, address, bint gso=False):
        if not CF_HAVE_BATCH:
            raise OSError(38, "sendmmsg is not available on this platform")
        self._fd = fd
        self.gso = gso
        self.set_address(address)

    def set_address(self, address) -> None:
        """Send to ``address`` from now on."""
        host = address[0].encode("ascii")
        family = 6 if b":" in host else 4
        flowinfo = address[2] if family == 6 and len(address) > 2 else 0
        scope_id = address[3] if family == 6 and len(address) > 3 else 0
        if not 0 <= address[1] <= 0xFFFF or cf_addr_parse(&self._to, family, host, address[1],
                                                          flowinfo, scope_id) != 0:
            raise ValueError(f"address must be (IP literal, port), got {address!r}")
        self.address = tuple(address)

    def disable_gso(self) -> None:
        self.gso = False

    def send(self, list datagrams):
        """Send ``datagrams`` (bytes), in order; returns (number sent, error or None).

        Stops at the first datagram the kernel did not take: the error is BlockingIOError when the
        socket buffer is full. If the kernel refuses GSO (EIO/EINVAL, e.g. a device without
        checksum offload), GSO is switched off and the rest goes out without it.
        """
        cdef Py_ssize_t n = len(datagrams)
        cdef Py_ssize_t i, sent, total = 0
        cdef int failed = 0, gso_refused = 0, error = 0
        if n == 0:
            return 0, None
        cdef char** bufs = <char**>PyMem_Malloc(n * sizeof(char*))
        cdef Py_ssize_t* lens = <Py_ssize_t*>PyMem_Malloc(n * sizeof(Py_ssize_t))
        if bufs == NULL or lens == NULL:
            PyMem_Free(bufs)
            PyMem_Free(lens)
            raise MemoryError()
        try:
            for i in range(n):
                item = datagrams[i]
                if type(item) is not bytes:
                    raise TypeError(f"datagram {i} is {type(item).__name__}, not bytes")
                bufs[i] = PyBytes_AS_STRING(item)
                lens[i] = PyBytes_GET_SIZE(item)
            while total < n:
                with nogil:
                    sent = cf_send_batch(self._fd, &self._to, bufs + total, lens + total, n - total,
                                         self.gso, &failed, &gso_refused)
                    error = errno
                total += sent
                self.syscall_batches += 1
                if gso_refused:
                    self.gso = False
                    continue
                if failed:
                    self.datagrams_sent += total
                    return total, OSError(error, _strerror(error))
            self.datagrams_sent += total
            return total, None
        finally:
            PyMem_Free(bufs)
            PyMem_Free(lens)


def _strerror(int code) -> str:
    import os
    return os.strerror(code)


cdef class BatchReceiver:
    """Reads many datagrams per recvmmsg from a non-blocking UDP socket (with GRO splitting).

    ``slots`` messages per call, each up to ``slot_size`` bytes (with GRO on, a slot holds a whole
    coalesced message, so give it 65,535 bytes). A datagram longer than its slot is dropped and
    counted in ``truncated``.
    """

    cdef int _fd
    cdef cf_rx _rx
    cdef cf_addr _last
    cdef object _last_address
    cdef readonly int slots
    cdef readonly Py_ssize_t slot_size
    cdef readonly unsigned long long syscall_batches
    cdef readonly unsigned long long datagrams_received
    cdef readonly unsigned long long truncated

    def __cinit__(self):
        self._last.addrlen = 0

    def __init__(self, int fd, int slots=64, Py_ssize_t slot_size=2048):
        if not CF_HAVE_BATCH:
            raise OSError(38, "recvmmsg is not available on this platform")
        if not (1 <= slots <= 1024 and 1 <= slot_size <= 65535):
            raise ValueError(f"slots must be 1..1024 and slot_size 1..65535, got {slots}, {slot_size}")
        cf_rx_free(&self._rx)
        if cf_rx_init(&self._rx, slots, slot_size) != 0:
            cf_rx_free(&self._rx)
            raise MemoryError()
        self._fd = fd
        self.slots = slots
        self.slot_size = slot_size

    def __dealloc__(self):
        cf_rx_free(&self._rx)

    cdef object _address(self, cf_addr* source):
        cdef char host[64]
        cdef int port = 0, family
        cdef unsigned int flowinfo = 0, scope_id = 0
        if self._last_address is not None and cf_addr_equal(source, &self._last):
            return self._last_address
        family = cf_addr_format(source, host, &port, &flowinfo, &scope_id)
        if family == 4:
            address = (host.decode("ascii"), port)
        elif family == 6:
            address = (host.decode("ascii"), port, flowinfo, scope_id)
        else:
            address = None
        self._last = source[0]
        self._last_address = address
        return address

    def receive(self) -> list:
        """[(datagram, address), ...] waiting on the socket, up to one recvmmsg's worth.

        An empty list when nothing is waiting; OSError for any other failure.
        """
        cdef int got, i, segment, truncated
        cdef const char* data
        cdef Py_ssize_t length, offset, piece
        cdef cf_addr source
        cdef int error = 0
        cdef list out = []
        with nogil:
            got = cf_rx_receive(&self._rx, self._fd)
            error = errno
        if got < 0:
            raise OSError(error, _strerror(error))
        self.syscall_batches += 1
        for i in range(got):
            cf_rx_message(&self._rx, i, &data, &length, &segment, &truncated, &source)
            if truncated:
                self.truncated += 1
                continue
            address = self._address(&source)
            if segment <= 0 or segment >= length:
                out.append((PyBytes_FromStringAndSize(data, length), address))
                continue
            offset = 0
            while offset < length:
                piece = segment if length - offset > segment else length - offset
                out.append((PyBytes_FromStringAndSize(data + offset, piece), address))
                offset += piece
        self.datagrams_received += len(out)
        return out

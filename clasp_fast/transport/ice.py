"""Per-connection control of ICE: allowed host addresses, UDP receive buffers, a prompt connect.

aioice gathers host candidates on every interface except loopback (``aioice.ice.get_host_addresses``)
and gives each ICE socket a 256 KiB receive buffer. Both are wrong for some uses: tests and
benchmarks must stay on 127.0.0.1, multi-homed hosts want to choose their interfaces, and bursts of
DataChannel traffic overflow a small receive buffer (aiortc then loses packets and its reliable channel
stalls while it recovers).

The seam: :func:`install_gathering_policy` replaces ``gather_candidates`` on *one* aioice
``Connection`` instance (reached through ``RTCIceGatherer._connection``) with a version that gathers
host candidates on the given addresses only and then sets ``SO_RCVBUF`` on every ICE socket it opened.
It also makes asyncio's datagram transport of each ICE socket read into a 64 KiB buffer (the largest
UDP payload) instead of its default 256 KiB: an allocation that size is above glibc's mmap threshold,
so every datagram read the asyncio way cost an ``mmap`` and a ``munmap`` (about 30 µs of one-way
latency here). That is the path of connections without the data plane's own reader
(``udp_batching=False``, stock SCTP, a fallback) and of STUN. Nothing global is patched, so other
connections in the process keep aioice's behaviour. The replacement mirrors
``aioice.Connection.gather_candidates`` of aioice 0.13 and uses these attributes of that class:
``_local_candidates_start``, ``_local_candidates_end``, ``_local_candidates``, ``_components``,
``_protocols``, ``_transport_policy``, ``_use_ipv4``, ``_use_ipv6`` and the public coroutine
``get_component_candidates`` (and, of asyncio's selector datagram transport, ``max_size``).

A second seam, :func:`install_prompt_connect`, lets ``connect()`` return as soon as the check list
has completed instead of at aioice's next 20 ms pacing tick (20 ms off every connection set-up).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any, Iterable, Sequence

from aioice import ice as aioice_ice

__all__ = [
    "DEFAULT_UDP_RECEIVE_BUFFER",
    "LOOPBACK_ONLY",
    "install_gathering_policy",
    "install_prompt_connect",
    "ice_sockets",
    "limit_datagram_reads",
    "MAX_DATAGRAM",
    "receive_buffer_size",
    "is_loopback",
]

# 4 MiB: enough for the bursts batched DataChannel traffic produces on loopback.
# Linux caps the request at net.core.rmem_max (and reports twice the granted size when read back).
DEFAULT_UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

LOOPBACK_ONLY: tuple[str, ...] = ("127.0.0.1",)

#: What :func:`install_prompt_connect` uses of an aioice ``Connection``.
PROMPT_CONNECT_SEAMS = ("connect", "check_complete", "check_incoming", "query_consent", "_check_list",
                        "_check_list_done", "_nominated", "_components", "_query_consent_task")

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback IP address (127.0.0.0/8 or ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_addresses(addresses: Iterable[str]) -> list[str]:
    checked = []
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"host_addresses must hold IP addresses, got {address!r}") from None
        checked.append(address)
    return checked


def ice_sockets(connection: aioice_ice.Connection) -> list[socket.socket]:
    """The UDP sockets an aioice connection has opened for its candidates."""
    sockets = []
    for protocol in connection._protocols:
        transport = getattr(protocol, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sockets.append(sock)
    return sockets


#: The largest UDP payload: what an ICE socket's asyncio transport reads at most per datagram.
MAX_DATAGRAM = 65_535


def limit_datagram_reads(connection: aioice_ice.Connection) -> None:
    """Make the asyncio transports of ``connection``'s ICE sockets read at most MAX_DATAGRAM bytes
    per datagram (asyncio's selector loop reads 256 KiB). Transports without that setting
    (uvloop's, which read into a buffer of their own) are left alone."""
    for protocol in connection._protocols:
        transport: Any = getattr(protocol, "transport", None)
        size = getattr(transport, "max_size", None)
        if isinstance(size, int) and size > MAX_DATAGRAM:
            transport.max_size = MAX_DATAGRAM


def receive_buffer_size(sock: socket.socket) -> int:
    """The socket's ``SO_RCVBUF`` as the kernel reports it."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        # The kernel refuses only absurd values; keep the buffer it already has.
        pass


def install_gathering_policy(
    connection: aioice_ice.Connection,
    *,
    host_addresses: Sequence[str] | None,
    udp_receive_buffer: int | None,
) -> None:
    """Make ``connection`` gather host candidates on ``host_addresses`` only and size its sockets.

    ``host_addresses=None`` keeps aioice's choice (every non-loopback interface);
    ``udp_receive_buffer=None`` keeps aioice's 256 KiB. Must be called before gathering starts.
    """
    if connection._local_candidates_start:
        raise RuntimeError("ICE candidate gathering already started on this connection")
    allowed = None if host_addresses is None else _check_addresses(host_addresses)

    async def gather_candidates() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        addresses: list[str] = []
        if connection._transport_policy == aioice_ice.TransportPolicy.ALL:
            if allowed is None:
                addresses = aioice_ice.get_host_addresses(
                    use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6
                )
            else:
                addresses = list(allowed)
        for component in sorted(connection._components):
            candidates = await connection.get_component_candidates(component=component, addresses=addresses)
            connection._local_candidates += candidates
        if udp_receive_buffer is not None:
            for sock in ice_sockets(connection):
                _set_receive_buffer(sock, udp_receive_buffer)
        limit_datagram_reads(connection)
        connection._local_candidates_end = True

    connection.gather_candidates = gather_candidates  # type: ignore[method-assign]


def install_prompt_connect(connection: aioice_ice.Connection) -> bool:
    """Make ``connection.connect()`` return as soon as a pair is nominated for every component,
    instead of at aioice's next 20 ms pacing tick: aioice starts a check, sleeps 20 ms (RFC 8445's
    Ta) and only then looks whether the check list completed, so every connect took at least 20 ms
    even where the check succeeded in one.

    ``connect()`` runs aioice's own and watches for the check list's completion; when that comes
    first, it stops aioice's (asleep between checks) and does what aioice does after a completed
    check list itself: cancel the checks still running and start the consent checks (RFC 7675).
    Failures and everything before completion stay aioice's.

    The seam: ``connect``, ``check_complete`` and ``check_incoming`` (the two ways a check list
    completes) replaced on this instance, using ``_check_list_done``, ``_nominated``,
    ``_components``, ``_check_list`` (each pair's ``task``), ``query_consent`` and
    ``_query_consent_task`` (aioice 0.9-0.13). Returns False, changing nothing, when one is
    missing. Call it before ``connect()``.
    """
    missing = [name for name in PROMPT_CONNECT_SEAMS if not hasattr(connection, name)]
    if missing:
        logger.info("ICE connect keeps aioice's 20 ms pacing: missing %s", ", ".join(missing))
        return False
    original_connect = connection.connect
    original_check_complete = connection.check_complete
    original_check_incoming = connection.check_incoming
    completed = asyncio.Event()

    def note_completion() -> None:
        if connection._check_list_done and len(connection._nominated) == len(connection._components):
            completed.set()

    def check_complete(*args: Any) -> None:
        original_check_complete(*args)
        note_completion()

    def check_incoming(*args: Any) -> None:
        original_check_incoming(*args)
        note_completion()

    async def connect() -> None:
        running = asyncio.ensure_future(original_connect())
        waiting = asyncio.ensure_future(completed.wait())
        try:
            await asyncio.wait((running, waiting), return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if not running.done():
                running.cancel()  # asleep until its next pacing tick
                await asyncio.gather(running, return_exceptions=True)
        except asyncio.CancelledError:
            running.cancel()
            waiting.cancel()
            raise
        if not running.cancelled():
            return running.result()  # aioice finished first: its own outcome
        for pair in connection._check_list:
            if pair.task is not None:
                pair.task.cancel()
        connection._query_consent_task = asyncio.create_task(connection.query_consent())

    connection.check_complete = check_complete  # type: ignore[method-assign, assignment]
    connection.check_incoming = check_incoming  # type: ignore[method-assign, assignment]
    connection.connect = connect  # type: ignore[method-assign]
    return True

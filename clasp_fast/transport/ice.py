"""Per-connection control of ICE candidate gathering: allowed host addresses and UDP receive buffers.

aioice gathers host candidates on every interface except loopback (``aioice.ice.get_host_addresses``)
and gives each ICE socket a 256 KiB receive buffer. Both are wrong for some uses: tests and
benchmarks must stay on 127.0.0.1, multi-homed hosts want to choose their interfaces, and bursts of
DataChannel traffic overflow a small receive buffer (aiortc then loses packets and its reliable channel
stalls while it recovers).

The seam: :func:`install_gathering_policy` replaces ``gather_candidates`` on *one* aioice
``Connection`` instance (reached through ``RTCIceGatherer._connection``) with a version that gathers
host candidates on the given addresses only and then sets ``SO_RCVBUF`` on every ICE socket it opened.
Nothing global is patched, so other connections in the process keep aioice's behaviour. The
replacement mirrors ``aioice.Connection.gather_candidates`` of aioice 0.13 and uses these attributes
of that class: ``_local_candidates_start``, ``_local_candidates_end``, ``_local_candidates``,
``_components``, ``_protocols``, ``_transport_policy``, ``_use_ipv4``, ``_use_ipv6`` and the public
coroutine ``get_component_candidates``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable, Sequence

from aioice import ice as aioice_ice

__all__ = [
    "DEFAULT_UDP_RECEIVE_BUFFER",
    "LOOPBACK_ONLY",
    "install_gathering_policy",
    "ice_sockets",
    "receive_buffer_size",
    "is_loopback",
]

# 4 MiB: enough for the bursts batched DataChannel traffic produces on loopback.
# Linux caps the request at net.core.rmem_max (and reports twice the granted size when read back).
DEFAULT_UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

LOOPBACK_ONLY: tuple[str, ...] = ("127.0.0.1",)


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
        connection._local_candidates_end = True

    connection.gather_candidates = gather_candidates  # type: ignore[method-assign]

"""Many UDP datagrams per system call, with a plain fallback everywhere else.

:class:`UdpBatchSocket` wraps a non-blocking UDP socket:

* :meth:`~UdpBatchSocket.send_batch` sends a list of datagrams to one address. Strategies, best
  first: ``"gso"`` (runs of equal-length datagrams become one send with UDP_SEGMENT, Linux 4.18+,
  and all runs go out in one sendmmsg), ``"sendmmsg"`` (one message per datagram, one call for the
  list), ``"sendto"`` (one call per datagram; any OS).
* :meth:`~UdpBatchSocket.receive_batch` returns every datagram one call can read. Strategies:
  ``"gro"`` (recvmmsg on a socket with UDP_GRO, Linux 5.0+: the kernel may hand over several
  datagrams as one buffer, which is split back), ``"recvmmsg"``, ``"recvfrom"`` (a loop; any OS).

``"auto"`` picks the best strategy the running kernel supports, found by asking the socket
(``getsockopt(UDP_SEGMENT)``, ``setsockopt(UDP_GRO)``); forcing one the platform lacks raises
OSError. If the kernel refuses a GSO send (a device without checksum offload), GSO is switched
off for that socket and the datagrams go out without it.

:class:`BatchReader` plugs this into asyncio under an existing datagram transport (aioice's ICE
sockets): it pauses the transport's own reading, watches a duplicate of the socket's descriptor,
and hands each batch to a callback; datagrams are never dropped or reordered on the way.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Callable, Sequence

from .._build_check import load_extension

load_extension("_udp")  # a missing build fails here with a message that says how to build

from .. import _udp  # noqa: E402

__all__ = [
    "BatchReader",
    "UdpBatchSocket",
    "SEND_STRATEGIES",
    "RECEIVE_STRATEGIES",
    "supported_strategies",
]

SEND_STRATEGIES = ("gso", "sendmmsg", "sendto")
RECEIVE_STRATEGIES = ("gro", "recvmmsg", "recvfrom")
_SOL_UDP = _udp.SOL_UDP
_UDP_SEGMENT = _udp.UDP_SEGMENT
_UDP_GRO = _udp.UDP_GRO
#: Largest datagram a receive slot holds without GRO (WebRTC stacks send at most ~1,500 bytes).
DATAGRAM_SLOT = 2048
#: A receive slot with GRO holds a whole coalesced message.
GRO_SLOT = 65535


def supported_strategies(sock: socket.socket, *, probe_gro: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(send strategies, receive strategies) this platform and kernel support for ``sock``, best first.

    Probing GRO switches it off on the socket; ``probe_gro=False`` leaves it alone (and leaves
    "gro" out), for a socket that someone else reads with GRO.
    """
    send, receive = ["sendto"], ["recvfrom"]
    if _udp.HAVE_BATCH_SYSCALLS and sys.platform.startswith("linux"):
        send.insert(0, "sendmmsg")
        receive.insert(0, "recvmmsg")
        try:
            sock.getsockopt(_SOL_UDP, _UDP_SEGMENT)
            send.insert(0, "gso")
        except OSError:
            pass
        if probe_gro:
            try:
                # Setting it off is harmless and fails only where the kernel lacks UDP_GRO.
                sock.setsockopt(_SOL_UDP, _UDP_GRO, 0)
                receive.insert(0, "gro")
            except OSError:
                pass
    return tuple(send), tuple(receive)


class UdpBatchSocket:
    """Batched sending and receiving on one non-blocking UDP socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, *, send: str = "auto", receive: str = "auto",
                 slots: int = 64, slot_size: int = DATAGRAM_SLOT) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"UdpBatchSocket needs a UDP socket, got {sock!r}")
        sock.setblocking(False)
        self.sock = sock
        sendable, receivable = supported_strategies(sock, probe_gro=receive in ("auto", "gro"))
        self.send_strategy = _choose("send", send, sendable, SEND_STRATEGIES)
        self.receive_strategy = _choose("receive", receive, receivable, RECEIVE_STRATEGIES)
        self.slots = slots
        self.datagrams_received = 0
        self._senders: dict[tuple, _udp.BatchSender] = {}
        self._receiver = None
        if self.receive_strategy == "gro":
            sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
        if self.receive_strategy != "recvfrom":
            size = GRO_SLOT if self.receive_strategy == "gro" else slot_size
            self._receiver = _udp.BatchReceiver(sock.fileno(), slots, size)

    @property
    def gso_active(self) -> bool:
        """False once the kernel refused a GSO send on this socket (or GSO was never chosen)."""
        return self.send_strategy == "gso" and all(s.gso for s in self._senders.values())

    def send_batch(self, datagrams: Sequence[bytes], address: tuple) -> int:
        """Send ``datagrams`` to ``address`` in order; returns how many the kernel took.

        Fewer than ``len(datagrams)`` means the socket buffer filled up: send the rest when the
        socket is writable again. Other errors raise OSError unless some datagrams went out first.
        """
        if self.send_strategy == "sendto":
            return self._sendto_each(datagrams, address)
        sender = self._senders.get(address)
        if sender is None:
            sender = _udp.BatchSender(self.sock.fileno(), address, self.send_strategy == "gso")
            self._senders[address] = sender
        sent, error = sender.send(datagrams if type(datagrams) is list else list(datagrams))
        if error is not None and not isinstance(error, BlockingIOError) and sent == 0:
            raise error
        return sent

    def _sendto_each(self, datagrams: Sequence[bytes], address: tuple) -> int:
        sendto = self.sock.sendto
        sent = 0
        for datagram in datagrams:
            try:
                sendto(datagram, address)
            except BlockingIOError:
                break
            except OSError:
                if sent == 0:
                    raise
                break
            sent += 1
        return sent

    def receive_batch(self) -> list[tuple[bytes, tuple]]:
        """[(datagram, address), ...] that one call can read; empty when nothing is waiting."""
        if self._receiver is not None:
            received = self._receiver.receive()
        else:
            received = []
            recvfrom = self.sock.recvfrom
            for _ in range(self.slots):
                try:
                    received.append(recvfrom(GRO_SLOT))
                except BlockingIOError:
                    break
        self.datagrams_received += len(received)
        return received

    @property
    def truncated(self) -> int:
        """Datagrams dropped because they were longer than a receive slot."""
        return self._receiver.truncated if self._receiver is not None else 0

    def stop_gro(self) -> None:
        """Switch UDP_GRO off again (before anyone else reads the socket one datagram at a time)."""
        if self.receive_strategy == "gro":
            self.sock.setsockopt(_SOL_UDP, _UDP_GRO, 0)


def _choose(kind: str, wanted: str, available: tuple[str, ...], known: tuple[str, ...]) -> str:
    if wanted == "auto":
        return available[0]
    if wanted not in known:
        raise ValueError(f"{kind} strategy must be 'auto' or one of {', '.join(known)}, got {wanted!r}")
    if wanted not in available:
        raise OSError(f"{kind} strategy {wanted!r} is not supported here (available: {', '.join(available)})")
    return wanted


class BatchReader:
    """Reads a datagram transport's socket in batches and hands each batch to ``on_datagrams``.

    The transport's own reading is paused (``transport.pause_reading()``) and the event loop
    watches a duplicate of the socket's descriptor instead (the loop refuses a reader on a
    descriptor a transport owns). Each wake-up reads one batch (up to ``slots`` messages) and calls
    ``on_datagrams([(data, address), ...])``; an exception from the callback goes to the loop's
    exception handler and reading goes on. :meth:`close` gives reading back to the transport.
    A transport that cannot pause its reading (uvloop's) raises ValueError before anything is taken.
    """

    def __init__(self, transport: asyncio.DatagramTransport,
                 on_datagrams: Callable[[list], None], *, receive: str = "auto", slots: int = 64,
                 slot_size: int = DATAGRAM_SLOT) -> None:
        sock = transport.get_extra_info("socket")
        if sock is None:
            raise ValueError("the transport exposes no socket")
        self._loop = asyncio.get_running_loop()
        pause = _reading_pause(transport, self._loop)
        if pause is None:
            # uvloop's UDP transport: libuv keeps reading the socket, and two readers would split
            # (and so reorder) the datagrams between them.
            raise ValueError(f"{type(transport).__name__} cannot pause reading its socket")
        self._transport = transport
        self._on_datagrams = on_datagrams
        self._fd = os.dup(sock.fileno())
        self._own = socket.socket(sock.family, sock.type, sock.proto, fileno=self._fd)
        try:
            self.socket = UdpBatchSocket(self._own, send="sendto", receive=receive, slots=slots,
                                         slot_size=slot_size)
        except BaseException:
            self._own.close()  # the duplicate descriptor goes with it
            raise
        self.batches = 0
        self._paused_privately = pause == "private"
        if self._paused_privately:
            self._loop._remove_reader(sock.fileno())  # type: ignore[attr-defined]
        else:
            transport.pause_reading()  # type: ignore[attr-defined]  # 3.11+ has it; typeshed lacks it
        self._loop.add_reader(self._fd, self._read_ready)
        self._closed = False
        self._paused = False

    def _read_ready(self) -> None:
        try:
            batch = self.socket.receive_batch()
        except OSError as error:
            self._loop.call_exception_handler({"message": "clasp_fast batch reader failed", "exception": error})
            return
        if not batch:
            return
        self.batches += 1
        try:
            self._on_datagrams(batch)
        except Exception as error:  # the reader must keep reading
            self._loop.call_exception_handler({"message": "clasp_fast batch callback failed", "exception": error})

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`; datagrams wait in the socket's buffer."""
        if not self._closed and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        if not self._closed and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._read_ready)

    def close(self) -> None:
        """Stop reading; the transport reads its socket itself again (if it is still open)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self.socket.stop_gro()
        self._own.close()
        if self._transport.is_closing():
            return
        if self._paused_privately:
            self._loop._add_reader(self._transport.get_extra_info("socket").fileno(),  # type: ignore[attr-defined]
                                   self._transport._read_ready)  # type: ignore[attr-defined]
        else:
            self._transport.resume_reading()  # type: ignore[attr-defined]  # 3.11+ has it; typeshed lacks it


def _reading_pause(transport: asyncio.DatagramTransport, loop: asyncio.AbstractEventLoop) -> str | None:
    """How the transport's own reading of its socket can be stopped (and given back by close()).

    "public": Python 3.11+ datagram transports have pause_reading(). "private": on 3.10 only the
    selector loop's _remove_reader can take the transport's reader off (the public one refuses),
    and _add_reader with the transport's _read_ready puts it back. None: neither (uvloop).
    """
    if callable(getattr(transport, "pause_reading", None)):
        return "public"
    if callable(getattr(loop, "_remove_reader", None)) and callable(getattr(transport, "_read_ready", None)):
        return "private"
    return None

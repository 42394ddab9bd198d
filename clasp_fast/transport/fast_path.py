"""The data plane under a FastSctpTransport: DTLS records and UDP I/O past aiortc and aioice.

Stock aiortc hands every datagram through four steps: aioice first tries to parse it as STUN
(an exception for every DTLS record), queues it, a task wakes up one event-loop iteration later
to take it off the queue, and aiortc's DTLS glue decrypts it through pyOpenSSL and then always
tries to read outgoing DTLS data (another exception); every packet sent is one pyOpenSSL record
and one ``sendto``. :func:`install` gives one connection a :class:`DataPlane` instead:

* **receiving**: the ICE sockets are read in batches (:class:`~clasp_fast.udp_batch.BatchReader`:
  ``recvmmsg``, with UDP GRO where the kernel has it); DTLS records (first byte 20..63, RFC 7983) go
  to the data plane, everything else (STUN: connectivity and consent checks) to aioice's own
  handler. Without batching, the socket callbacks pass DTLS records on without trying STUN first;
* **DTLS records**: once the handshake is done and the peer's first application record was read
  through OpenSSL, :class:`~clasp_fast.dtls_records.DtlsRecordLayer` takes the epoch-1 records over
  (AEAD suites of DTLS 1.2): records are protected and read in compiled code, replays and records
  of another epoch are dropped and counted, and closing sends the layer's close_notify. A suite or
  protocol it does not handle keeps OpenSSL's path (logged);
* **sending**: the SCTP packets of one transmit opportunity become records that leave in one
  system call (:class:`~clasp_fast.udp_batch.UdpBatchSocket`: UDP GSO runs or ``sendmmsg``), and
  while a received batch is handled every packet SCTP sends (its SACK, the data a SACK lets go)
  waits until the batch is through and then leaves with the others;
* the SCTP transport is told where a received batch ends, so it answers a whole batch with one
  SACK.

Coroutines of the SCTP transport are run with :func:`run_now`: to completion inside the callback
when they never wait (the common case: sending on a UDP socket does not block), else continued in
a task. An exception out of SCTP's packet handling (an application's event handler raised and had
no ``error`` listener) ends the DTLS transport as aiortc's own receive loop does: logged, and the
connection closes.

Seams (aiortc 1.14-1.16, aioice 0.10-0.13; see docs/data-plane.md): ``RTCDtlsTransport``'s
``_ssl``, ``_role``, ``_state``, ``_data_receiver``, ``_task``, ``_send_data``, ``stop`` and its
name-mangled byte and packet counters; ``RTCIceTransport._connection``; aioice ``Connection``'s
``_queue``, ``_protocols``, ``_nominated``, ``data_received`` and ``close``; ``StunProtocol``'s
``transport``, ``local_candidate`` and ``datagram_received``; ``CandidatePair``'s ``protocol`` and
``remote_addr``. Each is replaced on the instance only. :func:`missing_seams` names any that is
missing; then the connection keeps aiortc's path and the reason is logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import sys
from typing import Any, Callable, Coroutine, Optional, Union

from aioice import Connection
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from OpenSSL import SSL

from .._build_check import load_extension
from .dtls_records import CONTENT_ALERT, CONTENT_APPLICATION_DATA, DtlsRecordLayer, DtlsTakeoverError
from .udp_batch import BatchReader, UdpBatchSocket

load_extension("_sctp")  # a missing build fails here with a message that says how to build

from .. import _sctp  # noqa: E402

__all__ = ["DataPlane", "install", "missing_seams", "run_now"]

_CONNECTED = State.CONNECTED
#: Bytes a DTLS 1.2 AEAD record adds to its plaintext (header, AES-GCM explicit nonce, tag).
RECORD_OVERHEAD = 13 + 8 + 16
#: Largest datagram the data plane reads: a record of the largest SCTP packet it accepts.
LARGE_DATAGRAM = 16384 + RECORD_OVERHEAD
#: Received bytes SCTP handles before it answers them with one SACK (and what it has to send
#: leaves): a quarter of aiortc's 1 MiB receive window, i.e. 16 packets of 16 KiB or ~180 of a
#: 1,500-byte MTU. (Counted in packets, 16 of 1,500 bytes made the sender handle ~5 SACKs per
#: receiver wake-up: a third less throughput over a 1,500-byte MTU.)
SACK_BATCH_BYTES = 256 * 1024
_IP_MTU, _IPV6_MTU = 14, 24  # Linux socket options: the route's MTU of a connected socket
_DTLS_COUNTERS = ("_RTCDtlsTransport__rx_bytes", "_RTCDtlsTransport__rx_packets",
                  "_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets")

logger = logging.getLogger(__name__)

ErrorHandler = Callable[[Exception], None]

#: os.sched_yield where the platform has it (not on Windows).
_sched_yield: Optional[Callable[[], None]] = getattr(os, "sched_yield", None)


def run_now(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop, on_error: Optional[ErrorHandler] = None
) -> None:
    """Run ``coro`` until it first waits; if it does, go on in a task.

    An exception (other than ConnectionError: the transport is closing) goes to ``on_error``,
    by default to the loop's exception handler.
    """
    try:
        waiting = coro.send(None)
    except StopIteration:
        return
    except ConnectionError:
        return
    except Exception as error:  # a callback must not raise into asyncio's transport code
        _failed(error, loop, on_error)
        return
    asyncio.ensure_future(_resume(coro, waiting, loop, on_error), loop=loop)


def _failed(error: Exception, loop: asyncio.AbstractEventLoop, on_error: Optional[ErrorHandler]) -> None:
    if on_error is None:
        loop.call_exception_handler({"message": "clasp_fast fast path failed", "exception": error})
    else:
        on_error(error)


async def _resume(
    coro: Coroutine[Any, Any, Any], waiting: Any, loop: asyncio.AbstractEventLoop, on_error: Optional[ErrorHandler]
) -> None:
    while True:
        if waiting is None:
            await asyncio.sleep(0)  # a bare yield: the coroutine asked to be rescheduled
        else:
            try:
                await waiting
            except BaseException:
                pass  # the coroutine reads the future's outcome itself when resumed
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except ConnectionError:
            return
        except Exception as error:
            _failed(error, loop, on_error)
            return


def missing_seams(dtls: Any) -> list[str]:
    """The aiortc/aioice attributes the data plane needs that ``dtls`` (an RTCDtlsTransport) lacks."""
    missing = [name for name in ("_ssl", "_role", "_state", "_data_receiver", "_task", *_DTLS_COUNTERS)
               if not hasattr(dtls, name)]
    for name in ("_send_data", "stop"):
        if not callable(getattr(RTCDtlsTransport, name, None)):
            missing.append(f"RTCDtlsTransport.{name}")
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    if not isinstance(connection, Connection):
        missing.append("RTCIceTransport._connection (an aioice Connection)")
        return missing
    for name in ("_queue", "_protocols", "_nominated", "data_received", "close"):
        if not hasattr(connection, name):
            missing.append(f"aioice Connection.{name}")
    for protocol in getattr(connection, "_protocols", ()):
        for name in ("transport", "local_candidate", "datagram_received"):
            if not hasattr(protocol, name):
                missing.append(f"aioice StunProtocol.{name}")
        break
    return missing


class DataPlane:
    """DTLS records and UDP I/O of one connection under a FastSctpTransport (see the module doc).

    ``fast_dtls``: take the epoch-1 records over with the compiled record layer. ``udp_batching``:
    read the ICE sockets in batches and send each transmit's records in one system call.
    """

    def __init__(self, sctp: Any, connection: Connection, *, fast_dtls: bool, udp_batching: bool) -> None:
        self.sctp = sctp
        self.dtls = dtls = sctp.transport
        self.connection = connection
        self.loop: asyncio.AbstractEventLoop = sctp._loop
        self.fast_dtls = fast_dtls
        self.udp_batching = udp_batching
        #: The record layer once the records are taken over (None before, or on OpenSSL's path).
        self.layer: Optional[DtlsRecordLayer] = None
        #: Why the records stay with OpenSSL (None while a takeover may still come).
        self.takeover_refused: Optional[str] = None if fast_dtls else "fast_dtls is off"
        #: Records after the takeover that are not DTLS application data or alerts (stale handshake).
        self.records_ignored = 0
        self.batches_received = 0
        self.send_calls = 0
        self.datagrams_sent = 0
        self._highest_read: Optional[int] = None
        self._locality: tuple[Any, bool] = (None, False)  # (nominated pair, its peer on this host)
        #: Give the CPU up after the next send (set by FastSctpTransport around a message that
        #: leaves at once toward a peer on this host: yield_to_local_peer).
        self.yield_after_send = False
        self._readers: list[BatchReader] = []
        self._batch_sockets: dict[Any, UdpBatchSocket] = {}
        self._corked = 0
        self._pending: list[bytes] = []
        self._closed = False
        self._queue = connection._queue
        self._queue_data = connection.data_received
        self._ssl = dtls._ssl
        # What OpenSSL may have to read: a 16 KiB packet once this side said it reads them.
        self._read_size = LARGE_DATAGRAM if fast_dtls else 1500
        self._original_stop = dtls.stop
        self._original_close = connection.close
        #: The bound method installed as ``RTCDtlsTransport._send_data`` (SCTP checks that nobody
        #: replaced it before sending a whole transmit at once).
        self.send_hook = self.send_data

    # -- installing -----------------------------------------------------------------------------

    def _install(self) -> None:
        dtls, connection = self.dtls, self.connection
        connection.data_received = self._data_received  # type: ignore[method-assign]  # the seam into aioice
        for protocol in connection._protocols:
            if not (self.udp_batching and self._read_in_batches(protocol)):
                _shortcut_stun_check(protocol, connection)
        dtls._send_data = self.send_hook
        dtls.stop = self._stop_dtls
        connection.close = self._close_connection  # type: ignore[method-assign]  # the seam into aioice

    def _read_in_batches(self, protocol: Any) -> bool:
        transport = protocol.transport
        if transport is None or transport.is_closing():
            return False
        component = protocol.local_candidate.component
        stun_received = protocol.datagram_received
        replaced = protocol.__dict__

        def on_datagrams(batch: list) -> None:
            self.batches_received += 1
            hook = replaced.get("datagram_received")
            if hook is not None:
                # Someone (a test cutting the network) replaced aioice's datagram_received on this
                # protocol: every datagram goes through it, as on aiortc's own path.
                for data, address in batch:
                    hook(data, address)
                return
            # A wake-up may bring hundreds of packets (GRO): SCTP answers every SACK_BATCH_BYTES of
            # them, so the sender hears back while the rest is handled.
            total = len(batch)
            stop = 0
            while stop < total:
                start = stop
                size = 0
                while stop < total and size < SACK_BATCH_BYTES:
                    size += len(batch[stop][0])
                    stop += 1
                self._corked += 1
                self.sctp._receiving_batch = True
                try:
                    if self._compiled_receive():
                        self._receive_compiled(batch, start, stop, component, stun_received)
                    else:
                        self._receive_each(batch, start, stop, component, stun_received)
                finally:
                    self.sctp._receiving_batch = False
                    self._corked -= 1
                    run_now(self.sctp._batch_received(), self.loop, self._receive_failed)
                    if not self._corked and self._pending:
                        pending, self._pending = self._pending, []
                        try:
                            self._transmit(pending)
                        except ConnectionError:
                            pass  # ICE has no nominated pair any more: the connection is ending

        try:
            self._readers.append(BatchReader(transport, on_datagrams, slot_size=LARGE_DATAGRAM))
        except (OSError, ValueError, AttributeError) as error:
            logger.info("ICE socket read one datagram at a time: %s", error)
            return False
        return True

    # -- receiving ------------------------------------------------------------------------------

    def _data_received(self, data: bytes, component: int) -> None:
        # aioice's protocols hand every datagram that is not STUN to the connection here.
        if data and 19 < data[0] < 64:
            self._dtls_datagram(data, component)
        else:
            self._queue_data(data, component)

    def _compiled_receive(self) -> bool:
        """Whether received batches go through ``_sctp.receive_datagrams`` (records taken over,
        SCTP taking the data, the compiled in-order path on)."""
        sctp = self.sctp
        return (
            self.layer is not None
            and not self._closed
            and sctp.compiled_receive
            and self.dtls._data_receiver is sctp
        )

    def _receive_compiled(self, batch: list, index: int, stop: int, component: int,
                          stun_received: Callable[[bytes, Any], None]) -> None:
        """``batch[index:stop]``: in-order DATA in compiled code, everything else as before."""
        layer, sctp, dtls = self.layer, self.sctp, self.dtls
        assert layer is not None
        messages: list[tuple[int, int, bytes]] = []
        while index < stop:
            index, rest_chunks, rest_records, count, size = _sctp.receive_datagrams(
                layer, sctp, batch, index, stop, messages)
            if count:
                dtls._RTCDtlsTransport__rx_bytes += size
                dtls._RTCDtlsTransport__rx_packets += count
            if messages:
                sctp.deliver(messages, self._receive_failed)
                messages = []
            if rest_chunks is not None:
                run_now(sctp._handle_chunks(rest_chunks, True), self.loop, self._receive_failed)
            if rest_records is not None:
                self._handle_records(rest_records)
            if layer.peer_closed:
                self._peer_closed()
                self._receive_each(batch, index, stop, component, stun_received)
                return
            if rest_chunks is None and rest_records is None and index < stop:
                data, address = batch[index]  # not a DTLS record: STUN
                index += 1
                stun_received(data, address)

    def _receive_each(self, batch: list, index: int, stop: int, component: int,
                      stun_received: Callable[[bytes, Any], None]) -> None:
        """``batch[index:stop]`` one datagram at a time: DTLS records here, the rest (STUN) to aioice."""
        for data, address in batch[index:stop]:
            if data and 19 < data[0] < 64:
                self._dtls_datagram(data, component)
            else:
                stun_received(data, address)

    def _dtls_datagram(self, data: bytes, component: int) -> None:
        layer = self.layer
        dtls = self.dtls
        if layer is not None:
            dtls._RTCDtlsTransport__rx_bytes += len(data)
            dtls._RTCDtlsTransport__rx_packets += 1
            self._handle_records(layer.unprotect_datagram(data))
            if layer.peer_closed:
                self._peer_closed()
            return
        if self.takeover_refused is None:
            self._note_read_sequence(data)
        if (
            data[0] == CONTENT_APPLICATION_DATA
            and self._queue.empty()
            and dtls._data_receiver is self.sctp
            and dtls._state is _CONNECTED
        ):
            dtls._RTCDtlsTransport__rx_bytes += len(data)
            dtls._RTCDtlsTransport__rx_packets += 1
            self._ssl.bio_write(data)
            try:
                plain = self._ssl.recv(self._read_size)
            except SSL.ZeroReturnError:
                # close_notify: let aiortc's own loop see the connection end.
                self._queue.put_nowait(None)
                return
            except SSL.Error:
                plain = b""
            if plain:
                if self.takeover_refused is None:
                    self._take_over()
                run_now(self.sctp._handle_data(plain), self.loop, self._receive_failed)
            return
        self._queue_data(data, component)

    def _handle_records(self, records: list) -> None:
        """Records the compiled layer accepted: application data to SCTP, alerts counted there."""
        dtls = self.dtls
        for content_type, plaintext in records:
            if content_type == CONTENT_APPLICATION_DATA:
                if plaintext and dtls._data_receiver is self.sctp:
                    run_now(self.sctp._handle_data(plaintext), self.loop, self._receive_failed)
            elif content_type != CONTENT_ALERT:
                self.records_ignored += 1

    def _peer_closed(self) -> None:
        if not self._closed:
            # The peer's close_notify (or a fatal alert): aiortc's own receive loop then sees
            # the connection end and closes the DTLS transport through its state machine.
            self._closed = True
            self._queue.put_nowait(None)  # ends aioice's recv() (aioice 0.12+, which aiortc 1.16 needs)

    def _note_read_sequence(self, data: bytes) -> None:
        """Keep the highest epoch-1 sequence number that OpenSSL will have read."""
        pos, end = 0, len(data)
        while end - pos >= 13:
            length = (data[pos + 11] << 8) | data[pos + 12]
            if (data[pos + 3] << 8) | data[pos + 4] == 1:
                sequence = int.from_bytes(data[pos + 5 : pos + 11], "big")
                if self._highest_read is None or sequence > self._highest_read:
                    self._highest_read = sequence
            pos += 13 + length

    def _take_over(self) -> None:
        """Move the epoch-1 records to the compiled layer (the peer has finished its handshake:
        its application data arrived, so it will never make OpenSSL resend a handshake flight)."""
        dtls = self.dtls
        if not self._queue.empty():
            return  # aiortc's loop still holds records for OpenSSL: try with the next record
        try:
            self.layer = DtlsRecordLayer.from_ssl_connection(
                self._ssl, dtls._role == "client", read_sequence=self._highest_read)
        except DtlsTakeoverError as error:
            self.takeover_refused = str(error)
            logger.info("DTLS records stay with OpenSSL: %s", error)
            return
        except (SSL.Error, AttributeError) as error:
            self.takeover_refused = f"{type(error).__name__}: {error}"
            logger.warning("DTLS records stay with OpenSSL: taking them over failed: %s", self.takeover_refused)
            return
        logger.debug("DTLS records taken over (%s, %s)", self._ssl.get_cipher_name(), self.layer.backend)
        self._choose_packet_size()

    def _choose_packet_size(self) -> None:
        """Send larger SCTP packets to a peer that reads them, as far as the path carries them."""
        remote = self.sctp.remote_max_packet
        if not remote or remote <= self.sctp.max_packet:
            return
        pair = self.connection._nominated.get(1)
        limit = _path_datagram_limit(pair) if pair is not None else None
        if limit is not None and limit - RECORD_OVERHEAD > self.sctp.max_packet:
            self.sctp.set_max_packet(min(remote, limit - RECORD_OVERHEAD))

    def _receive_failed(self, error: Exception) -> None:
        # What aiortc's DTLS receive loop does when SCTP raises: log it and end the transport.
        logger.warning("DTLS transport ends: handling received data raised %r", error, exc_info=error)
        task = self.dtls._task
        if task is not None:
            task.cancel()  # its ``finally`` marks the DTLS transport closed

    def peer_on_this_host(self) -> bool:
        """Whether the nominated ICE pair's remote end is on this machine (see :func:`same_host`);
        False where the platform cannot give the CPU up (no ``os.sched_yield``)."""
        if _sched_yield is None:
            return False
        pair = self.connection._nominated.get(1)
        known, local = self._locality
        if pair is not known:
            local = pair is not None and same_host(pair.protocol.local_candidate.host, pair.remote_addr[0])
            self._locality = (pair, local)
        return local

    # -- sending --------------------------------------------------------------------------------

    async def send_data(self, data: bytes) -> None:
        """``RTCDtlsTransport._send_data`` of this connection: one SCTP packet."""
        self.send_packets([data])

    def send_packets(self, packets: list) -> None:
        """Protect SCTP packets and send them, in one system call where the kernel allows.

        Raises ConnectionError when the DTLS transport is not (or no longer) connected.
        """
        self._check_connected()
        layer = self.layer
        if layer is not None:
            protect = layer.protect
            records = [protect(packet) for packet in packets]
        else:
            records = self._openssl_records(packets)
        self._send_records(records)

    def send_sctp_packets(self, source_port: int, destination_port: int, verification_tag: int,
                          packets: list) -> int:
        """Build the SCTP packets ``packets`` ((control, chunks) pairs), protect and send them as
        :meth:`send_packets` does; returns how many DATA chunks they carry.

        With the compiled record layer's EVP backend each packet is written straight into its
        record and encrypted there (one allocation, no copy per packet).
        """
        self._check_connected()
        layer = self.layer
        if layer is not None and layer.backend == "evp":
            records, data_chunks = _sctp.seal_packets(layer, source_port, destination_port,
                                                      verification_tag, packets)
            self._send_records(records)
            return data_chunks
        build = _sctp.build_packet
        self.send_packets([build(source_port, destination_port, verification_tag, control, chunks)
                           for control, chunks in packets])
        return sum(len(chunks) for _, chunks in packets)

    def _check_connected(self) -> None:
        if self.dtls._state is not _CONNECTED:
            raise ConnectionError("Cannot send encrypted data, not connected")

    def _send_records(self, records: list) -> None:
        dtls = self.dtls
        dtls._RTCDtlsTransport__tx_packets += len(records)
        dtls._RTCDtlsTransport__tx_bytes += sum(map(len, records))
        if self._corked:
            self._pending += records
        else:
            self._transmit(records)

    def _openssl_records(self, packets: list) -> list:
        ssl = self._ssl
        records = []
        for packet in packets:
            try:
                ssl.send(packet)
                records.append(ssl.bio_read(1500))
            except SSL.Error as error:
                # DTLS shut down (close() in progress) but not marked closed yet.
                raise ConnectionError(f"DTLS transport is shutting down: {error}") from None
        return records

    def _transmit(self, records: list) -> None:
        if not records:
            return
        pair = self.connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        protocol = pair.protocol
        address = pair.remote_addr
        self.send_calls += 1
        self.datagrams_sent += len(records)
        hook = protocol.__dict__.get("send_data")
        if hook is not None:
            # Someone (a test injecting faults below DTLS) replaced aioice's send_data on this
            # protocol: every datagram goes through it, as on aiortc's own path.
            for record in records:
                result = hook(record, address)
                if asyncio.iscoroutine(result):
                    run_now(result, self.loop)
            return
        transport = protocol.transport
        sent = 0
        if self.udp_batching:
            batch = self._batch_socket(transport)
            if batch is not None:
                try:
                    sent = batch.send_batch(records, address)
                except OSError as error:
                    logger.debug("batched send failed (%s); sending one datagram at a time", error)
        # What the kernel did not take (socket buffer full): asyncio's transport queues it.
        for record in records[sent:] if sent else records:
            transport.sendto(record, address)
        if self.yield_after_send:
            # The receiving process, on this host, was woken on this CPU: let it run now.
            self.yield_after_send = False
            _sched_yield()  # type: ignore[misc]  # set only where the platform has it
            self.sctp.stats.yields += 1

    def _batch_socket(self, transport: Any) -> Optional[UdpBatchSocket]:
        """The batch sender on ``transport``'s socket; None while the event loop still queues earlier
        datagrams there (their order is kept), once the transport is closing, and where the platform
        has no batched send (the transport's own ``sendto`` then: uvloop's socket object has none)."""
        if transport.is_closing() or transport.get_write_buffer_size():
            return None
        batch = self._batch_sockets.get(transport)
        if batch is None:
            sock = transport.get_extra_info("socket")
            if sock is None:
                return None
            batch = UdpBatchSocket(sock, send="auto", receive="recvfrom")
            self._batch_sockets[transport] = batch  # by transport: a closed socket's number is reused
        if batch.send_strategy == "sendto":
            return None
        return batch

    # -- closing --------------------------------------------------------------------------------

    async def _stop_dtls(self) -> None:
        """``RTCDtlsTransport.stop``: the layer's close_notify first (OpenSSL can no longer write)."""
        layer = self.layer
        if layer is not None and not layer.write_closed and self.dtls._state is _CONNECTED:
            try:
                pending, self._pending = self._pending, []
                self._transmit(pending + [layer.close_notify()])
            except (ConnectionError, OSError) as error:
                logger.debug("close_notify not sent: %s", error)
        await self._original_stop()

    async def _close_connection(self) -> None:
        """aioice ``Connection.close``: give the sockets back to their transports first."""
        self.close_readers()
        await self._original_close()

    @property
    def reads_sockets(self) -> bool:
        """Whether this data plane reads the ICE sockets itself (batched reading is in place)."""
        return bool(self._readers)

    def pause_reading(self) -> None:
        """Stop reading the ICE sockets (flow control, as ``DatagramTransport.pause_reading``)."""
        for reader in self._readers:
            reader.pause_reading()

    def resume_reading(self) -> None:
        """Read the ICE sockets again after :meth:`pause_reading`."""
        for reader in self._readers:
            reader.resume_reading()

    def close_readers(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers.clear()

    def stats(self) -> dict[str, Any]:
        """What this data plane did: the record layer's counters and the batching figures."""
        out: dict[str, Any] = {
            "dtls": "compiled" if self.layer is not None else "openssl",
            "takeover_refused": self.takeover_refused,
            "records_ignored": self.records_ignored,
            "batches_received": self.batches_received,
            "datagrams_received": sum(r.socket.datagrams_received for r in self._readers),
            "send_calls": self.send_calls,
            "datagrams_sent": self.datagrams_sent,
        }
        if self.layer is not None:
            out.update(self.layer.stats(), backend=self.layer.backend)
        return out


def install(sctp: Any, *, fast_dtls: bool = True, udp_batching: bool = True) -> Optional[DataPlane]:
    """Give the connection under ``sctp`` (a FastSctpTransport about to start) a :class:`DataPlane`.

    Returns None, changing nothing, when the ICE transport does not run on an aioice
    ``Connection`` (a transport of the application's own making) or a seam is missing (logged):
    its datagrams keep aiortc's path.
    """
    dtls = sctp.transport
    missing = missing_seams(dtls)
    if missing:
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        if isinstance(connection, Connection):
            logger.warning("clasp_fast data plane off for this connection (aiortc's path): missing %s",
                           ", ".join(missing))
        return None
    plane = DataPlane(sctp, dtls.transport._connection, fast_dtls=fast_dtls, udp_batching=udp_batching)
    plane._install()
    return plane


def same_host(local_host: str, remote_host: str) -> bool:
    """Whether datagrams from ``local_host`` to ``remote_host`` (IP literals) stay on this machine:
    the remote address is a loopback address, or it is the local address itself."""
    try:
        remote = _unmapped(ipaddress.ip_address(remote_host.split("%", 1)[0]))
        if remote.is_loopback:
            return True
        return remote == _unmapped(ipaddress.ip_address(local_host.split("%", 1)[0]))
    except ValueError:  # a name, not an address: not known to be local
        return False


_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _unmapped(address: _Address) -> _Address:
    # ::ffff:127.0.0.1 is 127.0.0.1 (Python before 3.13 does not call it loopback).
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _path_datagram_limit(pair: Any) -> Optional[int]:
    """Largest UDP payload the route to ``pair``'s remote address carries unfragmented, when both
    ends are host candidates (or the peer is on loopback) and the kernel says (Linux); else None."""
    local, remote = getattr(pair, "local_candidate", None), getattr(pair, "remote_candidate", None)
    address = pair.remote_addr
    on_loopback = address[0].startswith("127.") or address[0] == "::1"
    if not sys.platform.startswith("linux"):
        return None
    if not on_loopback and (getattr(local, "type", None) != "host" or getattr(remote, "type", None) != "host"):
        return None
    v6 = ":" in address[0]
    probe = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((address[0], address[1]))  # sends nothing: only picks the route
        mtu = probe.getsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, _IPV6_MTU if v6 else _IP_MTU)
    except OSError:
        return None
    finally:
        probe.close()
    return min(mtu, 65535) - (48 if v6 else 28)


def _shortcut_stun_check(protocol: Any, connection: Any) -> None:
    """Pass DTLS records (first byte 20..63) on without trying to parse them as STUN."""
    stun_first = protocol.datagram_received
    component = protocol.local_candidate.component

    def datagram_received(data: bytes, addr: tuple) -> None:
        if data and 19 < data[0] < 64:
            connection.data_received(data, component)
        else:
            stun_first(data, addr)

    protocol.datagram_received = datagram_received

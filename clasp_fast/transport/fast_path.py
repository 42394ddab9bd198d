"""Receive-path shortcuts under a FastSctpTransport: fewer hops from the UDP socket to SCTP.

Stock aiortc hands every datagram through four steps: aioice first tries to parse it as STUN
(an exception for every DTLS record), queues it, a task wakes up one event-loop iteration later
to take it off the queue, and aiortc's DTLS glue decrypts it and then always tries to read
outgoing DTLS data (another exception). :func:`install` shortens that for one connection:

* the ICE sockets' protocols pass DTLS records (first byte 20..63, RFC 7983) straight to the ICE
  connection instead of trying STUN first; STUN still goes to aioice's parser;
* the ICE connection decrypts DTLS application-data records (content type 23) at once and hands
  the SCTP packet to the SCTP transport in the same callback. Anything else (handshake, alerts,
  DTLS 1.3 records, or any datagram while older ones are still queued) takes aiortc's own path;
* after such a record nothing is read back from OpenSSL: decrypting DTLS 1.2 application data
  produces no output (handshake and alert records, which can, take aiortc's path).

Coroutines of the SCTP transport are run with :func:`run_now`: to completion inside the callback
when they never wait (the common case: sending on a UDP socket does not block), else continued in
a task. An exception out of SCTP's packet handling (an application's event handler raised and had
no ``error`` listener) ends the DTLS transport as aiortc's own receive loop does: logged, and the
connection closes. Used only when ``WebRtcConfig.fast_sctp`` is on; it relies on the aiortc 1.16 / aioice 0.13
/ pyOpenSSL internals named in the code (``clasp_fast.sctp`` checks the aiortc version).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Coroutine, Optional

from aioice import Connection
from aiortc.rtcdtlstransport import State
from OpenSSL import SSL

__all__ = ["install", "run_now"]

_APPLICATION_DATA = 23
_CONNECTED = State.CONNECTED

logger = logging.getLogger(__name__)

ErrorHandler = Callable[[Exception], None]


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


def install(sctp: Any) -> bool:
    """Shorten the receive path of the connection under ``sctp`` (a started FastSctpTransport).

    Returns False, changing nothing, when the ICE transport does not run on an aioice
    ``Connection`` (a transport of the application's own making): its datagrams keep aiortc's path.
    """
    dtls = sctp.transport
    connection = getattr(dtls.transport, "_connection", None)
    if not isinstance(connection, Connection):
        return False
    loop = sctp._loop
    queue = connection._queue
    ssl_connection = dtls._ssl
    queue_data = connection.data_received

    def receive_failed(error: Exception) -> None:
        # What aiortc's DTLS receive loop does when SCTP raises: log it and end the transport.
        logger.warning("DTLS transport ends: handling received data raised %r", error, exc_info=error)
        task = dtls._task
        if task is not None:
            task.cancel()  # its ``finally`` marks the DTLS transport closed

    def data_received(data: bytes, component: int) -> None:
        if (
            data
            and data[0] == _APPLICATION_DATA
            and queue.empty()
            and dtls._data_receiver is sctp
            and dtls._state is _CONNECTED
        ):
            dtls._RTCDtlsTransport__rx_bytes += len(data)
            dtls._RTCDtlsTransport__rx_packets += 1
            ssl_connection.bio_write(data)
            try:
                plain = ssl_connection.recv(1500)
            except SSL.ZeroReturnError:
                # close_notify: let aiortc's own loop see the connection end.
                queue.put_nowait(None)
                return
            except SSL.Error:
                plain = b""
            if plain:
                run_now(sctp._handle_data(plain), loop, receive_failed)
            return
        queue_data(data, component)

    connection.data_received = data_received  # type: ignore[method-assign]  # the seam into aioice
    for protocol in connection._protocols:
        _shortcut_stun_check(protocol, connection)
    return True


def _shortcut_stun_check(protocol: Any, connection: Any) -> None:
    """Pass DTLS records (first byte 20..63) on without trying to parse them as STUN."""
    stun_first = protocol.datagram_received
    component = protocol.local_candidate.component

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 19 < data[0] < 64:
            connection.data_received(data, component)
        else:
            stun_first(data, addr)

    protocol.datagram_received = datagram_received

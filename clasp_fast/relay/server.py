"""The embedded CLASP relay: a ``websockets`` server in front of a :class:`~clasp_fast.router.Router`.

Start it from a program or a test::

    relay = await Relay.start(host="127.0.0.1", port=0)   # port 0: an ephemeral port
    print(relay.url)                                     # ws://127.0.0.1:PORT
    ...
    await relay.close()

or ``async with Relay(port=0) as relay: ...``, or from the shell:
``python -m clasp_fast relay --host 127.0.0.1 --port 7330``.

Per connection: the first message must be a HELLO within ``handshake_timeout``
(else the connection is closed with code 1002 and no ERROR, as the reference does).
After the handshake every binary message is one CLASP frame. Where the reference
router is silent about bad input, this relay answers and keeps the connection:

* an undecodable frame gets ERROR 100 (bad frame header / incomplete frame) or
  ERROR 101 (bad payload) carrying the decoder's text with byte offset and field;
* a text message gets ERROR 100;
* a message larger than ``max_message_size`` closes that connection (code 1009).

Authenticated mode: ``Relay(auth=TokenAuth({...}))`` (or any validator, see
:mod:`clasp_fast.auth`). A HELLO without a token gets ERROR 300 "Authentication
required", an unknown token ERROR 300, an expired one ERROR 302, a failing validator
ERROR 500; the connection is then closed with 1008. Operations outside the token's
scopes get ERROR 301. A second HELLO with a bad token ends the connection the same way.

Plain HTTP on the same port: ``GET /clasp-p2p.js`` returns the browser module
(``clasp_fast/browser/clasp-p2p.js``, ``text/javascript``); with ``static_dir`` set, ``GET /name``
returns files from that folder (``/`` is ``index.html``); anything else without
``Upgrade: websocket`` gets ``200 ok`` (health check).

Each session has a bounded outgoing queue (:class:`~clasp_fast.fair_queue.FairQueue`: one
lane per sending session, served round-robin) drained by its own writer task, so a slow
consumer never blocks routing and a flooding sender cannot make others' messages wait
behind its own: fan-out to a full queue drops the newest frame of the busiest sender
(reported with ERROR 503, docs/protocol.md §8.8); direct replies may use up to twice the queue
size, beyond which the connection is closed with 1008. SNAPSHOTs are streamed, produced
frame by frame as the socket drains, and never count against that limit. Between
connections the event loop is shared fairly: a writer yields after ``WRITE_TURN``
frames, a reader after ``READ_TURN`` units of routing work, and a socket read takes at
most ``READ_CHUNK`` bytes. Shutdown closes every connection with 1001.
See docs/security.md for the threat model and every limit.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import socket
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from ..errors import DecodeError, ProtocolError
from ..metrics import Metrics, MetricsServer, relay_source
from ..runtime.sink import ErrorCallback, ErrorSink
from ..runtime.tasks import TaskSet
from ..wire.codec import decode, encode, frame_size
from ..wire.messages import Error, Hello
from ..wire.protocol import DEFAULT_PORT, MAX_FRAME, WS_SUBPROTOCOL
from .auth import Validator
from .fair_queue import OWN, FairQueue
from .router import Router, RouterConfig, Session

__all__ = ["Relay"]

log = logging.getLogger("clasp_fast.relay")

# Fairness between connections: a writer yields to the event loop after WRITE_TURN frames, a
# reader after READ_TURN units of work (one per message plus one per fan-out frame it caused),
# or after one message when that message found a subscriber's queue half full while its socket
# takes data (routing outpacing that writer: the sender waits instead of the frames being dropped).
WRITE_TURN = 16
READ_TURN = 128
READ_CHUNK = 16 * 1024  # bytes taken from a socket per read


class _Connection:
    """The socket side of one session: its :class:`FairQueue` and the writer task that drains it."""

    __slots__ = ("ws", "limit", "tasks", "queue", "wakeup", "closing", "writer", "sending", "counters")

    def __init__(self, ws: ServerConnection, limit: int, tasks: TaskSet, counters: dict[str, int]) -> None:
        self.ws = ws
        self.counters = counters  # the relay's totals (frames and bytes sent)
        self.limit = limit
        self.tasks = tasks
        self.queue = FairQueue(limit)
        self.wakeup = asyncio.Event()
        self.closing = False
        self.writer: asyncio.Task[Any] | None = None
        self.sending = False  # seen True by others only while a send waits for the socket

    @property
    def behind(self) -> bool:
        return 2 * len(self.queue) >= self.limit and not self.sending

    def reply(self, frame: bytes, address: str | None = None) -> None:
        if self.queue.backlog(OWN) >= 2 * self.limit:
            self.close(1008, "outgoing queue overflow: the client does not read")
            return
        self.queue.put(OWN, frame, address)
        self.wakeup.set()

    def stream(self, frames: Iterator[bytes]) -> None:
        if self.queue.backlog(OWN) >= 2 * self.limit:
            self.close(1008, "outgoing queue overflow: the client does not read")
            return
        self.queue.put_stream(OWN, frames)
        self.wakeup.set()

    def broadcast(self, frame: bytes, sender: str | None = None, address: str | None = None) -> bool:
        if self.closing:
            return False
        admitted = self.queue.offer(sender or OWN, frame, address)
        self.wakeup.set()
        return admitted

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.queue.clear()
            self.tasks.spawn(self.ws.close(code, reason))

    async def stop_writer(self) -> None:
        """Cancel the writer task and wait for it; frames not yet sent stay in ``queue``."""
        if self.writer is not None:
            self.writer.cancel()
            try:
                await self.writer
            except asyncio.CancelledError:
                pass

    async def run_writer(self) -> None:
        """Send queued frames, at most WRITE_TURN per turn of the event loop."""
        pop = self.queue.pop
        send = self.ws.send
        wakeup = self.wakeup
        counters = self.counters
        cork = _Cork(self.ws)
        try:
            while True:
                frame = pop()
                if frame is None:
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                self.sending = True
                await send(frame)
                sent, size = 1, len(frame)
                frame = pop()
                if frame is not None:  # more than one frame this turn: let the kernel pack them
                    cork.hold()
                    try:
                        while frame is not None:
                            await send(frame)
                            sent += 1
                            size += len(frame)
                            frame = pop() if sent < WRITE_TURN else None
                    finally:
                        cork.release()
                counters["messages_sent"] += sent
                counters["bytes_sent"] += size
                self.sending = False
                await asyncio.sleep(0)  # let the other connections have the loop
        except ConnectionClosed:
            pass


class _Cork:
    """TCP_CORK around a turn's frames where the platform has it (Linux): the kernel sends them
    in full segments instead of one segment (and one wake-up of the reader) per frame."""

    __slots__ = ("sock",)

    def __init__(self, ws: ServerConnection) -> None:
        sock = ws.transport.get_extra_info("socket")
        self.sock = sock if hasattr(socket, "TCP_CORK") and sock is not None else None

    def hold(self) -> None:
        self._set(1)

    def release(self) -> None:
        self._set(0)

    def _set(self, value: int) -> None:
        if self.sock is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, value)
            except OSError:  # the connection is gone; the send reports it
                self.sock = None


class Relay:
    """An embedded CLASP relay (router + WebSocket server) on ``host:port``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        name: str = "clasp_fast relay",
        max_sessions: int = 100,
        max_subscriptions: int = 1000,
        rate_limit: int | None = None,
        queue_size: int = 1024,
        handshake_timeout: float = 10.0,
        gesture_coalesce: float | None = 0.016,
        ttl_sweep_interval: float = 1.0,
        max_message_size: int = MAX_FRAME,
        static_dir: str | Path | None = None,
        auth: Validator | None = None,
        max_store_bytes: int = RouterConfig.max_store_bytes,
        max_params: int = RouterConfig.max_params,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.static_dir = Path(static_dir).resolve() if static_dir is not None else None
        self.port = port
        self.queue_size = queue_size
        self.handshake_timeout = handshake_timeout
        self.ttl_sweep_interval = ttl_sweep_interval
        self.max_message_size = max_message_size
        self.router = Router(RouterConfig(
            name=name, max_sessions=max_sessions, max_subscriptions=max_subscriptions,
            rate_limit=rate_limit, gesture_coalesce=gesture_coalesce, auth=auth,
            max_store_bytes=max_store_bytes, max_params=max_params))
        self._server: Server | None = None
        # Internal failures (a router bug taking one session down) go to on_error, else the log.
        self.errors = ErrorSink(log, logging.ERROR, tracebacks=True)
        self._tasks = TaskSet(self.errors.report)
        self._sweeper: asyncio.Task[Any] | None = None
        #: Counters and gauges (docs/streams.md); on HTTP at ``metrics_port`` when one is given.
        # Relay totals as plain ints (the hot path only adds to them); sessions keep their own counts.
        self.counters = dict.fromkeys(("messages_sent", "bytes_sent", "bytes_received"), 0)
        self.metrics = Metrics()
        self.metrics.add_source(relay_source(self))
        self.metrics.add_source(self._metrics_samples)
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.metrics_server: MetricsServer | None = None

    def stats(self) -> dict[str, Any]:
        """The relay's figures as plain data (the same as the metrics endpoint serves)."""
        return self.metrics.snapshot()

    def _metrics_samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        c = self.counters
        yield "clasp_messages_total", ("relay", "", "websocket", "sent"), c["messages_sent"]
        yield "clasp_bytes_total", ("relay", "", "websocket", "sent"), c["bytes_sent"]
        yield "clasp_bytes_total", ("relay", "", "websocket", "received"), c["bytes_received"]

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options: Any) -> "Relay":
        """Create a relay and start listening; ``port=0`` picks a free port."""
        relay = cls(host, port, **options)
        await relay.listen()
        return relay

    async def listen(self) -> None:
        """Start listening (``start`` and ``async with`` call this).

        With ``metrics_port``, the metrics endpoint starts first: MetricsError when its port is in use.
        """
        if self.metrics_port is not None and self.metrics_server is None:
            self.metrics_server = await self.metrics.serve(self.metrics_port, self.metrics_host)
        try:
            self._server = await serve(
                self._serve,
                self.host,
                self.port,
                subprotocols=[Subprotocol(WS_SUBPROTOCOL)],
                select_subprotocol=_select_subprotocol,
                process_request=self._process_request,
                max_size=self.max_message_size,
                compression=None,
                ping_interval=None,
            )
        except BaseException:
            if self.metrics_server is not None:
                await self.metrics_server.close()
                self.metrics_server = None
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self._tasks.spawn(self._sweep())

    @property
    def url(self) -> str:
        """The ``ws://`` URL clients connect to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def sessions(self) -> dict[str, Session]:
        return self.router.sessions

    def on_error(self, callback: ErrorCallback) -> ErrorCallback:
        """Call ``callback(exc)`` for internal failures (a session ended by an unexpected exception)."""
        return self.errors.add(callback)

    async def close(self) -> None:
        """Stop listening and close every session with code 1001 (going away)."""
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = None
        if self._server is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.router.close()
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        if self._server is None:
            await self.listen()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> "Relay":
        if self._server is None:
            await self.listen()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return _serve_http(self, connection, request)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_sweep_interval)
            self.router.expire()

    async def _serve(self, ws: ServerConnection) -> None:
        router = self.router
        if router.full:
            await ws.close(1013, "relay full: session limit reached")
            return
        try:
            first = await asyncio.wait_for(ws.recv(), self.handshake_timeout)
            hello = decode(first) if isinstance(first, bytes) else None
        except (asyncio.TimeoutError, ConnectionClosed, DecodeError):
            hello = None
        if not isinstance(hello, Hello):
            await ws.close(1002, "the first message must be a CLASP HELLO")
            return
        _limit_read_chunk(ws)
        conn = _Connection(ws, self.queue_size, self._tasks, self.counters)
        try:
            session = router.connect(conn, hello)
        except ProtocolError as exc:
            await _refuse(ws, exc)
            return
        conn.writer = self._tasks.spawn(conn.run_writer())
        receive = router.receive
        counters = self.counters
        work = 0
        try:
            async for data in ws:
                counters["bytes_received"] += len(data)
                if work >= READ_TURN:  # a busy sender yields to the others between messages
                    work = 0
                    await asyncio.sleep(0)
                if type(data) is not bytes:
                    conn.reply(_TEXT_ERROR)
                    continue
                try:
                    message = decode(data)
                except DecodeError as exc:
                    conn.reply(encode(Error(code=_decode_error_code(data), message=str(exc))))
                    continue
                if type(message) is Hello:
                    # A second HELLO starts a new session on this connection (docs/protocol.md §8.1).
                    router.disconnect(session)
                    try:
                        session = router.connect(conn, message)
                    except ProtocolError as exc:
                        await conn.stop_writer()
                        await _refuse(ws, exc, conn.queue)
                        return
                    continue
                before = router.delivered
                router.behind = False
                receive(session, message)
                work += 1 + router.delivered - before
                if router.behind:  # a subscriber's writer falls behind this sender: let it catch up
                    work = READ_TURN
        except ConnectionClosed:
            pass
        except Exception as exc:  # a router bug must not take other sessions down
            exc.add_note(f"session {session.id} ended by this")
            self.errors.report(exc)
            conn.close(1011, "internal error")
        finally:
            router.disconnect(session)
            conn.closing = True
            conn.writer.cancel()


def _limit_read_chunk(ws: ServerConnection) -> None:
    # asyncio reads up to 256 KiB per socket read, and websockets parses every frame in it
    # before the loop moves on: for a flood of small frames that is ~5,000 frames, a stall of
    # tens of milliseconds for every other connection. Smaller reads bound that stall.
    transport = ws.transport
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = READ_CHUNK  # type: ignore[attr-defined]  # the selector loop's transports


async def _refuse(ws: ServerConnection, exc: ProtocolError, queued: FairQueue | None = None) -> None:
    """Send what is still ``queued``, then the failed handshake's ERROR (300/302/500); close with 1008."""
    try:
        while queued is not None and (frame := queued.pop()) is not None:
            await ws.send(frame)
        await ws.send(encode(Error(code=exc.code if exc.code is not None else 500, message=exc.reason)))
    except ConnectionClosed:
        return
    await ws.close(1008, "authentication failed")


_TEXT_ERROR = encode(Error(code=100, message="text WebSocket messages are not CLASP frames; send binary"))


def _decode_error_code(data: bytes) -> int:
    """100 when the frame itself is broken (magic, length), 101 when the payload is."""
    try:
        size = frame_size(data)
    except DecodeError:
        return 100
    if size is None or size > len(data):
        return 100
    return 101


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # Echo "clasp" when offered; accept clients that offer nothing (docs/protocol.md §1.1).
    return Subprotocol(WS_SUBPROTOCOL) if WS_SUBPROTOCOL in offered else None


BROWSER_MODULE_PATH = "/clasp-p2p.js"


def _browser_module() -> bytes:
    return resources.files("clasp_fast").joinpath("browser", "clasp-p2p.js").read_bytes()


def _file_response(body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("Connection", "close")])
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)


def _content_type(path: Path) -> str:
    if path.suffix in (".js", ".mjs"):
        return "text/javascript; charset=utf-8"
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return guessed + "; charset=utf-8" if guessed.startswith("text/") else guessed


def _static_file(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or None (no escaping ``root``)."""
    relative = url_path.split("?", 1)[0].lstrip("/") or "index.html"
    candidate = (root / relative).resolve()
    if candidate != root and root in candidate.parents and candidate.is_file():
        return candidate
    return None


def _serve_http(relay: "Relay", connection: ServerConnection, request: Request) -> Response | None:
    if "websocket" in request.headers.get("Upgrade", "").lower():
        return None
    path = request.path.split("?", 1)[0]
    if path == BROWSER_MODULE_PATH:
        return _file_response(_browser_module(), "text/javascript; charset=utf-8")
    if relay.static_dir is not None:
        found = _static_file(relay.static_dir, path)
        if found is not None:
            return _file_response(found.read_bytes(), _content_type(found))
    return connection.respond(HTTPStatus.OK, "ok\n")  # a health check

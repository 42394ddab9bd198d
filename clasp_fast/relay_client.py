"""``ClaspClient``: a CLASP client for a relay (the embedded one or the reference router).

::

    client = await ClaspClient.connect("ws://127.0.0.1:7330", name="mixer")
    # or: client = await ClaspBuilder(url).name("mixer").connect()

    @client.on("/lumen/layer/*/opacity")
    def opacity(value, address):
        ...

    revision = await client.set("/lumen/layer/0/opacity", 0.5)   # waits for the ACK
    value = await client.get("/lumen/layer/0/opacity")
    await client.emit("/cue/go", {"scene": 3})
    await client.close()

Every reply of the router is understood (ACK, ERROR, SNAPSHOT, SYNC, PONG, RESULT,
BUNDLE, ...). A frame that cannot be decoded, or a callback that raises, is reported
to the ``on_error`` callbacks and the receive loop goes on. After a lost connection
the client reconnects with exponential backoff and re-subscribes; its session id
then changes. ``client.signaling`` is the P2P signaling channel over this relay.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time as _time
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .wire.address import validate_address
from .wire.codec import decode, encode
from .errors import ClaspError, DecodeError, ProtocolError, SignalingError, TransportError, URLError
from .wire.messages import (
    MISSING,
    Ack,
    Announce,
    Bundle,
    Error,
    Get,
    Hello,
    Ping,
    Pong,
    Publish,
    Query,
    Result,
    Set,
    Snapshot,
    Subscribe,
    Sync,
    Ttl,
    Unsubscribe,
    Welcome,
)
from .transport.signaling import SIGNAL_PREFIX, parse_signal, signal_address
from .runtime.dispatch import CallbackRegistry
from .runtime.tasks import TaskSet

__all__ = ["ClaspClient", "ClaspBuilder", "ClaspTimeoutError", "RelaySignaling", "validate_url"]

log = logging.getLogger("clasp_fast.client")

DEFAULT_FEATURES = ["param", "event", "stream", "gesture", "timeline"]


class ClaspTimeoutError(ClaspError, TimeoutError):
    """A request got no answer in time; ``address`` names what was asked for."""

    def __init__(self, message: str, address: str | None = None) -> None:
        self.address = address
        super().__init__(message)


def validate_url(url: object) -> str:
    """Return ``url`` if it is a usable relay URL (``ws://host:port`` or ``wss://...``), else raise
    ``URLError`` with a message that says how to write it."""
    if not isinstance(url, str):
        raise URLError(f"a relay URL must be a string, got {type(url).__name__}", url)
    if "://" not in url:
        raise URLError(f"relay URL {url!r} has no scheme: write ws://{url}", url)
    scheme, rest = url.split("://", 1)
    if scheme.lower() in ("http", "https"):
        fixed = ("wss" if scheme.lower() == "https" else "ws") + "://" + rest
        raise URLError(f"relay URL {url!r}: a CLASP relay speaks WebSocket, write {fixed}", url)
    if scheme.lower() not in ("ws", "wss"):
        raise URLError(f"relay URL {url!r}: the scheme must be ws:// or wss://, e.g. ws://127.0.0.1:7330",
                       url)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        text = parts.netloc.rsplit(":", 1)[-1]
        raise URLError(f"relay URL {url!r}: port {text!r} is not a number from 1 to 65535", url) from None
    if port == 0:
        raise URLError(f"relay URL {url!r}: port 0 cannot be connected to (1 to 65535)", url)
    if not parts.hostname:
        raise URLError(f"relay URL {url!r} has no host, e.g. ws://127.0.0.1:7330", url)
    return url


def _now_us() -> int:
    return _time.time_ns() // 1000


def _ttl(ttl: Ttl | int | float | None) -> Ttl | None:
    if ttl is None or isinstance(ttl, Ttl):
        return ttl
    return Ttl.sliding(int(ttl))  # a number of seconds: expires that long after the last write


class ClaspClient:
    """A connection to a CLASP relay with subscriptions, state cache and request tracking."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "clasp_fast client",
        token: str | None = None,
        features: Iterable[str] | None = None,
        reconnect: bool = True,
        reconnect_initial_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        reconnect_max_attempts: int | None = 20,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = validate_url(url)
        self.name = name
        self.token = token
        self.features = list(features) if features is not None else list(DEFAULT_FEATURES)
        self.reconnect = reconnect
        self.reconnect_initial_delay = reconnect_initial_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.reconnect_max_attempts = reconnect_max_attempts
        self.connect_timeout = connect_timeout
        self.session_id: str | None = None
        self.router_name: str | None = None
        self._ws = None
        self._receiver: asyncio.Task | None = None
        self._closing = False
        self._connected = asyncio.Event()
        self._clock_offset = 0  # server µs minus local µs
        self._cache: dict[str, Any] = {}
        self._callbacks = CallbackRegistry(self._spawn, self._report, 1024)
        self._set_waiters: dict[str, deque[asyncio.Future | None]] = {}
        self._set_values: dict[int, Any] = {}
        self._get_waiters: dict[str, list[asyncio.Future]] = {}
        self._ack_waiters: deque[asyncio.Future] = deque()  # BUNDLE ACKs (no address)
        self._result_waiters: deque[asyncio.Future] = deque()
        self._pong_waiters: deque[asyncio.Future] = deque()
        self._sync_waiters: dict[int, asyncio.Future] = {}
        self._error_watch: dict[str, asyncio.Future] = {}
        self._on_connect: list[Callable[[], Any]] = []
        self._on_disconnect: list[Callable[[str | None], Any]] = []
        self._on_error: list[Callable[[Exception], Any]] = []
        self._background = TaskSet(self._report)
        # Created up front so that no signal arriving before first use is lost.
        self._signaling = RelaySignaling(self)

    # -- connection -------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, **options: Any) -> "ClaspClient":
        """Connect to ``url``, perform the HELLO/WELCOME handshake and return the client."""
        client = cls(url, **options)
        await client.open()
        return client

    async def open(self) -> None:
        """Connect and start the receive loop (``connect`` and ``async with`` call this)."""
        self._closing = False
        await self._handshake()
        self._receiver = asyncio.get_running_loop().create_task(self._receive_loop(self._ws))
        self._notify(self._on_connect)

    async def _handshake(self) -> None:
        try:
            ws = await asyncio.wait_for(
                ws_connect(self.url, subprotocols=["clasp"], max_size=None, compression=None,
                           ping_interval=None, open_timeout=self.connect_timeout),
                self.connect_timeout)
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            raise TransportError(f"cannot connect: {exc}", peer=self.url, step="connect") from exc
        except (InvalidURI, ValueError) as exc:  # what validate_url let through
            raise URLError(f"relay URL {self.url!r}: {exc}", self.url) from exc
        try:
            await ws.send(encode(Hello(name=self.name, features=self.features, token=self.token)))
            deadline = asyncio.get_running_loop().time() + self.connect_timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                data = await asyncio.wait_for(ws.recv(), max(remaining, 0.001))
                message = decode(data)
                if type(message) is Welcome:
                    break
                if type(message) is Error:
                    raise ProtocolError(message.message, message.code, message.address)
        except (ConnectionClosed, asyncio.TimeoutError, DecodeError) as exc:
            await ws.close()
            raise TransportError(f"handshake failed: {exc!r}", peer=self.url, step="handshake") from exc
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        self.session_id = message.session
        self.router_name = message.name
        self._clock_offset = message.time - _now_us()
        self._connected.set()
        # The SNAPSHOT that follows WELCOME is handled by the receive loop.

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and not self._closing

    async def close(self) -> None:
        """Close the connection; no reconnect follows."""
        self._closing = True
        self._connected.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._receiver is not None and self._receiver is not asyncio.current_task():
            try:
                await self._receiver
            except asyncio.CancelledError:
                pass
        self._background.cancel()
        self._fail_pending(TransportError("client closed", peer=self.url, step="close"))

    async def __aenter__(self) -> "ClaspClient":
        if self._ws is None:
            await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the client is connected (e.g. after a reconnect)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    # -- callbacks --------------------------------------------------------------------------

    def on_connect(self, callback: Callable[[], Any]) -> Callable[[], Any]:
        """Register ``callback()`` for every (re)connection; usable as a decorator."""
        self._on_connect.append(callback)
        return callback

    def on_disconnect(self, callback: Callable[[str | None], Any]) -> Callable[[str | None], Any]:
        """Register ``callback(reason)`` for every lost connection; usable as a decorator."""
        self._on_disconnect.append(callback)
        return callback

    def on_error(self, callback: Callable[[Exception], Any]) -> Callable[[Exception], Any]:
        """Register ``callback(exc)`` for errors nobody awaits (bad frames, unclaimed ERRORs)."""
        self._on_error.append(callback)
        return callback

    def _notify(self, callbacks: list[Callable], *args: Any) -> None:
        self._background.notify(callbacks, *args)

    def _report(self, exc: Exception) -> None:
        if not self._on_error:
            log.warning("%s", exc)
        self._notify(self._on_error, exc)

    def _spawn(self, awaitable: Awaitable) -> asyncio.Task:
        return self._background.spawn(awaitable)

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, message: Any) -> None:
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise TransportError("not connected", peer=self.url, step="send")
        try:
            await ws.send(encode(message))
        except ConnectionClosed as exc:
            raise TransportError(f"connection lost: {exc}", peer=self.url, step="send") from exc

    async def set(
        self,
        address: str,
        value: Any,
        *,
        lock: bool = False,
        unlock: bool = False,
        revision: int | None = None,
        ttl: Ttl | int | None = None,
        wait: bool = True,
        timeout: float = 5.0,
    ) -> int | None:
        """Write a param. With ``wait`` (default) return the new revision from the ACK and raise
        ``ProtocolError`` if the relay rejects the write (ERROR 400: revision conflict, lock held)."""
        validate_address(address)
        message = Set(address=address, value=value, revision=revision, lock=lock, unlock=unlock, ttl=_ttl(ttl))
        waiters = self._set_waiters.setdefault(address, deque())
        future = asyncio.get_running_loop().create_future() if wait else None
        waiters.append(future)
        try:
            await self._send(message)
        except BaseException:
            waiters.remove(future)
            raise
        self._cache[address] = value
        if future is None:
            return None
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ClaspTimeoutError(f"no ACK for SET {address} within {timeout} s", address) from None

    async def get(self, address: str, timeout: float = 5.0) -> Any:
        """Read a param from the relay; ``ClaspTimeoutError`` if it has no value for ``address``."""
        validate_address(address)
        future = asyncio.get_running_loop().create_future()
        self._get_waiters.setdefault(address, []).append(future)
        try:
            await self._send(Get(address=address))
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ClaspTimeoutError(
                f"GET {address}: no value within {timeout} s (the relay answers nothing for an "
                "address that holds no value)", address) from None
        finally:
            waiters = self._get_waiters.get(address)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._get_waiters[address]

    async def emit(self, address: str, value: Any = MISSING) -> None:
        """Publish an event (no state is stored)."""
        validate_address(address)
        await self._send(Publish(address=address, signal="event", value=value))

    async def stream(self, address: str, samples_or_value: Any, rate: int | None = None) -> None:
        """Publish a stream: a sequence (or numpy array) of floats goes as samples, anything else as a value."""
        validate_address(address)
        if isinstance(samples_or_value, (list, tuple)) or hasattr(samples_or_value, "dtype"):
            message = Publish(address=address, signal="stream", samples=samples_or_value, rate=rate)
        else:
            message = Publish(address=address, signal="stream", value=samples_or_value, rate=rate)
        await self._send(message)

    async def gesture(self, address: str, id: int, phase: str, value: Any = MISSING) -> None:
        """Publish one gesture phase (``start``, ``move``, ``end``, ``cancel``)."""
        validate_address(address)
        await self._send(Publish(address=address, signal="gesture", id=id, phase=phase, value=value))

    async def publish(self, message: Publish) -> None:
        """Send a ready-made PUBLISH."""
        validate_address(message.address)
        await self._send(message)

    async def bundle(self, messages: list, *, timestamp: int | None = None, wait: bool = True,
                     timeout: float = 5.0) -> int | None:
        """Send SETs and PUBLISHes atomically; return the revision of the last applied SET."""
        messages = list(messages)
        for message in messages:
            if isinstance(message, (Set, Publish)):
                validate_address(message.address)
        future = asyncio.get_running_loop().create_future()
        self._ack_waiters.append(future)
        try:
            await self._send(Bundle(messages=list(messages), timestamp=timestamp))
        except BaseException:
            self._ack_waiters.remove(future)
            raise
        if not wait:
            return None
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ClaspTimeoutError(f"no ACK for BUNDLE within {timeout} s") from None
        finally:
            if future in self._ack_waiters:
                self._ack_waiters.remove(future)

    async def announce(self, namespace: str, signals: list, timeout: float = 5.0) -> None:
        """Register signal descriptions (``SignalInfo``) with the relay."""
        waiters = self._set_waiters.setdefault(namespace, deque())
        future = asyncio.get_running_loop().create_future()
        waiters.append(future)
        await self._send(Announce(namespace=namespace, signals=signals))
        await asyncio.wait_for(future, timeout)

    async def query(self, pattern: str, timeout: float = 5.0) -> list:
        """Ask the relay for announced signals matching ``pattern`` (a list of ``SignalInfo``)."""
        future = asyncio.get_running_loop().create_future()
        self._result_waiters.append(future)
        await self._send(Query(pattern=pattern))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ClaspTimeoutError(f"no RESULT for QUERY {pattern} within {timeout} s", pattern) from None
        finally:
            if future in self._result_waiters:
                self._result_waiters.remove(future)

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip to the relay in seconds (PING/PONG)."""
        future = asyncio.get_running_loop().create_future()
        self._pong_waiters.append(future)
        start = _time.perf_counter()
        await self._send(Ping())
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ClaspTimeoutError(f"no PONG within {timeout} s") from None
        finally:
            if future in self._pong_waiters:
                self._pong_waiters.remove(future)
        return _time.perf_counter() - start

    async def sync_clock(self, timeout: float = 5.0) -> int:
        """Refine ``time()`` with a SYNC round trip; return the new offset in µs."""
        t1 = _now_us()
        future = asyncio.get_running_loop().create_future()
        self._sync_waiters[t1] = future
        try:
            await self._send(Sync(t1=t1))
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._sync_waiters.pop(t1, None)
        t4 = _now_us()
        t2 = reply.t2 if reply.t2 is not None else t4
        t3 = reply.t3 if reply.t3 is not None else t2
        self._clock_offset = ((t2 - t1) + (t3 - t4)) // 2
        return self._clock_offset

    def time(self) -> int:
        """The relay's clock now, in µs since the epoch (from WELCOME, refined by ``sync_clock``)."""
        return _now_us() + self._clock_offset

    def cached(self, address: str) -> Any:
        """The last value seen for ``address`` (own SETs, echoes, snapshots), or None."""
        return self._cache.get(address)

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, pattern: str, callback: Callable, types: Iterable[str] | None = None) -> int:
        """Call ``callback(value, address)`` (or ``(value, address, message)``) for every SET echo,
        PUBLISH and snapshot param matching ``pattern``; return the subscription id."""
        sub = self._callbacks.add(pattern, callback, types)
        if self.connected:
            await self._send(Subscribe(id=sub.id, pattern=pattern, types=sorted(sub.types or ())))
        return sub.id

    async def unsubscribe(self, subscription_id: int) -> None:
        """Remove a subscription made with ``subscribe``."""
        if self._callbacks.remove(subscription_id) is None:
            return
        if self.connected:
            await self._send(Unsubscribe(id=subscription_id))

    def on(self, pattern: str, types: Iterable[str] | None = None) -> Callable[[Callable], Callable]:
        """Decorator form of ``subscribe`` (the SUBSCRIBE is sent in the background)."""
        def decorator(callback: Callable) -> Callable:
            self._spawn(self.subscribe(pattern, callback, types))
            return callback
        return decorator

    def _dispatch(self, address: str, value: Any, signal: str, message: Any) -> None:
        self._callbacks.dispatch(address, value, signal, message)

    # -- receiving --------------------------------------------------------------------------

    async def _receive_loop(self, ws) -> None:
        reason = None
        try:
            async for data in ws:
                if type(data) is not bytes:
                    self._report(ProtocolError("text WebSocket message from the relay ignored"))
                    continue
                try:
                    message = decode(data)
                except DecodeError as exc:
                    self._report(exc)
                    continue
                try:
                    self._handle(message)
                except Exception as exc:  # never let one message end the loop
                    self._report(exc)
        except ConnectionClosed as exc:
            reason = str(exc)
        if ws.close_code is not None and reason is None:
            reason = f"closed with code {ws.close_code}"
        self._connected.clear()
        self._fail_pending(TransportError(f"connection lost: {reason}", peer=self.url, step="receive"))
        if self._closing:
            return
        self._notify(self._on_disconnect, reason)
        if self.reconnect:
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = self.reconnect_initial_delay
        attempt = 0
        while not self._closing:
            attempt += 1
            if self.reconnect_max_attempts is not None and attempt > self.reconnect_max_attempts:
                self._report(TransportError(f"gave up after {attempt - 1} reconnect attempts",
                                            peer=self.url, step="reconnect"))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)
            try:
                await self._handshake()
            except ProtocolError as exc:
                if exc.code is not None and 300 <= exc.code < 400:
                    # The relay refused the token (300/302): retrying cannot help.
                    self._report(exc)
                    return
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            except TransportError as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            if self._closing:
                await self._ws.close()
                return
            try:
                for sub in self._callbacks:
                    await self._send(Subscribe(id=sub.id, pattern=sub.pattern, types=sorted(sub.types or ())))
            except TransportError:
                continue
            self._receiver = asyncio.get_running_loop().create_task(self._receive_loop(self._ws))
            self._notify(self._on_connect)
            return

    def _fail_pending(self, exc: Exception) -> None:
        futures: list[asyncio.Future] = []
        for waiters in self._set_waiters.values():
            futures.extend(f for f in waiters if f is not None)
        self._set_waiters.clear()
        for waiters in self._get_waiters.values():
            futures.extend(waiters)
        self._get_waiters.clear()
        futures.extend(self._ack_waiters)
        self._ack_waiters.clear()
        futures.extend(self._result_waiters)
        self._result_waiters.clear()
        futures.extend(self._pong_waiters)
        self._pong_waiters.clear()
        futures.extend(self._sync_waiters.values())
        futures.extend(self._error_watch.values())
        for future in futures:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: nobody may be waiting any more

    def _handle(self, message: Any, routed: bool = True) -> None:
        """Handle one message from the relay; ``routed`` is False for the parts of a BUNDLE."""
        kind = type(message)
        if kind is Publish:
            address = message.address
            # A P2P signal is only what the relay routes to this session: a PUBLISH of its own,
            # never one carried inside a BUNDLE (a reference router fans those out unchecked).
            if routed and address.startswith(SIGNAL_PREFIX) and address[len(SIGNAL_PREFIX):] == self.session_id:
                self._signaling._deliver(message.value, self._report)
            value = message.samples if message.samples is not None else message.value
            self._dispatch(address, value, message.signal or "event", message)
        elif kind is Set:
            self._cache[message.address] = message.value
            self._dispatch(message.address, message.value, "param", message)
        elif kind is Ack:
            self._on_ack(message)
        elif kind is Snapshot:
            for param in message.params:
                self._cache[param.address] = param.value
                waiters = self._get_waiters.pop(param.address, None)
                if waiters:
                    for future in waiters:
                        if not future.done():
                            future.set_result(param.value)
                self._dispatch(param.address, param.value, "param", param)
        elif kind is Error:
            self._on_error_message(message)
        elif kind is Pong:
            while self._pong_waiters:
                future = self._pong_waiters.popleft()
                if not future.done():
                    future.set_result(None)
                    break
        elif kind is Ping:
            self._spawn(self._send(Pong()))
        elif kind is Sync:
            future = self._sync_waiters.get(message.t1)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind is Result:
            if self._result_waiters:
                future = self._result_waiters.popleft()
                if not future.done():
                    future.set_result(list(message.signals))
        elif kind is Bundle:
            for inner in message.messages:
                self._handle(inner, routed=False)
        elif kind is Welcome:
            self.session_id = message.session
        # ANNOUNCE, HELLO, SUBSCRIBE, ... from a relay carry nothing for a client: ignored.

    def _next_set_waiter(self, address: str) -> asyncio.Future | None:
        """The oldest SET to ``address`` still waiting for its ACK or ERROR, taken off the queue."""
        waiters = self._set_waiters.get(address)
        if not waiters:
            return None
        future = waiters.popleft()
        if not waiters:
            del self._set_waiters[address]
        return future if future is not None and not future.done() else None

    def _on_ack(self, message: Ack) -> None:
        address = message.address
        if address is not None:
            future = self._next_set_waiter(address)
            if future is not None:
                future.set_result(message.revision)
            return
        while self._ack_waiters:
            future = self._ack_waiters.popleft()
            if not future.done():
                future.set_result(message.revision)
                return

    def _on_error_message(self, message: Error) -> None:
        address = message.address
        exc = ProtocolError(message.message, message.code, address)
        if address is not None:
            watch = self._error_watch.get(address)
            if watch is not None and not watch.done():
                watch.set_exception(exc)
                return
            if message.code in (400, 301, 402, 403, 409, 429, 507):  # a refused SET or ANNOUNCE
                future = self._next_set_waiter(address)
                if future is not None:
                    future.set_exception(exc)
                    return
            getters = self._get_waiters.pop(address, None)
            if getters and message.code == 301:
                for future in getters:
                    if not future.done():
                        future.set_exception(exc)
                return
            if getters:
                self._get_waiters[address] = getters
        elif message.code == 403 and self._ack_waiters:
            future = self._ack_waiters.popleft()
            if not future.done():
                future.set_exception(exc)
                return
        self._report(exc)

    # -- signaling --------------------------------------------------------------------------

    @property
    def signaling(self) -> "RelaySignaling":
        """The P2P signaling channel through this relay (``clasp_fast.signaling.SignalingChannel``)."""
        return self._signaling

    def signaling_channel(self) -> "RelaySignaling":
        return self.signaling

    async def _send_checked(self, message: Publish, timeout: float) -> None:
        """Send ``message`` and wait until the relay has processed it, raising its ERROR if any."""
        address = message.address
        watch = asyncio.get_running_loop().create_future()
        self._error_watch[address] = watch
        try:
            await self._send(message)
            # The relay handles a connection's messages in order: once the PONG is back,
            # any ERROR caused by the PUBLISH has arrived before it.
            pong = asyncio.ensure_future(self.ping(timeout))
            done, _ = await asyncio.wait({watch, pong}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                pong.cancel()
                watch.result()
            else:
                pong.result()
        finally:
            if self._error_watch.get(address) is watch:
                del self._error_watch[address]


class RelaySignaling:
    """P2P signals through a relay: PUBLISH to ``/clasp/p2p/signal/{target}`` (WIRE.md §10.2)."""

    max_pending = 1024  # unread signals kept; beyond this new ones are dropped and reported

    def __init__(self, client: ClaspClient, timeout: float = 5.0) -> None:
        self._client = client
        self._queue: asyncio.Queue[dict[str, object]] = asyncio.Queue(self.max_pending)
        self._callbacks: list[Callable[[dict[str, object]], Any]] = []
        self.timeout = timeout

    @property
    def session_id(self) -> str:
        return self._client.session_id or ""

    async def send_signal(self, target: str, signal: dict[str, object]) -> None:
        """Send ``signal`` (a WIRE.md §10.3 map) to session ``target``; ``from`` is filled in.

        Raises ``SignalingError`` when the relay does not know ``target`` (ERROR 404) or refuses it.
        """
        address = signal_address(target)
        message = Publish(address=address, signal="event", value={**signal, "from": self.session_id})
        try:
            await self._client._send_checked(message, self.timeout)
        except ProtocolError as exc:
            raise SignalingError(f"relay refused the signal: {exc}", peer=target, step="signal") from exc
        except TransportError as exc:
            raise SignalingError(f"cannot send the signal: {exc.reason}", peer=target, step="signal") from exc

    async def recv_signal(self) -> dict[str, object]:
        """The next signal addressed to this session."""
        return await self._queue.get()

    def on_signal(self, callback: Callable[[dict[str, object]], Any]) -> Callable[[dict[str, object]], Any]:
        """Also call ``callback(signal)`` for every signal received; usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def __aiter__(self) -> AsyncIterator[dict[str, object]]:
        return self

    async def __anext__(self) -> dict[str, object]:
        return await self._queue.get()

    def _deliver(self, value: Any, report: Callable[[Exception], None]) -> None:
        signal = parse_signal(value)
        if signal is None:
            report(SignalingError(f"unparseable signal ignored: {value!r}"[:200], step="signal"))
            return
        try:
            self._queue.put_nowait(signal)
        except asyncio.QueueFull:
            report(SignalingError("too many unread signals: one dropped", peer=str(signal.get("from")),
                                  step="signal"))
        for callback in self._callbacks:
            try:
                result = callback(signal)
                if inspect.isawaitable(result):
                    self._client._spawn(result)
            except Exception as exc:
                report(exc)


class ClaspBuilder:
    """Fluent construction: ``await ClaspBuilder(url).name("x").features([...]).connect()``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._options: dict[str, Any] = {}

    def name(self, name: str) -> "ClaspBuilder":
        self._options["name"] = name
        return self

    def token(self, token: str) -> "ClaspBuilder":
        self._options["token"] = token
        return self

    def features(self, features: Iterable[str]) -> "ClaspBuilder":
        self._options["features"] = list(features)
        return self

    def reconnect(self, enabled: bool = True, *, max_delay: float | None = None,
                  max_attempts: int | None = None) -> "ClaspBuilder":
        self._options["reconnect"] = enabled
        if max_delay is not None:
            self._options["reconnect_max_delay"] = max_delay
        if max_attempts is not None:
            self._options["reconnect_max_attempts"] = max_attempts
        return self

    def connect_timeout(self, seconds: float) -> "ClaspBuilder":
        self._options["connect_timeout"] = seconds
        return self

    def with_p2p(self, enabled: bool = True, *, rtc_config: Any = None, prefer_p2p: bool = True,
                 fallback_to_router: bool = True, **options: Any) -> "ClaspBuilder":
        """Add direct P2P links: ``connect()`` then returns a ``clasp_fast.hybrid.HybridClient``.

        ``options`` are further ``clasp_fast.hybrid.P2POptions`` fields (``client_id``,
        ``retry_interval``, ``connect_timeout``, ``presence_interval``, ``accept``).
        """
        from .hybrid.routing import P2POptions

        self._p2p = P2POptions(enabled=enabled, rtc_config=rtc_config, prefer_p2p=prefer_p2p,
                               fallback_to_router=fallback_to_router, **options)
        return self

    def build(self) -> ClaspClient:
        """The client, not yet connected."""
        return ClaspClient(self._url, **self._options)

    async def connect(self) -> Any:
        """Build and connect: a ``ClaspClient``, or a ``HybridClient`` when ``with_p2p`` enabled P2P."""
        client = self.build()
        p2p = getattr(self, "_p2p", None)
        if p2p is not None and p2p.enabled:
            from .hybrid.routing import HybridClient

            return await HybridClient(client, p2p).open()
        await client.open()
        return client

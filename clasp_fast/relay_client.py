"""``ClaspClient``: a CLASP client for a relay (the embedded one or the reference router).

::

    client = await ClaspClient.connect("ws://127.0.0.1:7330", name="mixer")

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

The documented import path is :mod:`clasp_fast.client`, which adds :class:`ClaspBuilder`; this
module sits below P2P and the hybrid client, which build on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from .errors import ClaspError, DecodeError, ProtocolError, TransportError, URLError
from .runtime.dispatch import CallbackSubscription, Dispatcher, make_dispatcher
from .runtime.sink import ErrorCallback, ErrorSink
from .runtime.tasks import TaskSet
from .runtime.waiters import Waiters
from .transport.signaling import RelaySignaling
from .wire.address import validate_address
from .wire.codec import decode, encode
from .wire.messages import (
    DEFAULT_FEATURES,
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
    SignalInfo,
    Subscribe,
    Sync,
    Ttl,
    Unsubscribe,
    Welcome,
    delivered,
    stream_message,
)
from .wire.protocol import SIGNAL_PREFIX, WS_SUBPROTOCOL, now_us

__all__ = ["ClaspClient", "ClaspTimeoutError", "MessageHook", "validate_url"]

log = logging.getLogger("clasp_fast.client")

#: ``hook(message)`` sees each SET, PUBLISH and SNAPSHOT param from the relay before the callbacks:
#: it returns the message to deliver (the same or another one) or None to drop it.
MessageHook = Callable[[Any], Any]

# ERROR codes that refuse a SET or an ANNOUNCE (the oldest one waiting for its ACK at that address).
_REFUSING_WRITES = frozenset((400, 301, 402, 403, 409, 429, 507))


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


def _ttl(ttl: Ttl | int | float | None) -> Ttl | None:
    if ttl is None or isinstance(ttl, Ttl):
        return ttl
    return Ttl.sliding(int(ttl))  # a number of seconds: expires that long after the last write


async def _answer(future: asyncio.Future[Any], timeout: float, late: Callable[[], ClaspError]) -> Any:
    """The answer of a waiting request, or ``late()`` raised when none came within ``timeout``."""
    try:
        return await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        raise late() from None


class ClaspClient:
    """A connection to a CLASP relay with subscriptions, state cache and request tracking.

    It owns one error sink (``errors``: its ``on_error`` callbacks) and one dispatcher
    (``dispatcher``: its subscriptions' callbacks); a hybrid client built on it uses the same two.
    """

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
        self.errors = ErrorSink(log)
        self.tasks = TaskSet(self.errors.report)
        self.dispatcher: Dispatcher = make_dispatcher(self.tasks.spawn, self.errors.report, 1024)
        self._ws: ClientConnection | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._closing = False
        self.reconnects = 0  # successful reconnections to the relay
        self._connected = asyncio.Event()
        self._clock_offset = 0  # server µs minus local µs
        self._cache: dict[str, Any] = {}
        self._requests = Waiters()
        self._on_relay: set[int] = set()  # ids of the dispatcher's subscriptions the relay has
        self._hook: MessageHook | None = None
        self._on_connect: list[Callable[[], Any]] = []
        self._on_disconnect: list[Callable[[str | None], Any]] = []
        # Created up front so that no signal arriving before first use is lost.
        self._signaling = RelaySignaling(self, self.tasks, self.errors)

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
        ws = await self._handshake()
        self._receiver = asyncio.get_running_loop().create_task(self._receive_loop(ws))
        self.tasks.notify(self._on_connect)

    async def _handshake(self) -> ClientConnection:
        try:
            ws = await asyncio.wait_for(
                ws_connect(self.url, subprotocols=[Subprotocol(WS_SUBPROTOCOL)], max_size=None, compression=None,
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
                if type(data) is not bytes:
                    raise ProtocolError("the relay sent a text WebSocket message during the handshake")
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
        self._clock_offset = message.time - now_us()
        self._connected.set()
        # The SNAPSHOT that follows WELCOME is handled by the receive loop.
        return ws

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
        self.tasks.cancel()
        self._requests.fail_all(TransportError("client closed", peer=self.url, step="close"))

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

    def on_error(self, callback: ErrorCallback) -> ErrorCallback:
        """Register ``callback(exc)`` for errors nobody awaits (bad frames, unclaimed ERRORs)."""
        return self.errors.add(callback)

    def set_message_hook(self, hook: MessageHook | None) -> None:
        """See each SET, PUBLISH and SNAPSHOT param from the relay first (:data:`MessageHook`)."""
        self._hook = hook

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, message: Any) -> None:
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise TransportError("not connected", peer=self.url, step="send")
        try:
            await ws.send(encode(message))
        except ConnectionClosed as exc:
            raise TransportError(f"connection lost: {exc}", peer=self.url, step="send") from exc

    async def _send_waiting(self, key: Any, message: Any, wait: bool = True) -> asyncio.Future[Any] | None:
        """Queue a request under ``key`` and send ``message``; the request leaves if the send fails."""
        future = self._requests.add(key, wait)
        try:
            await self._send(message)
        except BaseException:
            self._requests.discard(key, future)
            raise
        return future

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
        # Answers to a SET come in order per address; a SET not waited for still takes its place.
        ack = await self._send_waiting(("ack", address), message, wait)
        self._cache[address] = value
        if ack is None:
            return None
        applied: int | None = await _answer(ack, timeout, lambda: ClaspTimeoutError(
            f"no ACK for SET {address} within {timeout} s", address))
        return applied

    async def get(self, address: str, timeout: float = 5.0) -> Any:
        """Read a param from the relay; ``ClaspTimeoutError`` if it has no value for ``address``."""
        validate_address(address)
        with self._requests.request(("get", address)) as answer:
            await self._send(Get(address=address))
            return await _answer(answer, timeout, lambda: ClaspTimeoutError(
                f"GET {address}: no value within {timeout} s (the relay answers nothing for an "
                "address that holds no value)", address))

    async def emit(self, address: str, value: Any = MISSING) -> None:
        """Publish an event (no state is stored)."""
        validate_address(address)
        await self._send(Publish(address=address, signal="event", value=value))

    async def stream(self, address: str, samples_or_value: Any, rate: int | None = None) -> None:
        """Publish a stream: a sequence (or numpy array) of floats goes as samples, anything else as a value."""
        validate_address(address)
        await self._send(stream_message(address, samples_or_value, rate))

    async def gesture(self, address: str, id: int, phase: str, value: Any = MISSING) -> None:
        """Publish one gesture phase (``start``, ``move``, ``end``, ``cancel``)."""
        validate_address(address)
        await self._send(Publish(address=address, signal="gesture", id=id, phase=phase, value=value))

    async def publish(self, message: Publish) -> None:
        """Send a ready-made PUBLISH."""
        validate_address(message.address)
        await self._send(message)

    async def bundle(self, messages: list[Any], *, timestamp: int | None = None, wait: bool = True,
                     timeout: float = 5.0) -> int | None:
        """Send SETs and PUBLISHes atomically; return the revision of the last applied SET."""
        messages = list(messages)
        for message in messages:
            if isinstance(message, (Set, Publish)):
                validate_address(message.address)
        ack = await self._send_waiting("bundle", Bundle(messages=messages, timestamp=timestamp), wait)
        if ack is None:
            return None
        try:
            revision: int | None = await _answer(ack, timeout, lambda: ClaspTimeoutError(
                f"no ACK for BUNDLE within {timeout} s"))
            return revision
        finally:
            self._requests.discard("bundle", ack)

    async def announce(self, namespace: str, signals: list[SignalInfo], timeout: float = 5.0) -> None:
        """Register signal descriptions (``SignalInfo``) with the relay."""
        ack = await self._send_waiting(("ack", namespace), Announce(namespace=namespace, signals=signals))
        assert ack is not None
        await asyncio.wait_for(ack, timeout)

    async def query(self, pattern: str, timeout: float = 5.0) -> list[SignalInfo]:
        """Ask the relay for announced signals matching ``pattern`` (a list of ``SignalInfo``)."""
        with self._requests.request("query") as result:
            await self._send(Query(pattern=pattern))
            signals: list[SignalInfo] = await _answer(result, timeout, lambda: ClaspTimeoutError(
                f"no RESULT for QUERY {pattern} within {timeout} s", pattern))
            return signals

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip to the relay in seconds (PING/PONG)."""
        with self._requests.request("ping") as pong:
            start = time.perf_counter()
            await self._send(Ping())
            await _answer(pong, timeout, lambda: ClaspTimeoutError(f"no PONG within {timeout} s"))
        return time.perf_counter() - start

    async def sync_clock(self, timeout: float = 5.0) -> int:
        """Refine ``time()`` with a SYNC round trip; return the new offset in µs."""
        t1 = now_us()
        with self._requests.request(("sync", t1)) as answer:
            await self._send(Sync(t1=t1))
            reply = await asyncio.wait_for(answer, timeout)
        t4 = now_us()
        t2 = reply.t2 if reply.t2 is not None else t4
        t3 = reply.t3 if reply.t3 is not None else t2
        self._clock_offset = ((t2 - t1) + (t3 - t4)) // 2
        return self._clock_offset

    def time(self) -> int:
        """The relay's clock now, in µs since the epoch (from WELCOME, refined by ``sync_clock``)."""
        return now_us() + self._clock_offset

    def cached(self, address: str) -> Any:
        """The last value seen for ``address`` (own SETs, echoes, snapshots), or None."""
        return self._cache.get(address)

    async def send_checked(self, message: Publish, timeout: float) -> None:
        """Send ``message`` and wait until the relay has handled it, raising its ERROR if any."""
        address = message.address
        with self._requests.request(("refusal", address)) as refusal:
            await self._send(message)
            # The relay handles a connection's messages in order: once the PONG is back,
            # any ERROR caused by the PUBLISH has arrived before it.
            pong = asyncio.ensure_future(self.ping(timeout))
            done, _ = await asyncio.wait({refusal, pong}, return_when=asyncio.FIRST_COMPLETED)
            if refusal in done:
                pong.cancel()
                refusal.result()
            else:
                pong.result()

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, pattern: str, callback: Callable[..., Any], types: Iterable[str] | None = None) -> int:
        """Call ``callback(value, address)`` (or ``(value, address, message)``) for every SET echo,
        PUBLISH and snapshot param matching ``pattern``; return the subscription id."""
        sub = self.dispatcher.add(pattern, callback, types)
        await self.send_subscribe(sub)
        return sub.id

    async def send_subscribe(self, sub: CallbackSubscription) -> None:
        """Have the relay send what matches ``sub``, a subscription of ``dispatcher`` (also after
        every reconnect). :meth:`subscribe` does this for the subscriptions it adds."""
        self._on_relay.add(sub.id)
        if self.connected:
            await self._send(Subscribe(id=sub.id, pattern=sub.pattern, types=sorted(sub.types or ())))

    async def unsubscribe(self, subscription_id: int) -> None:
        """Remove a subscription made with ``subscribe`` (or added to ``dispatcher``)."""
        if self.dispatcher.remove(subscription_id) is None:
            return
        if subscription_id in self._on_relay:
            self._on_relay.discard(subscription_id)
            if self.connected:
                await self._send(Unsubscribe(id=subscription_id))

    def on(self, pattern: str,
           types: Iterable[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of ``subscribe`` (the SUBSCRIBE is sent in the background)."""
        def decorator(callback: Callable[..., Any]) -> Callable[..., Any]:
            self.tasks.spawn(self.subscribe(pattern, callback, types))
            return callback
        return decorator

    # -- signaling --------------------------------------------------------------------------

    @property
    def signaling(self) -> RelaySignaling:
        """The P2P signaling channel through this relay (``clasp_fast.signaling.SignalingChannel``)."""
        return self._signaling

    # -- receiving --------------------------------------------------------------------------

    async def _receive_loop(self, ws: ClientConnection) -> None:
        reason = None
        try:
            async for data in ws:
                if type(data) is not bytes:
                    self.errors.report(ProtocolError("text WebSocket message from the relay ignored"))
                    continue
                try:
                    message = decode(data)
                except DecodeError as exc:
                    self.errors.report(exc)
                    continue
                try:
                    self._handle(message)
                except Exception as exc:  # never let one message end the loop
                    self.errors.report(exc)
        except ConnectionClosed as exc:
            reason = str(exc)
        if ws.close_code is not None and reason is None:
            reason = f"closed with code {ws.close_code}"
        self._connected.clear()
        self._requests.fail_all(TransportError(f"connection lost: {reason}", peer=self.url, step="receive"))
        if self._closing:
            return
        self.tasks.notify(self._on_disconnect, reason)
        if self.reconnect:
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = self.reconnect_initial_delay
        attempt = 0
        while not self._closing:
            attempt += 1
            if self.reconnect_max_attempts is not None and attempt > self.reconnect_max_attempts:
                self.errors.report(TransportError(f"gave up after {attempt - 1} reconnect attempts",
                                                  peer=self.url, step="reconnect"))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)
            try:
                ws = await self._handshake()
            except ProtocolError as exc:
                if exc.code is not None and 300 <= exc.code < 400:
                    # The relay refused the token (300/302): retrying cannot help.
                    self.errors.report(exc)
                    return
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            except TransportError as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            if self._closing:
                await ws.close()
                return
            try:
                for sub in self.dispatcher:
                    if sub.id in self._on_relay:
                        await self._send(Subscribe(id=sub.id, pattern=sub.pattern, types=sorted(sub.types or ())))
            except TransportError:
                continue
            self._receiver = asyncio.get_running_loop().create_task(self._receive_loop(ws))
            self.reconnects += 1
            self.tasks.notify(self._on_connect)
            return

    def _handle(self, message: Any, routed: bool = True) -> None:
        """Handle one message from the relay; ``routed`` is False for the parts of a BUNDLE."""
        kind = type(message)
        if kind is Publish:
            address = message.address
            # A P2P signal is only what the relay routes to this session: a PUBLISH of its own,
            # never one carried inside a BUNDLE (a reference router fans those out unchecked).
            if routed and address.startswith(SIGNAL_PREFIX) and address[len(SIGNAL_PREFIX):] == self.session_id:
                self._signaling.deliver(message.value)
            self._deliver(message)
        elif kind is Set:
            self._cache[message.address] = message.value
            self._deliver(message)
        elif kind is Ack:
            address = message.address
            self._requests.resolve("bundle" if address is None else ("ack", address), message.revision)
        elif kind is Snapshot:
            for param in message.params:
                self._cache[param.address] = param.value
                for future in self._requests.take_all(("get", param.address)):
                    future.set_result(param.value)
                self._deliver(param)
        elif kind is Error:
            self._on_error_message(message)
        elif kind is Pong:
            self._requests.resolve("ping", None)
        elif kind is Ping:
            self.tasks.spawn(self._send(Pong()))
        elif kind is Sync:
            self._requests.resolve(("sync", message.t1), message)
        elif kind is Result:
            self._requests.resolve("query", list(message.signals))
        elif kind is Bundle:
            for inner in message.messages:
                self._handle(inner, routed=False)
        elif kind is Welcome:
            self.session_id = message.session
        # ANNOUNCE, HELLO, SUBSCRIBE, ... from a relay carry nothing for a client: ignored.

    def _deliver(self, message: Any) -> None:
        """Hand a SET, PUBLISH or snapshot Param to the message hook, then to the callbacks."""
        if self._hook is not None:
            message = self._hook(message)
            if message is None:
                return
        value, signal = delivered(message)
        self.dispatcher.dispatch(message.address, value, signal, message)

    def _on_error_message(self, message: Error) -> None:
        """An ERROR fails the request it answers; one that answers none is reported."""
        address = message.address
        error = ProtocolError(message.message, message.code, address)
        requests = self._requests
        if address is not None:
            refusal = requests.take(("refusal", address))
            if refusal is not None:
                refusal.set_exception(error)
                return
            if message.code in _REFUSING_WRITES and requests.waiting(("ack", address)):
                write = requests.take(("ack", address))  # its place is used up even if nobody waits
                if write is not None:
                    write.set_exception(error)
                    return
            if message.code == 301 and requests.waiting(("get", address)):
                for future in requests.take_all(("get", address)):
                    future.set_exception(error)
                return
        elif message.code == 403 and requests.waiting("bundle"):
            bundle = requests.take("bundle")
            if bundle is not None:
                bundle.set_exception(error)
                return
        self.errors.report(error)

"""The embedded relay over real loopback sockets: handshake, limits, bad input, shutdown."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clasp_fast.codec import decode, encode
from clasp_fast.messages import (
    Ack,
    Error,
    Hello,
    Ping,
    Pong,
    Publish,
    Set,
    Snapshot,
    Subscribe,
    Welcome,
)
from clasp_fast.relay import Relay


async def raw_session(url: str, name: str = "raw"):
    """A bare WebSocket that has done the CLASP handshake; returns (ws, session id)."""
    ws = await connect(url, subprotocols=["clasp"])
    await ws.send(encode(Hello(name=name)))
    welcome = decode(await ws.recv())
    assert isinstance(welcome, Welcome)
    assert isinstance(decode(await ws.recv()), Snapshot)
    return ws, welcome.session


async def recv_message(ws, timeout: float = 2.0):
    return decode(await asyncio.wait_for(ws.recv(), timeout))


async def assert_nothing_queued(ws) -> None:
    """The sentinel: a PING's PONG is the next frame, so nothing was queued for ``ws`` before it."""
    await ws.send(encode(Ping()))
    assert isinstance(await recv_message(ws), Pong)


async def test_start_on_ephemeral_port_and_url(relay):
    assert relay.port > 0
    assert relay.url == f"ws://127.0.0.1:{relay.port}"


async def test_subprotocol_echoed_and_optional(relay):
    async with connect(relay.url, subprotocols=["clasp"]) as ws:
        assert ws.subprotocol == "clasp"
    async with connect(relay.url) as ws:  # a client offering nothing is still accepted
        assert ws.subprotocol is None
        await ws.send(encode(Hello(name="no-subprotocol")))
        assert isinstance(await recv_message(ws), Welcome)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "OPTIONS"])
async def test_plain_http_health_answer(relay, method):
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(f"{method} /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 2.0)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert response.endswith(b"ok\n")


async def test_first_message_must_be_hello(relay):
    async with connect(relay.url, subprotocols=["clasp"]) as ws:
        await ws.send(encode(Ping()))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 2.0)
        assert info.value.rcvd.code == 1002


async def test_handshake_timeout_closes():
    async with Relay(port=0, handshake_timeout=0.2) as relay:
        async with connect(relay.url, subprotocols=["clasp"]) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 2.0)


async def test_max_sessions_refuses_extra_connection():
    async with Relay(port=0, max_sessions=2) as relay:
        first, _ = await raw_session(relay.url)
        second, _ = await raw_session(relay.url)
        async with connect(relay.url, subprotocols=["clasp"]) as third:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(third.recv(), 2.0)
            assert info.value.rcvd.code == 1013
        await first.send(encode(Ping()))
        assert isinstance(await recv_message(first), Pong)
        await first.close()
        await second.close()


async def test_garbage_after_handshake_answers_error_and_keeps_connection(relay):
    ws, _ = await raw_session(relay.url)
    other, _ = await raw_session(relay.url, "bystander")
    await ws.send(b"\x00\x01garbage")
    error = await recv_message(ws)
    assert isinstance(error, Error) and error.code == 100
    assert "offset" in error.message
    # A frame with a good header but a truncated SET payload: ERROR 101 naming offset and field.
    frame = encode(Set(address="/a/b", value=1.5))
    broken = frame[:1] + bytes([frame[1]]) + (len(frame) - 4 - 3).to_bytes(2, "big") + frame[4:-3]
    await ws.send(broken)
    error = await recv_message(ws)
    assert isinstance(error, Error) and error.code == 101, error
    assert "offset" in error.message
    # An incomplete frame (declared length longer than the message): ERROR 100.
    await ws.send(frame[:-2])
    error = await recv_message(ws)
    assert isinstance(error, Error) and error.code == 100
    # Text message: ERROR 100, connection stays.
    await ws.send("hello")
    error = await recv_message(ws)
    assert isinstance(error, Error) and error.code == 100 and "text" in error.message
    await ws.send(encode(Ping()))
    assert isinstance(await recv_message(ws), Pong)
    await other.send(encode(Ping()))
    assert isinstance(await recv_message(other), Pong)
    await ws.close()
    await other.close()


async def test_oversized_message_closes_only_that_client(relay):
    ws, _ = await raw_session(relay.url)
    other, _ = await raw_session(relay.url, "bystander")
    await ws.send(b"S" + b"\x00" * 70_000)
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 2.0)
    assert info.value.rcvd.code == 1009
    await other.send(encode(Ping()))
    assert isinstance(await recv_message(other), Pong)
    await other.close()


async def test_subscription_limit_answers_429():
    async with Relay(port=0, max_subscriptions=3) as relay:
        ws, _ = await raw_session(relay.url)
        for i in range(3):
            await ws.send(encode(Subscribe(id=i, pattern=f"/s/{i}")))
        await assert_nothing_queued(ws)
        await ws.send(encode(Subscribe(id=99, pattern="/s/99")))
        error = await recv_message(ws)
        assert isinstance(error, Error) and error.code == 429 and error.address == "/s/99"
        # Re-using an id replaces that subscription and does not count against the limit.
        await ws.send(encode(Subscribe(id=0, pattern="/s/zero")))
        await assert_nothing_queued(ws)
        await ws.close()


async def test_rate_limit_answers_429_per_excess_message():
    async with Relay(port=0, rate_limit=20) as relay:
        ws, _ = await raw_session(relay.url)
        for _ in range(30):
            await ws.send(encode(Ping()))
        replies = [await recv_message(ws) for _ in range(30)]
        pongs = [r for r in replies if isinstance(r, Pong)]
        errors = [r for r in replies if isinstance(r, Error)]
        assert len(pongs) == 20
        assert len(errors) == 10 and all(e.code == 429 for e in errors)
        assert "20 messages/second" in errors[0].message
        await ws.close()


async def test_slow_consumer_drops_broadcasts_and_gets_503():
    async with Relay(port=0, queue_size=8) as relay:
        publisher, _ = await raw_session(relay.url, "publisher")
        slow, _ = await raw_session(relay.url, "slow")
        await slow.send(encode(Subscribe(id=1, pattern="/flood/**")))
        await slow.send(encode(Ping()))
        assert isinstance(await recv_message(slow), Pong)
        # Stop reading on the slow side: the TCP buffers fill, then the relay's queue.
        slow.transport.pause_reading()
        payload = "x" * 4000
        for _ in range(2000):
            await publisher.send(encode(Publish(address="/flood/a", signal="event", value=payload)))
        await publisher.send(encode(Ping()))
        assert isinstance(await recv_message(publisher, 10.0), Pong)  # routing never blocked
        session = next(s for s in relay.sessions.values() if s.name == "slow")
        assert session.dropped >= 100
        slow.transport.resume_reading()
        seen_503 = False
        for _ in range(3000):
            try:
                message = await recv_message(slow, 2.0)
            except asyncio.TimeoutError:
                break
            if isinstance(message, Error):
                assert message.code == 503 and "Buffer overflow" in message.message
                seen_503 = True
                break
        assert seen_503
        await publisher.close()
        await slow.close()


async def test_shutdown_closes_sessions_with_1001():
    relay = await Relay.start(host="127.0.0.1", port=0)
    ws, _ = await raw_session(relay.url)
    await relay.close()
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 2.0)
    assert info.value.rcvd.code == 1001
    assert not relay.sessions


async def test_disconnect_removes_session_and_subscriptions(relay):
    ws, session = await raw_session(relay.url)
    await ws.send(encode(Subscribe(id=1, pattern="/gone/**")))
    await ws.send(encode(Ping()))
    await recv_message(ws)
    assert session in relay.sessions
    await ws.close()
    for _ in range(100):
        if session not in relay.sessions:
            break
        await asyncio.sleep(0.01)
    assert session not in relay.sessions
    assert relay.router.subscribers("/gone/x", "event") == []


async def test_forged_signal_from_is_rejected(relay):
    a, a_id = await raw_session(relay.url, "a")
    b, b_id = await raw_session(relay.url, "b")
    c, c_id = await raw_session(relay.url, "c")
    forged = Publish(address=f"/clasp/p2p/signal/{b_id}", signal="event",
                     value={"type": "offer", "from": c_id, "sdp": "v=0\r\n", "correlation_id": "x"})
    await a.send(encode(forged))
    error = await recv_message(a)
    assert isinstance(error, Error) and error.code == 403 and error.address == forged.address
    assert c_id in error.message
    # The next signal from a is the sentinel: b's first frame must be it, not the forged one.
    honest = Publish(address=f"/clasp/p2p/signal/{b_id}", signal="event",
                     value={"type": "offer", "from": a_id, "sdp": "v=0\r\n", "correlation_id": "x"})
    await a.send(encode(honest))
    delivered = await recv_message(b)
    assert isinstance(delivered, Publish) and delivered.value["from"] == a_id
    for ws in (a, b, c):
        await ws.close()


async def test_ttl_sweep_removes_expired_params():
    async with Relay(port=0, ttl_sweep_interval=0.05) as relay:
        from clasp_fast.messages import Ttl

        ws, _ = await raw_session(relay.url)
        await ws.send(encode(Set(address="/t/short", value=1, ttl=Ttl.absolute(1))))
        await ws.send(encode(Set(address="/t/keep", value=2, ttl=Ttl.never())))
        await recv_message(ws)
        await recv_message(ws)
        assert "/t/short" in relay.router.store
        # The sweep removes it once its TTL passed; polled (bounded) rather than one fixed sleep.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "/t/short" in relay.router.store and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert "/t/short" not in relay.router.store
        assert "/t/keep" in relay.router.store
        await ws.close()


async def test_expired_params_are_not_served_before_the_sweep_runs():
    # The sweep would run only after an hour: GET, the subscribe SNAPSHOT and a newcomer's WELCOME
    # SNAPSHOT must check the expiry themselves.
    async with Relay(port=0, ttl_sweep_interval=3600) as relay:
        from clasp_fast.messages import Get, Ttl

        ws, _ = await raw_session(relay.url)
        await ws.send(encode(Set(address="/t/short", value=1, ttl=Ttl.absolute(1))))
        await ws.send(encode(Set(address="/t/keep", value=2, ttl=Ttl.never())))
        assert [type(await recv_message(ws)) for _ in range(2)] == [Ack, Ack]
        await ws.send(encode(Get(address="/t/short")))
        assert isinstance(await recv_message(ws), Snapshot)  # served while it lives
        await asyncio.sleep(1.1)  # the TTL runs out (the test waits for expiry, not for silence)
        await ws.send(encode(Get(address="/t/short")))
        await assert_nothing_queued(ws)  # no SNAPSHOT came before the PONG
        await ws.send(encode(Subscribe(id=1, pattern="/t/**")))
        snapshot = await recv_message(ws)
        assert [p.address for p in snapshot.params] == ["/t/keep"]
        late = await connect(relay.url, subprotocols=["clasp"])
        await late.send(encode(Hello(name="late")))
        assert isinstance(await recv_message(late), Welcome)
        assert [p.address for p in (await recv_message(late)).params] == ["/t/keep"]
        await late.close()
        await ws.close()


async def test_cli_relay_subcommand_serves_until_interrupted():
    import signal
    import sys

    from clasp_fast.client import ClaspClient

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clasp_fast", "relay", "--host", "127.0.0.1", "--port", "0",
        stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 15.0)).decode()
        assert line.startswith("clasp_fast relay listening on ws://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        async with await ClaspClient.connect(url, reconnect=False) as client:
            assert await client.set("/cli/x", 1) == 1
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10.0) in (0, 130)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

"""Flow control of the embedded relay (issue 14, items 3 and 8): streamed SNAPSHOTs, the bounded
store, frames too large to serve, and fair scheduling between senders."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from websockets.asyncio.client import connect

from clasp_fast.client import ClaspClient
from clasp_fast.codec import encode
from clasp_fast.errors import ProtocolError
from clasp_fast.messages import (
    Ack,
    Announce,
    Error,
    Get,
    Hello,
    Ping,
    Pong,
    Publish,
    Query,
    Result,
    Set,
    SignalInfo,
    Snapshot,
    Subscribe,
    Welcome,
)
from clasp_fast.relay import Relay

from .relay_wire import recv
from .relay_wire import session as open_session

BIG = "v" * 40_000  # one param per SNAPSHOT frame


async def session(url: str):
    """A bare WebSocket past WELCOME (the SNAPSHOT after it is left to the test)."""
    ws, session_id, _ = await open_session(url, snapshot=False)
    return ws, session_id


async def fill(url: str, count: int, prefix: str = "/big") -> None:
    async with await ClaspClient.connect(url, reconnect=False) as writer:
        for i in range(count):
            await writer.set(f"{prefix}/{i}", BIG, wait=False)
        await writer.set(f"{prefix}/last", 0)  # its ACK: every SET before it was applied


async def snapshot_params(ws) -> set[str]:
    """Read SNAPSHOT frames up to the PONG of a PING; return the addresses they carried."""
    await ws.send(encode(Ping()))
    seen: set[str] = set()
    while True:
        message = await recv(ws)
        if isinstance(message, Pong):
            return seen
        assert isinstance(message, Snapshot), message
        seen.update(p.address for p in message.params)


# -- item 3: snapshots are streamed --------------------------------------------------------------


async def test_welcome_snapshot_of_more_frames_than_the_queue_holds_reaches_new_clients():
    async with Relay(host="127.0.0.1", port=0, queue_size=16) as relay:
        await fill(relay.url, 100)  # 100 SNAPSHOT frames, over 2 x queue_size
        async with await ClaspClient.connect(relay.url, reconnect=False) as client:
            await client.ping()  # the snapshot is sent before the PONG
            assert all(client.cached(f"/big/{i}") == BIG for i in range(100))
        ws, _ = await session(relay.url)
        assert len(await snapshot_params(ws)) == 101
        await ws.close()


async def test_subscribe_snapshot_of_more_frames_than_the_queue_holds():
    async with Relay(host="127.0.0.1", port=0, queue_size=16) as relay:
        ws, _ = await session(relay.url)
        assert await snapshot_params(ws) == set()
        await fill(relay.url, 100)
        await ws.send(encode(Subscribe(id=1, pattern="/big/**")))
        assert len(await snapshot_params(ws)) == 101
        await ws.close()


async def test_a_client_reading_its_snapshot_slowly_is_not_closed():
    async with Relay(host="127.0.0.1", port=0, queue_size=16) as relay:
        await fill(relay.url, 300)  # 12 MB: more than the socket buffers hold
        ws = await connect(relay.url, subprotocols=["clasp"], max_size=None)
        ws.transport.pause_reading()
        tracemalloc.start()
        try:
            await ws.send(encode(Hello(name="slow")))
            await ws.send(encode(Ping()))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while not relay.sessions:
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the relay's writer waits on the full socket meanwhile
            grown = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert grown < 2_000_000  # the 12 MB snapshot is not built ahead of the socket
        ws.transport.resume_reading()
        assert isinstance(await recv(ws), Welcome)
        assert len(await snapshot_params(ws)) == 301  # everything, then the first PONG
        assert isinstance(await recv(ws), Pong)  # the second one
        await ws.close()


async def test_snapshot_never_shows_a_value_older_than_an_echo_before_it():
    async with Relay(host="127.0.0.1", port=0) as relay:
        writer, _ = await session(relay.url)
        await fill(relay.url, 50)
        reader, _ = await session(relay.url)
        await reader.send(encode(Subscribe(id=1, pattern="/big/**")))
        for i in range(50):  # rewrite every param while the reader's snapshot is on its way
            await writer.send(encode(Set(address=f"/big/{i}", value=i)))
        await writer.send(encode(Ping()))
        while not isinstance(await recv(writer), Pong):  # all 50 applied
            pass
        await reader.send(encode(Ping()))  # after the WELCOME and subscribe snapshots and the echoes
        last: dict[str, object] = {}
        while not isinstance(message := await recv(reader), Pong):
            if isinstance(message, Snapshot):
                last.update((p.address, p.value) for p in message.params)
            elif isinstance(message, Set):
                last[message.address] = message.value
        assert all(last[f"/big/{i}"] == i for i in range(50))  # the final state is the relay's
        await writer.close()
        await reader.close()


# -- item 3: the store is bounded ------------------------------------------------------------


async def test_stored_bytes_are_bounded_and_sets_beyond_get_507():
    async with Relay(host="127.0.0.1", port=0, max_store_bytes=150_000) as relay:
        async with await ClaspClient.connect(relay.url, reconnect=False) as client:
            for i in range(3):
                assert await client.set(f"/s/{i}", BIG) == 1
            with pytest.raises(ProtocolError) as refused:
                await client.set("/s/3", BIG)
            assert refused.value.code == 507 and refused.value.address == "/s/3"
            assert "150000-byte limit" in refused.value.reason and "max_store_bytes" in refused.value.reason
            assert await client.set("/s/0", BIG[:-1] + "w") == 2  # replacing within the bound works
            assert await client.set("/s/1", 0.5) == 2  # shrinking makes room ...
            assert await client.set("/s/3", BIG) == 1  # ... for a new param
            assert await client.get("/s/3") == BIG
        assert relay.router.store.used <= 150_000


async def test_param_count_is_bounded_and_new_addresses_beyond_get_507():
    async with Relay(host="127.0.0.1", port=0, max_params=3) as relay:
        async with await ClaspClient.connect(relay.url, reconnect=False) as client:
            for i in range(3):
                await client.set(f"/n/{i}", i)
            with pytest.raises(ProtocolError) as refused:
                await client.set("/n/3", 3)
            assert refused.value.code == 507 and "3 params" in refused.value.reason
            assert await client.set("/n/0", 10) == 2  # an existing param is still written
            assert [await client.get(f"/n/{i}") for i in range(3)] == [10, 1, 2]  # nothing evicted


async def test_set_too_large_to_serve_gets_402_and_the_connection_goes_on():
    async with Relay(host="127.0.0.1", port=0) as relay:
        ws, _ = await session(relay.url)
        await recv(ws)  # the empty SNAPSHOT
        # Its echo (with a revision) would exceed a frame; then one whose echo fits but whose
        # SNAPSHOT entry (writer, timestamp) would not.
        for value in ("x" * 65_523, "x" * 65_480):
            frame = encode(Set(address="/huge", value=value))
            assert len(frame) <= 65_539
            await ws.send(frame)
            error = await recv(ws)
            assert isinstance(error, Error) and (error.code, error.address) == (402, "/huge"), error
            assert "too large" in error.message
        await ws.send(encode(Get(address="/huge")))
        await ws.send(encode(Ping()))
        assert isinstance(await recv(ws), Pong)  # nothing was stored, the connection is fine
        await ws.close()


async def test_query_result_over_one_frame_is_cut_with_413():
    async with Relay(host="127.0.0.1", port=0) as relay:
        ws, _ = await session(relay.url)
        await recv(ws)
        signals = [SignalInfo(address=f"/q/{i:04d}/" + "s" * 100, signal_type="event") for i in range(700)]
        for part in (signals[:350], signals[350:]):
            await ws.send(encode(Announce(namespace="/q", signals=part)))
            assert await recv(ws) == Ack(address="/q")
        await ws.send(encode(Query(pattern="/q/**")))
        result = await recv(ws)
        assert isinstance(result, Result) and 500 < len(result.signals) < 700
        error = await recv(ws)
        assert isinstance(error, Error) and (error.code, error.address) == (413, "/q/**")
        assert f"{len(result.signals)} of 700" in error.message
        await ws.close()


# -- item 8: fair scheduling between senders -------------------------------------------------


async def test_flooded_subscriber_gets_a_calm_senders_message_ahead_of_the_flood():
    """A subscriber whose queue a flooder keeps full still gets another sender's message, and
    after at most one more flood frame, instead of dropping it or queueing it behind the flood."""
    queue_size = 64
    async with Relay(host="127.0.0.1", port=0, queue_size=queue_size) as relay:
        subscriber, _ = await session(relay.url)
        await recv(subscriber)
        await subscriber.send(encode(Subscribe(id=1, pattern="/**")))
        await subscriber.send(encode(Ping()))
        assert isinstance(await recv(subscriber), Pong)
        subscriber.transport.pause_reading()
        flooder, _ = await session(relay.url)
        calm, _ = await session(relay.url)
        await recv(calm)  # its empty SNAPSHOT
        flood = encode(Publish(address="/flood", signal="event", value="f" * 4000))
        for _ in range(3000):  # 12 MB: the socket buffers fill, then the subscriber's queue
            await flooder.send(flood)
        await flooder.send(encode(Ping()))
        while not isinstance(await recv(flooder, 30.0), Pong):
            pass
        (target,) = [s for s in relay.sessions.values() if s.subscriptions]
        assert target.dropped > 0  # the queue is full of flood
        await calm.send(encode(Publish(address="/calm", signal="event", value="hello")))
        await calm.send(encode(Ping()))
        assert isinstance(await recv(calm), Pong)
        subscriber.transport.resume_reading()
        after_calm = None
        for _ in range(5000):
            message = await recv(subscriber, 10.0)
            if isinstance(message, Publish) and message.address == "/calm":
                after_calm = 0
            elif after_calm is not None and isinstance(message, Publish):
                after_calm += 1
                if after_calm == queue_size // 2:
                    break
        # The calm message arrived, and half a queue of flood was still behind it (a FIFO would
        # have put it after every queued flood frame, or dropped it).
        assert after_calm == queue_size // 2
        subscriber.transport.abort()  # megabytes of flood are still unread
        for ws in (flooder, calm):
            await ws.close()

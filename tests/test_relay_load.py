"""Faults and load on loopback: a client killed mid-stream, a flood, 100 concurrent clients.

Every loop is bounded in count, and every wait in time.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

from websockets.asyncio.client import connect

from clasp_fast.client import ClaspClient
from clasp_fast.codec import decode, encode
from clasp_fast.messages import Error, Hello, Publish, Snapshot, Welcome
from clasp_fast.relay import Relay

STREAMER = textwrap.dedent("""
    import asyncio, sys
    from clasp_fast.client import ClaspClient

    async def main():
        client = await ClaspClient.connect(sys.argv[1], name="doomed", reconnect=False)
        print(client.session_id, flush=True)
        for i in range(200_000):  # bounded; the test kills the process long before the end
            await client.stream("/doomed/level", float(i))
            if i % 100 == 0:
                await asyncio.sleep(0)
    asyncio.run(main())
""")


async def wait_until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_client_killed_mid_stream():
    async with Relay(port=0) as relay:
        async with await ClaspClient.connect(relay.url, name="watcher") as watcher:
            levels: list[float] = []
            await watcher.subscribe("/doomed/**", lambda v, a: levels.append(v))
            await watcher.ping()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", STREAMER, relay.url, stdout=asyncio.subprocess.PIPE)
            try:
                session = (await asyncio.wait_for(process.stdout.readline(), 10.0)).decode().strip()
                await wait_until(lambda: len(levels) >= 200)  # it is streaming through the relay
                process.send_signal(signal.SIGKILL)
                await asyncio.wait_for(process.wait(), 5.0)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await wait_until(lambda: session not in relay.sessions)
            assert levels == sorted(levels)  # in order, never duplicated
            # The relay and the other session carry on.
            echoes: list = []
            await watcher.subscribe("/after/**", lambda v, a: echoes.append(v))
            assert await watcher.set("/after/x", 1) == 1
            await wait_until(lambda: echoes == [1])


async def test_flood_from_one_client_others_keep_working():
    async with Relay(port=0, rate_limit=1000) as relay:
        async with await ClaspClient.connect(relay.url, name="calm") as calm, \
                await ClaspClient.connect(relay.url, name="listener") as listener:
            heard: list = []
            await listener.subscribe("/flood/**", lambda v, a: heard.append(v))
            await listener.ping()
            flooder = await connect(relay.url, subprotocols=["clasp"])
            await flooder.send(encode(Hello(name="flooder")))
            assert isinstance(decode(await flooder.recv()), Welcome)
            assert isinstance(decode(await flooder.recv()), Snapshot)
            frame = encode(Publish(address="/flood/x", signal="event", value="spam"))
            errors = 0

            async def drain() -> None:
                nonlocal errors
                async for data in flooder:
                    message = decode(data)
                    if isinstance(message, Error) and message.code == 429:
                        errors += 1

            reader = asyncio.get_running_loop().create_task(drain())

            async def flood() -> None:
                for _ in range(5000):
                    await flooder.send(frame)

            flooding = asyncio.get_running_loop().create_task(flood())
            # While the flood runs, the calm client's requests are answered and its state is right.
            for i in range(20):
                assert await calm.set("/calm/counter", i, timeout=5.0) == i + 1
                await calm.ping(timeout=5.0)
            await asyncio.wait_for(flooding, 20.0)
            listener_session = relay.sessions[listener.session_id]
            flooder_session = next(s for s in relay.sessions.values() if s.name == "flooder")
            await wait_until(lambda: flooder_session.received == 5000, 10.0)
            # Every flood message was refused (ERROR 429, sent while the flooder's queue has room)
            # or routed to the listener (delivered, or dropped as to a slow consumer and counted).
            assert flooder_session.refused > 0 and 0 < errors <= flooder_session.refused
            await wait_until(lambda: len(heard) + listener_session.dropped == 5000 - flooder_session.refused)
            assert await calm.get("/calm/counter") == 19
            reader.cancel()
            await flooder.close()


async def test_hundred_concurrent_clients_lose_nothing_on_set_echo():
    clients_n, sets_n = 100, 20
    async with Relay(port=0, max_sessions=clients_n + 1) as relay:
        observer = await ClaspClient.connect(relay.url, name="observer")
        seen_by_observer: list[tuple] = []
        await observer.subscribe("/load/**", lambda v, a: seen_by_observer.append((a, v)))
        await observer.ping()
        clients = await asyncio.wait_for(asyncio.gather(*(
            ClaspClient.connect(relay.url, name=f"c{i}") for i in range(clients_n))), 30.0)
        echoes: dict[int, list] = {i: [] for i in range(clients_n)}
        try:
            for i, client in enumerate(clients):
                await client.subscribe(f"/load/{i}/**", lambda v, a, m, i=i: echoes[i].append((v, m.revision)))
            await asyncio.gather(*(c.ping() for c in clients))

            async def writer(i: int, client: ClaspClient) -> list:
                return [await client.set(f"/load/{i}/value", n) for n in range(sets_n)]

            revisions = await asyncio.wait_for(
                asyncio.gather(*(writer(i, c) for i, c in enumerate(clients))), 60.0)
            assert all(r == list(range(1, sets_n + 1)) for r in revisions)
            await wait_until(lambda: all(len(e) == sets_n for e in echoes.values())
                             and len(seen_by_observer) == clients_n * sets_n, 20.0)
            for i in range(clients_n):
                assert echoes[i] == [(n, n + 1) for n in range(sets_n)]
            for i in range(clients_n):
                mine = [v for a, v in seen_by_observer if a == f"/load/{i}/value"]
                assert mine == list(range(sets_n))
            assert all(s.dropped == 0 for s in relay.sessions.values())
        finally:
            await asyncio.gather(*(c.close() for c in clients))
            await observer.close()

"""The hybrid client: routing by /peer/{id}/, fallback to the relay, recovery, exactly-once across failover."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from clasp_fast import ClaspBuilder, HybridClient, TransportError
from clasp_fast.client import ClaspClient
from clasp_fast.messages import MISSING
from clasp_fast.relay import Relay
from clasp_fast.webrtc import WebRtcConfig

from .test_p2p import relay_running, wait_until

TIMEOUT = 15
KEEPALIVE_INTERVAL = 0.2
KEEPALIVE_TIMEOUT = 1.0
RETRY_INTERVAL = 1.0


def loopback() -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=KEEPALIVE_INTERVAL,
                        keepalive_timeout=KEEPALIVE_TIMEOUT, connection_timeout=10.0)


async def hybrid(relay: Relay, client_id: str, **options) -> HybridClient:
    options.setdefault("retry_interval", RETRY_INTERVAL)
    return await (ClaspBuilder(relay.url)
                  .with_p2p(client_id=client_id, rtc_config=loopback(), presence_interval=0.5, **options)
                  .connect())


@contextlib.asynccontextmanager
async def two_clients(relay: Relay, a_options: dict | None = None, b_options: dict | None = None):
    a = await hybrid(relay, "a", **(a_options or {}))
    b = await hybrid(relay, "b", **(b_options or {}))
    try:
        await a.p2p.wait_for_peer("b", TIMEOUT)
        await b.p2p.wait_for_peer("a", TIMEOUT)
        yield a, b
    finally:
        await a.close()
        await b.close()


def blackhole(client: HybridClient, peer_id: str) -> None:
    """Drop every datagram the ICE sockets of this connection receive, as a dead network would."""
    connection = client.p2p.connection(peer_id).transport.ice_connection()
    for protocol in connection._protocols:
        protocol.datagram_received = lambda data, addr: None


async def program(a: HybridClient) -> list[str]:
    """The same sends in every run; returns the routes they took."""
    routes = []
    for i in range(20):
        routes.append(await a.set("/peer/b/level", i))
    routes.append(await a.emit("/peer/b/cue", {"scene": 3}))
    routes.append(await a.set("/peer/b/name", "text"))
    routes.append(await a.emit("/peer/b/bang"))
    return routes


async def run_program(relay: Relay, block_p2p: bool) -> tuple[list, list[str], dict]:
    b_options = {"accept": lambda info: False} if block_p2p else {}
    async with two_clients(relay, b_options=b_options) as (a, b):
        seen: list = []
        b.on("/peer/b/**", lambda value, address: seen.append((address, value)))
        if not block_p2p:
            await asyncio.wait_for(a.connect_to_peer("b"), TIMEOUT)
        routes = await program(a)
        await wait_until(lambda: len(seen) == 23, what="23 messages at b")
        return seen, routes, a.stats()


async def test_same_output_whether_p2p_is_up_or_refused() -> None:
    async with relay_running() as relay:
        direct, direct_routes, direct_stats = await run_program(relay, block_p2p=False)
        relayed, relayed_routes, relayed_stats = await run_program(relay, block_p2p=True)
    assert direct == relayed
    assert direct[:3] == [("/peer/b/level", 0), ("/peer/b/level", 1), ("/peer/b/level", 2)]
    assert ("/peer/b/cue", {"scene": 3}) in direct and ("/peer/b/bang", MISSING) in direct
    assert set(direct_routes) == {"p2p"} and set(relayed_routes) == {"relay"}
    assert direct_stats["sent"] == {"p2p": 23, "relay": 0}
    assert relayed_stats["sent"] == {"p2p": 0, "relay": 23}
    assert relayed_stats["p2p_failures"] >= 1


async def test_routing_modes() -> None:
    async with relay_running() as relay:
        # relay only: never P2P, even though the peer would accept.
        async with two_clients(relay, a_options={"prefer_p2p": False}) as (a, b):
            got = []
            b.on("/peer/b/**", lambda value, address: got.append(value))
            assert a.mode == "relay_only"
            assert [await a.set("/peer/b/v", i) for i in range(3)] == ["relay"] * 3
            await wait_until(lambda: got == [0, 1, 2])
            assert a.p2p.connections == [] and a.stats()["p2p_attempts"] == 0
        # P2P only with a peer that refuses: a clear error, nothing through the relay.
        async with two_clients(relay, a_options={"fallback_to_router": False},
                               b_options={"accept": lambda info: False}) as (a, b):
            assert a.mode == "p2p_only"
            with pytest.raises(TransportError, match="P2P only") as caught:
                await a.set("/peer/b/v", 1)
            assert caught.value.peer == "b"
            assert a.stats()["sent"] == {"p2p": 0, "relay": 0}
        # P2P only with a willing peer connects on the first send.
        async with two_clients(relay, a_options={"fallback_to_router": False}) as (a, b):
            got = []
            b.on("/peer/b/**", lambda value, address: got.append(value))
            assert await a.set("/peer/b/v", 5) == "p2p"
            await wait_until(lambda: got == [5])


async def test_other_addresses_use_the_relay_and_reach_plain_clients() -> None:
    async with relay_running() as relay:
        plain = await ClaspClient.connect(relay.url)
        try:
            async with two_clients(relay) as (a, b):
                heard = []
                await plain.subscribe("/room/**", lambda value, address: heard.append((address, value)))
                b_heard = []
                await b.subscribe("/room/**", lambda value, address: b_heard.append(value))
                await a.connect_to_peer("b")
                assert a.route_for("/room/light") == "relay" and a.route_for("/peer/b/x") == "p2p"
                assert await a.set("/room/light", 0.75, wait=True) == "relay"
                assert await a.emit("/room/door", "open") == "relay"
                await wait_until(lambda: len(heard) == 2 and len(b_heard) == 2)
                assert heard == [("/room/light", 0.75), ("/room/door", "open")]
                assert await b.get("/room/light") == 0.75  # relay GET through the hybrid client
                routes = []
                a.on_route(lambda address, route: routes.append(route))
                await a.set("/peer/b/x", 1)
                assert routes == ["p2p"]
                assert await a.get("/peer/b/x") == 1  # answered by b over P2P
        finally:
            await plain.close()


async def test_failover_is_exactly_once_and_p2p_recovers_after_the_retry_interval() -> None:
    count = 2500
    block_at = 600
    async with relay_running() as relay:
        async with two_clients(relay) as (a, b):
            received: list[int] = []
            b.on("/peer/b/seq", lambda value, address: received.append(value))
            await asyncio.wait_for(a.connect_to_peer("b"), TIMEOUT)
            routes: list[str] = []
            blocked_at = fallback_at = recovered_at = None
            deadline = time.monotonic() + 60
            for i in range(count):
                assert time.monotonic() < deadline, "the send loop ran too long"
                routes.append(await a.set("/peer/b/seq", i))
                if i == block_at:
                    blackhole(a, "b")
                    blackhole(b, "a")
                    blocked_at = time.monotonic()
                if blocked_at and fallback_at is None and routes[-1] == "relay":
                    fallback_at = time.monotonic()
                if fallback_at and recovered_at is None and routes[-1] == "p2p":
                    recovered_at = time.monotonic()
                await asyncio.sleep(0.002)
            await wait_until(lambda: len(received) >= count, what=f"{count} messages at b")
            await asyncio.sleep(0.3)  # anything duplicated would show up now
            stats_a, stats_b = a.stats(), b.stats()

    assert sorted(received) == list(range(count))  # every message ...
    assert len(received) == count  # ... once
    assert fallback_at is not None, "never fell back to the relay"
    # Noticed through the keepalive, not ICE consent expiry (about 30 s): a liveness bound with room
    # for a busy machine, not a measurement.
    assert fallback_at - blocked_at <= KEEPALIVE_TIMEOUT + 10.0
    assert recovered_at is not None, "P2P never came back"
    assert recovered_at - fallback_at >= RETRY_INTERVAL - 0.05
    assert routes[-1] == "p2p"
    assert stats_a["fallbacks"] >= 1 and stats_a["resent"] > 0
    assert stats_a["sent"]["p2p"] + stats_a["sent"]["relay"] == count
    assert stats_b["received"]["relay"] > 0 and stats_b["received"]["p2p"] > 0
    assert stats_b["received"]["p2p"] + stats_b["received"]["relay"] == count


async def test_peer_closing_its_side_moves_traffic_to_the_relay_and_back() -> None:
    async with relay_running() as relay:
        async with two_clients(relay) as (a, b):
            got: list[int] = []
            b.on("/peer/b/n", lambda value, address: got.append(value))
            await a.connect_to_peer("b")
            assert await a.set("/peer/b/n", 0) == "p2p"
            await b.p2p.connection("a").close()
            await wait_until(lambda: a.p2p.connection("b") is None, what="a noticing the close")
            assert await a.set("/peer/b/n", 1) == "relay"
            await asyncio.sleep(RETRY_INTERVAL + 0.1)
            await a.set("/peer/b/n", 2)  # starts the retry
            await wait_until(lambda: a.p2p.connection("b") is not None, what="the new connection")
            assert await a.set("/peer/b/n", 3) == "p2p"
            await wait_until(lambda: got == [0, 1, 2, 3], what="four messages in order")

"""The hybrid client: routing by /peer/{id}/, fallback to the relay, recovery, exactly-once across failover."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import pytest

from clasp_fast import ClaspBuilder, HybridClient, TransportError
from clasp_fast.errors import ProtocolError, SignalingError
from clasp_fast.hybrid import ENVELOPE_ID, P2POptions
from clasp_fast.client import ClaspClient
from clasp_fast.messages import MISSING, Publish, Snapshot
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
    options.setdefault("rtc_config", loopback())
    return await (ClaspBuilder(relay.url)
                  .with_p2p(client_id=client_id, presence_interval=0.5, **options)
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
        if block_p2p:
            await wait_until(lambda: a.stats()["p2p_failures"] >= 1, what="the refusal")
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
            await b.ping()  # the relay still stores /peer/b/v = 2 from the first block: let its SNAPSHOT pass
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
            lost = None
            deadline = time.monotonic() + 60
            for i in range(count):
                assert time.monotonic() < deadline, "the send loop ran too long"
                routes.append(await a.set("/peer/b/seq", i))
                if i == block_at:
                    lost = a.p2p.connection("b")
                    blackhole(a, "b")
                    blackhole(b, "a")
                    blocked_at = time.monotonic()
                if blocked_at and fallback_at is None and routes[-1] == "relay":
                    fallback_at = time.monotonic()
                if fallback_at and recovered_at is None and routes[-1] == "p2p":
                    recovered_at = time.monotonic()
                await asyncio.sleep(0.002)
            await wait_until(lambda: len(set(received)) >= count, what=f"{count} messages at b")
            stats_a = a.stats()
            await sentinels(a, lost, received, "/peer/b/seq")
            stats_b = b.stats()

    received = [value for value in received if isinstance(value, int)]  # the sentinels left out
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
    assert stats_b["received"]["p2p"] + stats_b["received"]["relay"] == count + 2  # the two sentinels too


async def sentinels(a: HybridClient, lost, received: list, address: str) -> None:
    """Make sure nothing more is on its way to ``received``: the given-up connection ``lost`` has
    closed (no copy can follow on it) and ``a`` has re-sent what it lost; then one sentinel through
    the relay (after every re-sent envelope, as one sender's messages stay in order) and one over
    the current P2P link, and both have arrived."""
    await asyncio.wait_for(lost.wait_closed(), TIMEOUT)
    await wait_until(lambda: all(link.fallback is None or link.fallback.done() for link in a._links.values()),
                     what="the re-sends")
    await a.relay.emit(address, "relay sentinel")
    assert await a.emit(address, "p2p sentinel") == "p2p"
    await wait_until(lambda: {"relay sentinel", "p2p sentinel"} <= set(received), what="both sentinels")


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


def quiet_transport() -> WebRtcConfig:
    """Keepalives every 0.2 s, but the transport itself would wait 30 s before closing a silent link."""
    return WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=KEEPALIVE_INTERVAL,
                        keepalive_timeout=30.0, connection_timeout=10.0)


async def send_more(a: HybridClient, values: list[int], count: int) -> list[str]:
    """SET the next ``count`` numbers on /peer/b/n (recorded in ``values``); return their routes."""
    routes = []
    for _ in range(count):
        values.append(len(values))
        routes.append(await a.set("/peer/b/n", values[-1]))
    return routes


async def send_until_relay(a: HybridClient, values: list[int], limit: float) -> None:
    """Send the next numbers until a send reports the relay (bounded in time and count)."""
    deadline = time.monotonic() + limit
    while await send_more(a, values, 1) != ["relay"]:
        assert time.monotonic() < deadline, f"still P2P {limit:g} s after the link went dead"
        assert len(values) < 2000, "too many sends before the link was given up"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("dead", ["both ways", "toward a only"])
async def test_silently_dead_link_is_given_up_within_suspect_after_and_stays_exactly_once(dead: str) -> None:
    options = {"rtc_config": quiet_transport()}
    async with relay_running() as relay:
        a = await hybrid(relay, "a", **options)
        b = await hybrid(relay, "b", **options)
        try:
            await a.p2p.wait_for_peer("b", TIMEOUT)
            got: list[int] = []
            b.on("/peer/b/n", lambda value, address: got.append(value))
            await asyncio.wait_for(a.connect_to_peer("b"), TIMEOUT)
            values: list[int] = []
            assert set(await send_more(a, values, 50)) == {"p2p"}
            blackhole(a, "b")  # a hears nothing more: no acknowledgements, no keepalives
            if dead == "both ways":
                blackhole(b, "a")  # and what a sends over P2P is lost
            # The transport would notice after 30 s; the hybrid client gives up after suspect_after, by
            # default twice the keepalive interval, at least 1 s (a liveness bound, not a measurement).
            await send_until_relay(a, values, limit=1.0 + 10.0)
            assert a.route_for("/peer/b/n") == "relay"
            assert set(await send_more(a, values, 20)) == {"relay"}
            b.on("/peer/b/sentinel", lambda value, address: got.append("sentinel"))
            await wait_until(lambda: len(set(got)) == len(values), what="every message at b")
            await a.emit("/peer/b/sentinel")
            await wait_until(lambda: got[-1:] == ["sentinel"], what="the sentinel")
            assert got[:-1] == values  # every message once, in order
            stats = a.stats()
            assert a.suspect_after == 1.0
            assert stats["suspected"] >= 1 and stats["fallbacks"] >= 1
            assert stats["sent"]["relay"] >= 21
            if dead == "toward a only":
                # b got every P2P copy; the ones a could not see acknowledged came again through the relay.
                assert stats["resent"] > 0 and b.stats()["duplicates_dropped"] > 0
        finally:
            await a.close()
            await b.close()


def test_suspect_after_must_be_longer_than_the_keepalive_interval() -> None:
    relay = ClaspClient("ws://127.0.0.1:9")
    with pytest.raises(ValueError, match="suspect_after .* keepalive interval"):
        HybridClient(relay, P2POptions(rtc_config=loopback(), suspect_after=KEEPALIVE_INTERVAL))


async def test_relay_envelopes_forged_by_another_session_neither_replace_nor_skip_messages() -> None:
    async with relay_running() as relay:
        attacker = await ClaspClient.connect(relay.url)
        try:
            async with two_clients(relay) as (a, b):
                errors: list[Exception] = []
                b.on_error(errors.append)
                got: list = []
                b.on("/peer/b/n", lambda value, address: got.append(value))
                b.on("/peer/b/done", lambda value, address: got.append(value))
                seen: list[Publish] = []  # numbered envelopes the attacker can read on the relay

                def observe(value, address, message) -> None:
                    if type(message) is Publish and message.id == ENVELOPE_ID and message.timestamp is not None:
                        seen.append(message)

                await attacker.subscribe("/peer/b/**", observe)
                await asyncio.wait_for(a.connect_to_peer("b"), TIMEOUT)
                values: list[int] = []
                await send_more(a, values, 20)
                await wait_until(lambda: len(got) == 20, what="the first messages over P2P")
                blackhole(a, "b")
                blackhole(b, "a")
                await send_until_relay(a, values, limit=KEEPALIVE_TIMEOUT + 10.0)
                await wait_until(lambda: seen, what="a numbered envelope on the relay")
                await wait_until(lambda: len(set(got)) == len(values), what="every message so far at b")

                # The attacker forges the next message ids of what it saw, and replays one with a new value.
                newest = max(seen, key=lambda m: m.timestamp)

                def forged(timestamp: int, value: int) -> Publish:
                    body = value
                    if isinstance(newest.value, dict):
                        body = {**newest.value, "v": value}
                        if timestamp != newest.timestamp:
                            body["t"] = secrets.token_bytes(len(newest.value["t"]))
                    return Publish(address="/peer/b/n", signal="param", value=body, timestamp=timestamp,
                                   id=ENVELOPE_ID)

                for k in range(1, 41):
                    await attacker.publish(forged(newest.timestamp + k, -k))
                await attacker.publish(forged(newest.timestamp, -100))
                await attacker.set("/peer/b/done", "attacker", wait=True)
                await wait_until(lambda: "attacker" in got, what="the attacker's sentinel")
                await send_more(a, values, 40)
                await a.set("/peer/b/done", "a")
                await wait_until(lambda: got[-1:] == ["a"], what="a's sentinel")
        finally:
            await attacker.close()
    delivered = [v for v in got if v not in ("attacker", "a")]
    assert delivered == values  # nothing forged, nothing skipped, nothing twice
    assert b.stats()["rejected"] == 40
    rejected = [e for e in errors if isinstance(e, ProtocolError) and "does not verify" in str(e)]
    assert len(rejected) == 40 and rejected[0].address == "/peer/b/n"
    assert all(len(m.value["h"]) == 16 and len(m.value["t"]) == 16 for m in seen)  # 128-bit ids


async def test_duplicate_tracking_stays_bounded_under_a_flood_of_numbered_envelopes() -> None:
    async with relay_running() as relay:
        flooder = await ClaspClient.connect(relay.url)
        try:
            b = await hybrid(relay, "b")
            try:
                got: list = []
                b.on("/peer/b/**", lambda value, address: got.append(value))
                count = 6000
                for i in range(count):
                    value = {"h": secrets.token_bytes(16), "t": secrets.token_bytes(16), "v": i}
                    await flooder.publish(Publish(address="/peer/b/flood", signal="event", value=value,
                                                  timestamp=secrets.randbits(64), id=ENVELOPE_ID))
                    if i % 500 == 499:
                        await flooder.ping(timeout=10.0)  # let the relay's queue toward b drain
                await flooder.publish(Publish(address="/peer/b/flood", signal="event", value="end"))
                await wait_until(lambda: got[-1:] == ["end"], what="the end of the flood")
                tracked = b.stats()["tracked"]
                assert tracked["epochs"] == 0 and tracked["unverified"] <= 4096
                # Unknown epochs cannot be checked: their messages are delivered like plain relay traffic.
                assert len(got) == count + 1
            finally:
                await b.close()
        finally:
            await flooder.close()


async def test_errors_of_the_p2p_layer_and_its_peers_reach_the_hybrid_clients_on_error() -> None:
    async with relay_running() as relay:
        async with two_clients(relay) as (a, b):
            errors: list[Exception] = []
            a.on_error(errors.append)
            await asyncio.wait_for(a.connect_to_peer("b"), TIMEOUT)
            await wait_until(lambda: b.p2p.connection("a") is not None, what="b's side of the connection")
            # A peer's error: a SNAPSHOT that answers no GET of a's.
            await b.p2p.connection("a").send(Snapshot(params=[]), reliable=True)
            await wait_until(lambda: any("answers no waiting GET" in str(e) for e in errors), what="the peer's report")
            # The P2P layer's error: a signal for a connection a never had.
            await b.relay.signaling.send_signal(a.session_id, {"type": "ice_candidate", "candidate": "{}",
                                                               "correlation_id": "nobody-knows-it"})
            await wait_until(lambda: any(isinstance(e, SignalingError) for e in errors), what="the P2P layer's report")


async def test_each_message_is_matched_once_whichever_route_it_takes() -> None:
    async with relay_running() as relay:
        async with two_clients(relay) as (a, b):
            got: list[tuple[str, object]] = []
            b.on("/peer/b/**", lambda value, address: got.append((address, value)))
            await asyncio.wait_for(a.connect_to_peer("b"), TIMEOUT)
            assert await a.set("/peer/b/direct", 1) == "p2p"
            await a.relay.emit("/peer/b/relayed", 2)
            await wait_until(lambda: len(got) == 2, what="both messages")
            # A sentinel behind both on each route: a second match of either would be in by then.
            assert await a.emit("/peer/b/sentinel", "p2p") == "p2p"
            await a.relay.emit("/peer/b/sentinel", "relay")
            await wait_until(lambda: len(got) >= 4, what="the sentinels")
            assert sorted(got[:2]) == [("/peer/b/direct", 1), ("/peer/b/relayed", 2)]
            assert sorted(got[2:], key=repr) == sorted([("/peer/b/sentinel", "p2p"), ("/peer/b/sentinel", "relay")],
                                                       key=repr)

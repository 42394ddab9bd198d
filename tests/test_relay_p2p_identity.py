"""P2P identity on the embedded relay (issue 14, items 1, 2 and 4): client-id claims, presence
ownership, announce checks, and P2P signaling that tries to get around the signal routing.

Every "nothing else arrives" check sends a sentinel after the refused message and expects the
sentinel next.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.server import serve

from clasp_fast.auth import TokenAuth
from clasp_fast.client import ClaspClient
from clasp_fast.codec import encode
from clasp_fast.errors import ProtocolError
from clasp_fast.messages import (
    Ack,
    Bundle,
    Publish,
    Set,
    Subscribe,
    Ttl,
    Welcome,
)
from clasp_fast.p2p import ClaspP2P
from clasp_fast.relay import Relay
from clasp_fast.webrtc import WebRtcConfig

from .relay_wire import expect_error, recv, round_trip
from .relay_wire import session as open_session

PRESENCE = "/clasp/p2p/presence/"
ANNOUNCE = "/clasp/p2p/announce"
SIGNAL = "/clasp/p2p/signal/"


# The presence expiry tests need the sweep to run often.
pytestmark = pytest.mark.relay_options(ttl_sweep_interval=0.05)


async def session(url: str, token: str | None = None):
    """A bare WebSocket past WELCOME and its SNAPSHOT; returns (ws, session id)."""
    ws, session_id, _ = await open_session(url, token)
    return ws, session_id


def presence(session_id: str, client_id: str | None) -> Set:
    value = {"client_id": client_id, "session_id": session_id, "features": ["webrtc"]}
    return Set(address=PRESENCE + session_id, value=value, ttl=Ttl.absolute(30))


def announce(session_id: str, client_id: str | None = None) -> Publish:
    value = {"session_id": session_id, "p2p_capable": True, "features": ["webrtc"]}
    if client_id is not None:
        value["client_id"] = client_id
    return Publish(address=ANNOUNCE, signal="event", value=value)


async def observer(url: str):
    """A session subscribed to presence and announces; returns (ws, session id)."""
    ws, sid = await session(url)
    await ws.send(encode(Subscribe(id=1, pattern=PRESENCE + "*")))
    await ws.send(encode(Subscribe(id=2, pattern=ANNOUNCE)))
    await ws.send(encode(Subscribe(id=3, pattern="/sentinel")))
    await round_trip(ws)
    return ws, sid


async def sentinel(sender, watcher, value: str) -> None:
    """Publish ``value`` to /sentinel from ``sender``; it must be the next thing ``watcher`` gets."""
    await sender.send(encode(Publish(address="/sentinel", signal="event", value=value)))
    got = await recv(watcher)
    assert (type(got), got.address, got.value) == (Publish, "/sentinel", value), got


# -- item 1: client-id claims (open mode) ------------------------------------------------------


async def test_first_live_claim_wins_and_a_second_claimant_is_refused(relay):
    watch, _ = await observer(relay.url)
    a, a_id = await session(relay.url)
    b, b_id = await session(relay.url)
    await a.send(encode(presence(a_id, "rx")))
    assert await recv(a) == Ack(address=PRESENCE + a_id, revision=1)
    assert (await recv(watch)).value["client_id"] == "rx"
    # b may not take "rx" while a holds it: neither in its presence param nor in an announce.
    await b.send(encode(presence(b_id, "rx")))
    error = await expect_error(b, 409, PRESENCE + b_id)
    assert "'rx'" in error.message and a_id in error.message
    await b.send(encode(announce(b_id, "rx")))
    await expect_error(b, 409, ANNOUNCE)
    await sentinel(b, watch, "after the refusals")  # neither reached the observer
    await a.send(encode(announce(a_id, "rx")))  # the holder announces its own id freely
    assert (await recv(watch)).value == announce(a_id, "rx").value
    # a leaves: the relay withdraws its presence (a null echo) and "rx" is free again.
    await a.close()
    withdrawal = await recv(watch)
    assert (type(withdrawal), withdrawal.address, withdrawal.value) == (Set, PRESENCE + a_id, None)
    await b.send(encode(presence(b_id, "rx")))
    assert await recv(b) == Ack(address=PRESENCE + b_id, revision=1)
    await b.close()
    await watch.close()


async def test_a_withdrawn_or_expired_presence_ends_the_claim(relay):
    a, a_id = await session(relay.url)
    b, b_id = await session(relay.url)
    await a.send(encode(presence(a_id, "one")))
    await recv(a)
    await a.send(encode(Set(address=PRESENCE + a_id, value=None, ttl=Ttl.absolute(1))))  # withdrawal
    await recv(a)
    await b.send(encode(presence(b_id, "one")))
    assert isinstance(await recv(b), Ack)
    # A presence that expires ends the claim too (the sweep runs every 50 ms here).
    await b.send(encode(Set(address=PRESENCE + b_id, value=presence(b_id, "one").value, ttl=Ttl.absolute(1))))
    await recv(b)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while relay.router.claims.holder("one") is not None:
        assert loop.time() < deadline, "the expired presence did not end the claim"
        await asyncio.sleep(0.05)
    await a.send(encode(presence(a_id, "one")))
    assert isinstance(await recv(a), Ack)
    await a.close()
    await b.close()


async def test_claiming_another_id_gives_up_the_first(relay):
    a, a_id = await session(relay.url)
    b, b_id = await session(relay.url)
    await a.send(encode(announce(a_id, "first")))
    await a.send(encode(announce(a_id, "second")))
    await round_trip(a)
    await b.send(encode(announce(b_id, "first")))
    await round_trip(b)  # no ERROR: "first" was given up
    await b.send(encode(announce(b_id, "second")))
    await expect_error(b, 409, ANNOUNCE)
    await a.close()
    await b.close()


async def test_presence_param_is_written_only_by_its_own_session(relay):
    watch, _ = await observer(relay.url)
    a, a_id = await session(relay.url)
    b, b_id = await session(relay.url)
    await a.send(encode(presence(a_id, "rx")))
    await recv(a)
    await recv(watch)
    for value in (None, {"client_id": "rx", "session_id": a_id}):  # nulling or replacing another's
        await b.send(encode(Set(address=PRESENCE + a_id, value=value)))
        error = await expect_error(b, 403, PRESENCE + a_id)
        assert a_id in error.message
    await sentinel(b, watch, "nothing changed")
    # Nor may a session name another session inside its own presence or announce.
    await b.send(encode(Set(address=PRESENCE + b_id, value={"client_id": "x", "session_id": a_id})))
    await expect_error(b, 403, PRESENCE + b_id)
    await b.send(encode(announce(a_id)))
    await expect_error(b, 403, ANNOUNCE)
    await sentinel(b, watch, "still nothing")
    await a.send(encode(Subscribe(id=1, pattern=PRESENCE + a_id)))
    snapshot = await recv(a)
    assert snapshot.params[0].value["client_id"] == "rx"
    for ws in (a, b, watch):
        await ws.close()


@pytest.mark.parametrize("value, fragment", [
    ({"client_id": "a/b"}, "one non-empty address segment"),
    ({"client_id": ""}, "one non-empty address segment"),
    ({"client_id": 7}, "must be a string"),
    ({"client_id": "x" * 300}, "at most 256"),
    ("just a string", "must be a map"),
])
async def test_malformed_presence_is_refused_with_402_naming_the_problem(relay, value, fragment):
    a, a_id = await session(relay.url)
    await a.send(encode(Set(address=PRESENCE + a_id, value=value)))
    error = await expect_error(a, 402, PRESENCE + a_id)
    assert fragment in error.message
    await round_trip(a)  # the connection goes on
    await a.close()


async def test_reference_announce_without_client_id_needs_no_claim():
    auth = TokenAuth({"p2p": ["read:/clasp/p2p/**", "write:/clasp/p2p/**"]})
    async with Relay(host="127.0.0.1", port=0, auth=auth) as relay:
        watch, _ = await session(relay.url, "p2p")
        await watch.send(encode(Subscribe(id=1, pattern=ANNOUNCE)))
        await round_trip(watch)
        a, a_id = await session(relay.url, "p2p")
        await a.send(encode(announce(a_id)))  # what the Rust reference client sends
        assert (await recv(watch)).value == announce(a_id).value
        await a.send(encode(announce(a_id, "rx")))
        error = await expect_error(a, 301, ANNOUNCE)
        assert "claim" in error.message and "'rx'" in error.message
        await a.send(encode(presence(a_id, "rx")))
        await expect_error(a, 301, PRESENCE + a_id)
        await a.send(encode(presence(a_id, None)))  # a presence without a client id is fine
        assert await recv(a) == Ack(address=PRESENCE + a_id, revision=1)  # so the refused one stored nothing
        await a.close()
        await watch.close()


async def test_cli_tokens_with_claim_scopes(tmp_path):
    from clasp_fast.cli import relay_auth

    auth = relay_auth(["peer=read:/clasp/p2p/**,claim:sensor-*"], None)
    scopes = auth.tokens["peer"]
    assert scopes.claim == ("sensor-*",) and scopes.can_claim("sensor-7") and not scopes.can_claim("mixer")
    with pytest.raises(ValueError, match="claim scope names client ids"):
        relay_auth(["peer=claim:/a"], None)


# -- item 1 through ClaspP2P (open mode) ---------------------------------------------------------


async def test_p2p_with_a_client_id_already_live_is_refused_with_409(relay):
    config = WebRtcConfig(host_addresses=["127.0.0.1"])
    async with ClaspP2P(relay.url, client_id="rx", rtc_config=config) as first:
        second = ClaspP2P(relay.url, client_id="rx", rtc_config=config, presence_interval=0.3)
        with pytest.raises(ProtocolError) as refused:
            await second.connect()
        assert refused.value.code == 409 and first.session_id in refused.value.reason
        assert not second.client.connected
    async with ClaspP2P(relay.url, client_id="rx", rtc_config=config) as later:  # free again
        assert later.client.connected


# -- item 2: signaling only as the relay routes it ---------------------------------------------


async def test_signal_announce_or_presence_inside_a_bundle_is_refused_whole(relay):
    victim, victim_id = await session(relay.url)
    await victim.send(encode(Subscribe(id=1, pattern=SIGNAL + victim_id)))  # as reference clients do
    await victim.send(encode(Subscribe(id=2, pattern="/**")))
    await round_trip(victim)
    attacker, attacker_id = await session(relay.url)
    bystander, bystander_id = await session(relay.url)
    forged = {"type": "offer", "from": bystander_id, "sdp": "v=0\r\n", "correlation_id": "c"}
    honest = {**forged, "from": attacker_id}
    for inner in (Publish(address=SIGNAL + victim_id, signal="event", value=forged),
                  Publish(address=SIGNAL + victim_id, signal="event", value=honest),
                  Publish(address=ANNOUNCE, signal="event", value=announce(attacker_id).value),
                  Set(address=PRESENCE + attacker_id, value=presence(attacker_id, "x").value)):
        await attacker.send(encode(Bundle(messages=[Set(address="/ok", value=1), inner])))
        error = await expect_error(attacker, 403, inner.address)
        assert "Bundle rejected" in error.message and "on its own" in error.message
    await attacker.send(encode(Publish(address="/sentinel", signal="event", value="end")))
    got = await recv(victim)
    assert (got.address, got.value) == ("/sentinel", "end")  # no signal, no /ok: nothing was applied
    for ws in (victim, attacker, bystander):
        await ws.close()


async def test_set_to_a_signal_or_announce_address_and_publish_to_presence_are_refused(relay):
    victim, victim_id = await session(relay.url)
    await victim.send(encode(Subscribe(id=1, pattern="/**")))
    await round_trip(victim)
    attacker, attacker_id = await session(relay.url)
    for address in (SIGNAL + victim_id, ANNOUNCE):
        await attacker.send(encode(Set(address=address, value={"type": "offer", "from": attacker_id})))
        error = await expect_error(attacker, 403, address)
        assert "PUBLISH routed by the relay" in error.message
    await attacker.send(encode(Publish(address=PRESENCE + victim_id, signal="event",
                                       value={"client_id": "rx", "session_id": victim_id})))
    error = await expect_error(attacker, 403, PRESENCE + victim_id)
    assert "presence is a param" in error.message
    await attacker.send(encode(Publish(address="/sentinel", signal="event", value="end")))
    got = await recv(victim)
    assert (got.address, got.value) == ("/sentinel", "end")
    await victim.close()
    await attacker.close()


async def test_client_takes_signals_only_as_routed_not_from_inside_a_bundle():
    """A relay that fans out BUNDLE contents (as the reference router does) must not be able to
    hand a client a signal it did not route: the client ignores signals inside a BUNDLE."""
    session_id = "7f1c6a52-3c0b-4a6f-9f1e-3d2b8a0c9e11"
    forged = {"type": "offer", "from": "someone-else", "sdp": "v=0\r\n", "correlation_id": "forged"}
    routed = {"type": "offer", "from": "a-peer", "sdp": "v=0\r\n", "correlation_id": "routed"}

    async def fake_relay(ws):
        await ws.recv()  # HELLO
        await ws.send(encode(Welcome(session=session_id, name="fake", features=[], time=0)))
        await ws.send(encode(Bundle(messages=[Publish(address=SIGNAL + session_id, signal="event",
                                                      value=forged)])))
        await ws.send(encode(Publish(address=SIGNAL + session_id, signal="event", value=routed)))
        await ws.wait_closed()

    async with serve(fake_relay, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = await ClaspClient.connect(url, reconnect=False)
        try:
            signal = await asyncio.wait_for(client.signaling.recv_signal(), 5.0)
            assert signal["correlation_id"] == "routed"
        finally:
            await client.close()


# -- item 4: scope gaps ------------------------------------------------------------------------


TOKENS = {
    "all": ["read:/**", "write:/**"],
    "reader": ["read:/lights/**"],
    "p2p": ["read:/clasp/p2p/**", "write:/clasp/p2p/**"],
}


@pytest.fixture
async def auth_relay(make_relay):
    return await make_relay(auth=TokenAuth(TOKENS))


async def test_announce_needs_write_scope(auth_relay):
    from clasp_fast.messages import Announce, Query, Result, SignalInfo

    reader, _ = await session(auth_relay.url, "reader")
    await reader.send(encode(Announce(namespace="/lights", signals=[
        SignalInfo(address="/lights/fake", signal_type="param", datatype="f32")])))
    error = await expect_error(reader, 301, "/lights")
    assert "/lights/fake" in error.message and "write" in error.message
    await reader.send(encode(Query(pattern="/**")))
    assert await recv(reader) == Result(signals=[])  # nothing was registered
    await reader.close()


async def test_query_lists_only_readable_signals(auth_relay):
    from clasp_fast.messages import Announce, Query, Result, SignalInfo

    writer, _ = await session(auth_relay.url, "all")
    await writer.send(encode(Announce(namespace="/", signals=[
        SignalInfo(address="/secret/x", signal_type="param", datatype="f32"),
        SignalInfo(address="/lights/x", signal_type="param", datatype="f32")])))
    assert isinstance(await recv(writer), Ack)
    reader, _ = await session(auth_relay.url, "reader")
    await reader.send(encode(Query(pattern="/**")))
    result = await recv(reader)
    assert isinstance(result, Result) and [s.address for s in result.signals] == ["/lights/x"]
    await writer.send(encode(Query(pattern="/**")))
    assert sorted(s.address for s in (await recv(writer)).signals) == ["/lights/x", "/secret/x"]
    await writer.close()
    await reader.close()


async def test_presence_of_another_session_cannot_be_nulled_with_a_p2p_write_scope(auth_relay):
    victim, victim_id = await session(auth_relay.url, "p2p")
    await victim.send(encode(Set(address=PRESENCE + victim_id, value={"session_id": victim_id})))
    await recv(victim)
    attacker, _ = await session(auth_relay.url, "p2p")
    await attacker.send(encode(Set(address=PRESENCE + victim_id, value=None)))
    await expect_error(attacker, 403, PRESENCE + victim_id)
    await attacker.send(encode(Subscribe(id=1, pattern=PRESENCE + victim_id)))
    assert (await recv(attacker)).params[0].value == {"session_id": victim_id}
    await victim.close()
    await attacker.close()


async def test_signal_registry_is_bounded_per_session_and_freed_on_close(relay):
    from clasp_fast.messages import Announce, Query, SignalInfo

    limit = 1000  # the documented default of max_signals_per_session
    a, _ = await session(relay.url)

    def signals(start: int, count: int) -> list:
        return [SignalInfo(address=f"/dev/{i}", signal_type="event") for i in range(start, start + count)]

    for start in range(0, limit, 500):
        await a.send(encode(Announce(namespace="/dev", signals=signals(start, 500))))
        assert isinstance(await recv(a), Ack)
    await a.send(encode(Announce(namespace="/dev", signals=signals(0, 10))))  # re-announcing is fine
    assert isinstance(await recv(a), Ack)
    await a.send(encode(Announce(namespace="/dev", signals=signals(limit, 1))))
    error = await expect_error(a, 429, "/dev")
    assert f"{limit} announced signals per session" in error.message
    await a.close()
    b, _ = await session(relay.url)
    await b.send(encode(Query(pattern="/dev/**")))
    assert (await recv(b)).signals == []  # a's signals went with it
    await b.close()


async def test_gestures_coalesced_per_session_are_bounded():
    async with Relay(host="127.0.0.1", port=0) as relay:
        limit = 256  # the documented default of max_gestures_per_session
        sender, _ = await session(relay.url)
        listener, _ = await session(relay.url)
        await listener.send(encode(Subscribe(id=1, pattern="/g/**")))
        await round_trip(listener)
        for gid in range(limit + 1):
            await sender.send(encode(Publish(address="/g/touch", signal="gesture", id=gid, phase="start")))
        for _ in range(limit + 1):
            assert (await recv(listener)).phase == "start"
        # Gesture `limit` is beyond the bound: its moves pass one by one instead of being held.
        for x in range(3):
            await sender.send(encode(Publish(address="/g/touch", signal="gesture", id=limit, phase="move", value=x)))
        moves = [await recv(listener) for _ in range(3)]
        assert [(m.id, m.phase, m.value) for m in moves] == [(limit, "move", 0), (limit, "move", 1), (limit, "move", 2)]
        await sender.close()
        await listener.close()

"""Authenticated mode of the embedded relay (docs/protocol.md §8.1-§8.6, §8.9, §9.3), over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clasp_fast.auth import Scopes, TokenAuth, TokenExpired, TokenRejected, scope_matches
from clasp_fast.cli import build_parser, relay_auth
from clasp_fast.client import ClaspClient
from clasp_fast.codec import encode
from clasp_fast.errors import ProtocolError
from clasp_fast.messages import (
    Ack,
    Bundle,
    Error,
    Get,
    Hello,
    Publish,
    Set,
    Snapshot,
    Subscribe,
)
from clasp_fast.relay import Relay

from .relay_wire import expect_error, recv, round_trip, session
from .spec_data import load_json

TOKENS = {
    "desk": ["read:/lights/**", "write:/lights/**"],
    "reader": ["read:/lights/**"],
    "writer": ["write:/lights/**"],
    "exact": ["read:/mixer/gain", "write:/mixer/gain", "read:/x/[ab]"],
    "p2p": ["read:/clasp/p2p/**", "write:/clasp/p2p/**"],
    "all": ["read:/**", "write:/**"],
    "old": ["read:/**", "write:/**"],
}


pytestmark = pytest.mark.relay_options(auth=TokenAuth(TOKENS, expires={"old": time.time() - 1}))


async def refused(url: str, token: str | None) -> Error:
    """HELLO with ``token``; return the ERROR and check that the relay then disconnects (1008)."""
    async with connect(url, subprotocols=["clasp"]) as ws:
        await ws.send(encode(Hello(name="t", token=token)))
        error = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2.0)
        assert ws.close_code == 1008
    return error


# -- handshake ----------------------------------------------------------------------------


async def test_missing_token_gets_300_and_disconnect(relay):
    for token in (None, ""):
        error = await refused(relay.url, token)
        assert (error.code, error.message) == (300, "Authentication required")
    assert relay.sessions == {}


async def test_unknown_token_gets_300_and_disconnect(relay):
    error = await refused(relay.url, "no-such-token")
    assert (error.code, error.message) == (300, "Invalid token")
    assert relay.sessions == {}


async def test_expired_token_gets_302_and_disconnect(relay):
    error = await refused(relay.url, "old")
    assert (error.code, error.message) == (302, "Token expired")


async def test_expiry_is_checked_against_the_clock_at_handshake():
    now = [1000.0]
    auth = TokenAuth({"t": ["read:/**"]}, expires={"t": 1010.0}, clock=lambda: now[0])
    assert auth("t") == Scopes(["read:/**"])
    now[0] = 1010.0
    with pytest.raises(TokenExpired):
        auth("t")
    with pytest.raises(TokenRejected) as info:
        auth("other")
    assert info.value.code == 300


@pytest.mark.parametrize("validator", [
    lambda token: 1 / 0,
    lambda token: ["read:/**"],  # not a Scopes
])
async def test_failing_validator_gets_500_and_disconnect(validator):
    async with Relay(host="127.0.0.1", port=0, auth=validator) as relay:
        error = await refused(relay.url, "anything")
        assert error.code == 500
        assert "token validation failed" in error.message


async def test_callable_validator_receives_the_token():
    seen = []

    def validator(token: str) -> Scopes:
        seen.append(token)
        if token != "ok":
            raise TokenRejected("who are you")
        return Scopes(["read:/**"])

    async with Relay(host="127.0.0.1", port=0, auth=validator) as relay:
        error = await refused(relay.url, "nope")
        assert (error.code, error.message) == (300, "who are you")
        ws, _, _ = await session(relay.url, "ok")
        await ws.close()
    assert seen == ["nope", "ok"]


async def test_valid_token_gets_welcome_and_scopes(relay):
    ws, session_id, params = await session(relay.url, "desk")
    assert params == []
    assert relay.sessions[session_id].scopes == Scopes(TOKENS["desk"])
    await ws.close()


async def test_second_hello_with_bad_token_disconnects(relay):
    ws, first, _ = await session(relay.url, "desk")
    await ws.send(encode(Hello(name="again", token="wrong")))
    error = await recv(ws)
    assert error.code == 300
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 2.0)
    assert ws.close_code == 1008
    await asyncio.sleep(0.05)
    assert first not in relay.sessions


# -- scopes per operation -----------------------------------------------------------------


async def test_subscribe_needs_a_read_scope_covering_the_pattern(relay):
    ws, _, _ = await session(relay.url, "desk")
    await ws.send(encode(Subscribe(id=1, pattern="/lights/*")))
    await ws.send(encode(Subscribe(id=2, pattern="/lights/**")))
    await round_trip(ws)  # allowed: no reply at all
    for sid, pattern in ((3, "/lights"), (4, "/**"), (5, "/mixer/*")):
        await ws.send(encode(Subscribe(id=sid, pattern=pattern)))
        error = await expect_error(ws, 301, pattern)
        assert "read" in error.message
    await ws.close()


async def test_write_scope_does_not_imply_read(relay):
    ws, _, _ = await session(relay.url, "writer")
    await ws.send(encode(Subscribe(id=1, pattern="/lights/**")))
    await expect_error(ws, 301, "/lights/**")
    await ws.send(encode(Set(address="/lights/1", value=0.5)))
    assert await recv(ws) == Ack(address="/lights/1", revision=1)
    await ws.send(encode(Get(address="/lights/1")))
    await expect_error(ws, 301, "/lights/1")
    await ws.close()


async def test_read_scope_does_not_allow_writes(relay):
    ws, _, _ = await session(relay.url, "reader")
    await ws.send(encode(Set(address="/lights/1", value=0.5)))
    error = await expect_error(ws, 301, "/lights/1")
    assert "write" in error.message
    await ws.send(encode(Publish(address="/lights/1", signal="event", value=1)))
    await expect_error(ws, 301, "/lights/1")
    await ws.close()


async def test_set_outside_the_scope_changes_nothing(relay):
    writer, _, _ = await session(relay.url, "desk")
    everyone, _, _ = await session(relay.url, "all")
    await everyone.send(encode(Subscribe(id=1, pattern="/**")))
    await round_trip(everyone)
    # /lights itself is not covered by write:/lights/** (glob_match needs the '/').
    for address in ("/lights", "/mixer/gain"):
        await writer.send(encode(Set(address=address, value=1.0)))
        await expect_error(writer, 301, address)
    await writer.send(encode(Set(address="/lights/2/level", value=0.25)))
    assert await recv(writer) == Ack(address="/lights/2/level", revision=1)
    echo = await recv(everyone)
    assert (type(echo), echo.address) == (Set, "/lights/2/level")  # the only one that got through
    await everyone.send(encode(Get(address="/lights")))
    await round_trip(everyone)  # no answer to the GET: never stored
    await writer.close()
    await everyone.close()


async def test_publish_forbidden_is_not_forwarded(relay):
    sender, _, _ = await session(relay.url, "writer")
    listener, _, _ = await session(relay.url, "all")
    await listener.send(encode(Subscribe(id=1, pattern="/**")))
    await round_trip(listener)
    await sender.send(encode(Publish(address="/cue/go", signal="event", value=1)))
    await expect_error(sender, 301, "/cue/go")
    await sender.send(encode(Publish(address="/lights/cue", signal="event", value=2)))
    await round_trip(sender)  # allowed: no reply
    got = await recv(listener)
    assert (got.address, got.value) == ("/lights/cue", 2)
    await sender.send(encode(Publish(address="/lights/sentinel", signal="event", value=3)))
    sentinel = await recv(listener)  # the next frame from that sender: nothing else came between
    assert (sentinel.address, sentinel.value) == ("/lights/sentinel", 3)
    await sender.close()
    await listener.close()


async def test_get_needs_read_scope(relay):
    writer, _, _ = await session(relay.url, "all")
    await writer.send(encode(Set(address="/lights/3", value=7)))
    await recv(writer)
    await writer.send(encode(Set(address="/mixer/gain", value=0.9)))
    await recv(writer)
    reader, _, _ = await session(relay.url, "reader")
    await reader.send(encode(Get(address="/lights/3")))
    reply = await recv(reader)
    assert isinstance(reply, Snapshot) and [p.value for p in reply.params] == [7]
    await reader.send(encode(Get(address="/mixer/gain")))
    await expect_error(reader, 301, "/mixer/gain")
    await writer.close()
    await reader.close()


async def test_scope_without_star_is_one_exact_address(relay):
    ws, _, _ = await session(relay.url, "exact")
    await ws.send(encode(Set(address="/mixer/gain", value=0.5)))
    assert await recv(ws) == Ack(address="/mixer/gain", revision=1)
    await ws.send(encode(Set(address="/mixer/gain/x", value=0.5)))
    await expect_error(ws, 301, "/mixer/gain/x")
    # Without '*' brackets are literal: read:/x/[ab] covers only the address "/x/[ab]".
    await ws.send(encode(Subscribe(id=1, pattern="/x/[ab]")))
    await round_trip(ws)
    await ws.send(encode(Get(address="/x/a")))
    await expect_error(ws, 301, "/x/a")
    await ws.close()


# -- what a session receives ----------------------------------------------------------------


async def test_snapshots_and_fan_out_only_carry_readable_addresses(relay):
    writer, _, _ = await session(relay.url, "all")
    for address in ("/lights", "/lights/1", "/mixer/gain"):
        await writer.send(encode(Set(address=address, value=1)))
        await recv(writer)
    reader, _, params = await session(relay.url, "reader")
    assert [p.address for p in params] == ["/lights/1"]  # the WELCOME snapshot is filtered
    await reader.send(encode(Subscribe(id=1, pattern="/lights/**")))
    snapshot = await recv(reader)
    assert [p.address for p in snapshot.params] == ["/lights/1"]
    # The live trie would deliver /lights to "/lights/**"; the read scope does not cover it.
    await writer.send(encode(Set(address="/lights", value=2)))
    await writer.send(encode(Set(address="/lights/1", value=3)))
    echo = await recv(reader)
    assert (echo.address, echo.value) == ("/lights/1", 3)
    await writer.send(encode(Set(address="/lights/2", value=4)))
    sentinel = await recv(reader)  # the writer's next echo: nothing else came between
    assert (sentinel.address, sentinel.value) == ("/lights/2", 4)
    await writer.close()
    await reader.close()


# -- BUNDLE ---------------------------------------------------------------------------------


async def test_bundle_with_one_forbidden_write_is_refused_whole_with_403(relay):
    ws, _, _ = await session(relay.url, "desk")
    await ws.send(encode(Subscribe(id=1, pattern="/lights/**")))
    await round_trip(ws)
    bundle = Bundle(messages=[Set(address="/lights/1", value=1),
                              Publish(address="/lights/go", signal="event", value=1),
                              Set(address="/mixer/gain", value=0.1)])
    await ws.send(encode(bundle))
    error = await expect_error(ws, 403, "/mixer/gain")
    assert "Bundle rejected" in error.message
    await ws.send(encode(Get(address="/lights/1")))
    await round_trip(ws)  # nothing was applied: no echo, no ACK, no value to GET
    await ws.send(encode(Bundle(messages=[Set(address="/lights/1", value=1),
                                          Set(address="/lights/2", value=2)])))
    replies = [await recv(ws) for _ in range(3)]
    assert [type(r) for r in replies] == [Set, Set, Ack]
    assert replies[2].revision == 1
    await ws.close()


# -- P2P signaling --------------------------------------------------------------------------


async def test_p2p_signal_and_announce_need_write_scope(relay):
    a, a_id, _ = await session(relay.url, "p2p")
    b, b_id, _ = await session(relay.url, "desk")
    await b.send(encode(Subscribe(id=1, pattern="/lights/**")))
    signal = Publish(address=f"/clasp/p2p/signal/{a_id}", signal="event",
                     value={"type": "offer", "from": b_id, "sdp": "v=0", "correlation_id": "c"})
    await b.send(encode(signal))
    await expect_error(b, 301, signal.address)
    await b.send(encode(Publish(address="/clasp/p2p/announce", signal="event", value={"from": b_id})))
    await expect_error(b, 301, "/clasp/p2p/announce")
    await round_trip(a)  # the relay routed b's messages before this PING: nothing reached a
    answer = Publish(address=f"/clasp/p2p/signal/{b_id}", signal="event",
                     value={"type": "answer", "from": a_id, "sdp": "v=0", "correlation_id": "c"})
    await a.send(encode(answer))
    got = await recv(b)  # delivered to its target, who needs no scope on the signal address
    assert (got.address, got.value["from"]) == (answer.address, a_id)
    await a.close()
    await b.close()


# -- glob semantics and scope parsing ----------------------------------------------------------


def test_scope_matching_follows_pattern_matches_of_the_reference():
    rows = load_json("patterns.json")
    accepted = [r for r in rows if isinstance(r["rust_pattern_matches"], bool)]
    wrong = [(r["pattern"], r["address"]) for r in accepted
             if scope_matches(r["pattern"], r["address"]) != r["rust_pattern_matches"]]
    assert wrong == [] and len(accepted) > 80
    for row in rows:
        if row not in accepted:  # patterns Address::parse rejects cannot be scopes
            with pytest.raises(ValueError, match="invalid pattern"):
                Scopes([f"read:{row['pattern']}"])
    assert not Scopes(["write:/lights/**"]).can_write("/lights")
    assert Scopes(["write:/lights/**"]).can_write("/lights/a/b")
    assert Scopes(["write:/lights/*"]).can_write("/lights/a")
    assert not Scopes(["write:/lights/*"]).can_write("/lights/a/b")


@pytest.mark.parametrize("scope, fragment", [
    ("admin", "expected 'read:PATTERN'"),
    ("delete:/a", "expected 'read:PATTERN'"),
    ("read:lights", "invalid pattern"),
    ("write:/a//b", "invalid pattern"),
])
def test_bad_scopes_are_refused_with_the_scope_named(scope, fragment):
    with pytest.raises(ValueError) as info:
        TokenAuth({"t": [scope]})
    assert fragment in str(info.value) and repr(scope) in str(info.value) and "'t'" in str(info.value)


def test_token_table_errors():
    with pytest.raises(ValueError, match="list of strings"):
        TokenAuth({"t": "read:/**"})
    with pytest.raises(ValueError, match="unknown tokens"):
        TokenAuth({"t": []}, expires={"u": 1.0})
    with pytest.raises(ValueError, match="empty"):
        TokenAuth({"": ["read:/**"]})


# -- open mode ---------------------------------------------------------------------------------


async def test_open_mode_ignores_tokens():
    async with Relay(host="127.0.0.1", port=0) as relay:
        for token in (None, "garbage"):
            ws, session_id, _ = await session(relay.url, token)
            assert relay.sessions[session_id].scopes is None
            address = f"/open/{token}"
            await ws.send(encode(Subscribe(id=1, pattern=address)))
            await ws.send(encode(Set(address=address, value=1)))
            replies = [await recv(ws) for _ in range(2)]
            assert [type(r) for r in replies] == [Set, Ack]
            await ws.send(encode(Get(address=address)))
            assert isinstance(await recv(ws), Snapshot)
            await ws.close()


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_token_options_and_tokens_file_give_the_same_config(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"desk": ["read:/lights/**", "write:/x/{a,b}"], "ro": ["read:/**"]}))
    args = build_parser().parse_args([
        "relay", "--token", "desk=read:/lights/**,write:/x/{a,b}", "--token", "ro=read:/**"])
    from_options = relay_auth(args.token, args.tokens_file)
    args = build_parser().parse_args(["relay", "--tokens-file", str(path)])
    from_file = relay_auth(args.token, args.tokens_file)
    expected = TokenAuth({"desk": ["read:/lights/**", "write:/x/{a,b}"], "ro": ["read:/**"]})
    assert from_options == from_file == expected
    assert from_options.tokens["desk"].write == ("/x/{a,b}",)  # the pattern's comma survives
    assert relay_auth([], None) is None


def test_cli_bad_auth_options(tmp_path):
    with pytest.raises(ValueError, match="TOKEN=SCOPE"):
        relay_auth(["no-equals-sign"], None)
    with pytest.raises(ValueError, match="'admin'"):
        relay_auth(["t=admin"], None)
    bad = tmp_path / "bad.json"
    bad.write_text('{"t": "read:/**"}')
    with pytest.raises(ValueError, match="expected"):
        relay_auth([], str(bad))
    with pytest.raises(ValueError, match="missing.json"):
        relay_auth([], str(tmp_path / "missing.json"))


async def test_cli_relay_with_token_runs_authenticated():
    import signal

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clasp_fast", "relay", "--host", "127.0.0.1", "--port", "0",
        "--token", "cli=read:/cli/**,write:/cli/**", stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 15.0)).decode()
        url = line.rsplit(" ", 1)[1].strip()
        with pytest.raises(ProtocolError) as info:
            await ClaspClient.connect(url, reconnect=False)
        assert info.value.code == 300
        async with await ClaspClient.connect(url, token="cli", reconnect=False) as client:
            assert await client.set("/cli/x", 1) == 1
            with pytest.raises(ProtocolError) as info:
                await client.set("/elsewhere", 1)
            assert info.value.code == 301
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10.0) in (0, 130)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- client ------------------------------------------------------------------------------------


async def test_client_connect_raises_protocol_error_on_auth_failure(relay):
    for token, code in ((None, 300), ("bad", 300), ("old", 302)):
        with pytest.raises(ProtocolError) as info:
            await ClaspClient.connect(relay.url, token=token)
        assert info.value.code == code
    async with await ClaspClient.connect(relay.url, token="desk", reconnect=False) as client:
        assert await client.set("/lights/9", 0.1) == 1


async def test_client_stops_reconnecting_when_its_token_is_refused():
    calls = []
    table = TokenAuth({"t": ["read:/**", "write:/**"]})

    def validator(token: str) -> Scopes:
        calls.append(token)
        return table(token)

    async with Relay(host="127.0.0.1", port=0, auth=validator) as relay:
        client = await ClaspClient.connect(relay.url, token="t", reconnect_initial_delay=0.02,
                                           reconnect_max_delay=0.02)
        errors: list[Exception] = []
        client.on_error(errors.append)
        table.revoke("t")
        (session,) = relay.sessions.values()
        session.outbox.close(1011, "test: drop the connection")
        # The receive loop is what reconnects: once it has ended, no further attempt can happen.
        await asyncio.wait_for(asyncio.shield(client._receiver), 5.0)
        assert calls == ["t", "t"]
        assert len(errors) == 1 and isinstance(errors[0], ProtocolError) and errors[0].code == 300
        assert not client.connected
        await client.close()

"""ClaspP2P without a relay: signaling in memory or over a byte stream, peers from a static discovery.
Real aiortc connections on loopback."""

from __future__ import annotations

import asyncio

import pytest

from clasp_fast import ClaspP2P, InMemorySignaling, Peer
from clasp_fast.errors import SignalingError, TransportError
from clasp_fast.p2p import PeerInfo, StaticDiscovery
from clasp_fast.signaling import StreamSignaling
from clasp_fast.webrtc import WebRtcConfig

from .test_p2p import wait_until

TIMEOUT = 15


def loopback() -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"])


def pair(**options) -> tuple[ClaspP2P, ClaspP2P]:
    """alice (session "a") and bob (session "b"), each knowing the other by client id."""
    sig_a, sig_b = InMemorySignaling.pair("a", "b")
    alice = ClaspP2P(sig_a, client_id="alice", rtc_config=loopback(),
                     discovery=StaticDiscovery([PeerInfo(session_id="b", client_id="bob")]), **options)
    bob = ClaspP2P(sig_b, client_id="bob", rtc_config=loopback(),
                   discovery=StaticDiscovery([PeerInfo(session_id="a", client_id="alice")]), **options)
    return alice, bob


async def test_two_endpoints_connect_by_client_id_over_in_memory_signaling() -> None:
    alice, bob = pair()
    async with alice, bob:
        assert alice.session_id == "a" and alice.client is None
        assert {p.client_id for p in alice.peers()} == {"bob"} and alice.find_peer("bob").source == "static"
        to_bob = await asyncio.wait_for(alice.connect_to_peer("bob"), TIMEOUT)
        to_alice = await asyncio.wait_for(bob.incoming().__anext__(), TIMEOUT)
        assert to_bob.client_id == "bob" and to_alice.client_id == "alice"
        got: list[tuple[str, object]] = []
        to_alice.on("/**", lambda value, address: got.append((address, value)))
        await to_bob.set("/gain", 0.5)
        await to_bob.emit("/cue", "go")
        await wait_until(lambda: len(got) == 2, what="two messages")
        assert got == [("/gain", 0.5), ("/cue", "go")]
        assert await to_alice.get("/gain") == 0.5  # answered by alice, who set it
        assert await alice.connect_to_peer("b") is to_bob  # by session id: the open connection
        closed = asyncio.get_running_loop().create_future()
        bob.on_disconnection(lambda peer, reason: closed.done() or closed.set_result(reason))
        await to_bob.close()
        assert await asyncio.wait_for(closed, TIMEOUT) in ("User requested disconnect", "reliable channel closed")
        assert bob.connections == [] and alice.connections == []


async def test_refusal_and_errors_reach_on_error_without_a_relay() -> None:
    alice, bob = pair(accept=lambda info: info.client_id != "alice")
    async with alice, bob:
        with pytest.raises(TransportError, match="refused") as caught:
            await asyncio.wait_for(alice.connect_to_peer("bob"), TIMEOUT)
        assert caught.value.step == "offer"
        errors: list[BaseException] = []
        bob.on_error(errors.append)
        # A candidate for a connection bob never heard of is reported and changes nothing.
        await alice.signaling.send_signal("b", {"type": "ice_candidate", "candidate": "{}", "correlation_id": "x"})
        await wait_until(lambda: errors, what="the report")
        assert isinstance(errors[0], SignalingError) and "unknown correlation id" in str(errors[0])


async def test_without_discovery_an_unknown_client_id_is_a_discovery_error() -> None:
    hub: dict = {}
    lonely = ClaspP2P(InMemorySignaling("a", hub), client_id="lonely", rtc_config=loopback(), discovery_timeout=0.2)
    async with lonely:
        assert lonely.peers() == []  # no discovery given: nothing known
        with pytest.raises(TransportError) as caught:
            await lonely.connect_to_peer("nobody")
        assert caught.value.step == "discovery"


async def test_stream_signaling_carries_a_connection() -> None:
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    far_reader, far_writer = await asyncio.wait_for(accepted, TIMEOUT)
    near = ClaspP2P(StreamSignaling("near", reader, writer), client_id="near", rtc_config=loopback(),
                    discovery=StaticDiscovery([PeerInfo(session_id="far", client_id="far")]))
    far = ClaspP2P(StreamSignaling("far", far_reader, far_writer), client_id="far", rtc_config=loopback())
    try:
        async with near, far:
            peer: Peer = await asyncio.wait_for(near.connect_to_peer("far"), TIMEOUT)
            remote = await asyncio.wait_for(far.incoming().__anext__(), TIMEOUT)
            got: list[int] = []
            remote.on("/n", lambda value, address: got.append(value))
            await peer.set("/n", 7)
            await wait_until(lambda: got == [7], what="the SET over the stream-signaled connection")
    finally:
        server.close()
        await server.wait_closed()


def test_signaling_must_be_a_url_a_client_or_a_channel() -> None:
    with pytest.raises(TypeError, match="SignalingChannel"):
        ClaspP2P(42)  # type: ignore[arg-type]

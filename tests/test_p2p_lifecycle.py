"""Connection lifecycle of ClaspP2P against a peer clasp_fast did not write (plain aiortc, reference procedure):
teardown that loses nothing either way, every ICE candidate applied whatever its timing, and offers
that claim a live peer's session."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from clasp_fast import ClaspP2P, Peer
from clasp_fast.client import ClaspClient
from clasp_fast.codec import decode_frame, encode
from clasp_fast.errors import SignalingError
from clasp_fast.messages import Set
from clasp_fast.webrtc import RELIABLE_LABEL, WebRtcConfig, WebRtcTransport

from .raw_peer import RawPeer, blackhole, silence
from .test_p2p import relay_running, wait_until

TIMEOUT = 15
COUNT = 2000
PAYLOAD = bytes(1000)  # 2,000 x 1 KB: SCTP still has data in flight when the signal overtakes it
ROLES = ["clasp_fast offers", "clasp_fast answers"]


def loopback(**options) -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], **options)


def frame(i: int) -> bytes:
    return encode(Set(address="/lifecycle/value", value=i.to_bytes(4, "big") + PAYLOAD))


def index(value: bytes) -> int:
    return int.from_bytes(value[:4], "big")


@contextlib.asynccontextmanager
async def connected_pair(role: str, config: WebRtcConfig | None = None, **raw_options):
    """A ClaspP2P and a raw aiortc peer connected through the embedded relay, in ``role``.

    Yields (p2p, peer, raw, errors): ``peer`` is the ClaspP2P's Peer for the raw peer, ``errors``
    what reached ``on_error``."""
    async with relay_running() as relay:
        client = await ClaspClient.connect(relay.url)
        raw = RawPeer(client, **raw_options)
        errors: list[Exception] = []
        try:
            async with ClaspP2P(relay.url, client_id="fast", rtc_config=config or loopback(),
                                presence_interval=0.5) as p2p:
                p2p.on_error(errors.append)
                incoming: list[Peer] = []
                p2p.on_connection(incoming.append)
                if role == "clasp_fast offers":
                    connecting = asyncio.ensure_future(p2p.connect_to_peer(client.session_id))
                    await raw.answer(await raw.wait_for_offer())
                    peer = await asyncio.wait_for(connecting, TIMEOUT)
                else:
                    await asyncio.wait_for(raw.offer(p2p.session_id), TIMEOUT)
                    await wait_until(lambda: incoming, what="the incoming connection")
                    peer = incoming[0]
                await wait_until(lambda: peer.connected, what="the connection")
                yield p2p, peer, raw, errors
        finally:
            await raw.close()
            await client.close()


def closed_future(p2p: ClaspP2P) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    p2p.on_disconnection(lambda peer, reason: future.done() or future.set_result(reason))
    return future


def generous() -> WebRtcConfig:
    # 2 MB through stock aiortc can take longer than the default 2 s on a loaded machine; the tests
    # are about order and completeness, which hold whenever the bound is not reached.
    return loopback(close_timeout=15.0)


@pytest.mark.parametrize("role", ROLES)
async def test_peer_disconnecting_right_after_its_data_loses_nothing(role: str) -> None:
    async with connected_pair(role, generous()) as (p2p, peer, raw, _):
        got: list[int] = []
        peer.on("/lifecycle/value", lambda value, address: got.append(index(value)))
        closed = closed_future(p2p)
        for i in range(COUNT):
            raw.send(frame(i))
        await raw.signal_now("disconnected", reason="raw peer done")  # no delay: data still in flight
        started = time.monotonic()
        assert await asyncio.wait_for(closed, TIMEOUT) == "raw peer done"
        assert got == list(range(COUNT)), f"{len(got)} of {COUNT} after {time.monotonic() - started:.2f} s"
        # clasp_fast answers with its own disconnected once the data is in.
        await asyncio.wait_for(raw.remote_disconnected.wait(), TIMEOUT)
        assert [s["type"] for s in raw.signals][-1] == "disconnected"


@pytest.mark.parametrize("role", ROLES)
async def test_close_delivers_everything_to_a_peer_that_drops_the_connection_on_disconnected(role: str) -> None:
    async with connected_pair(role, generous()) as (p2p, peer, raw, _):
        for i in range(COUNT):
            await peer.send(Set(address="/lifecycle/value", value=i.to_bytes(4, "big") + PAYLOAD))
        await peer.close()
        assert peer.transport.close_reason == "User requested disconnect"
        assert raw.remote_disconnected.is_set()
        received = raw.received[RELIABLE_LABEL]
        assert [index(decode_frame(data).message.value) for data in received] == list(range(COUNT))


async def test_teardown_toward_a_peer_that_never_closes_is_bounded_by_close_timeout() -> None:
    config = loopback(close_timeout=1.0)
    async with connected_pair("clasp_fast answers", config) as (p2p, peer, raw, _):
        closed = closed_future(p2p)
        raw.drop_on_disconnected = False
        await raw.signal_now("disconnected", reason="hung")
        blackhole(raw.pc)  # the peer's stack never answers the stream resets
        started = time.monotonic()
        assert await asyncio.wait_for(closed, TIMEOUT) == "hung"
        assert 0.9 <= time.monotonic() - started < 3.0
    async with connected_pair("clasp_fast offers", config) as (p2p, peer, raw, _):
        raw.drop_on_disconnected = False
        blackhole(raw.pc)
        started = time.monotonic()
        await asyncio.wait_for(peer.close(), TIMEOUT)
        assert 0.9 <= time.monotonic() - started < 3.0 and peer.state == "closed"


@pytest.mark.parametrize("role", ROLES)
async def test_candidate_right_behind_the_offer_or_answer_is_applied(role: str) -> None:
    # The raw peer ignores clasp_fast's candidates: only clasp_fast's checks, toward the raw peer's
    # host candidate, can form the pair.
    async with connected_pair(role, apply_remote_candidates=False) as (p2p, peer, raw, errors):
        pair = peer.transport.selected_candidate_pair()
        assert pair.remote_type == "host" and pair.remote_address[0] == "127.0.0.1"
        assert errors == []


async def test_candidate_for_an_unknown_correlation_id_is_reported_not_applied() -> None:
    async with connected_pair("clasp_fast answers") as (p2p, peer, raw, errors):
        candidate = '{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host","sdpMid":"0"}'
        raw.correlation_id, live = "somebody-else", raw.correlation_id
        await raw.signal_now("ice_candidate", candidate=candidate)
        await wait_until(lambda: errors, what="the report")
        assert isinstance(errors[0], SignalingError) and "somebody-else" in str(errors[0])
        remote = peer.transport.ice_connection()._remote_candidates
        assert all(c.port != 9 for c in remote)
        raw.correlation_id = live
        assert peer.connected


async def forged_offer(claimed_sender: str, target: str) -> tuple[dict, RTCPeerConnection]:
    """A real offer (SDP from a real peer connection) whose "from" claims another session."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel(RELIABLE_LABEL)
    offer = await pc.createOffer()
    return {"type": "offer", "from": claimed_sender, "sdp": offer.sdp,
            "correlation_id": f"{claimed_sender}-{target}-forged", "features": ["batch", "keepalive"]}, pc


async def test_forged_offer_for_a_live_connection_is_ignored_and_the_connection_loses_nothing() -> None:
    async with relay_running() as relay:
        async with ClaspP2P(relay.url, client_id="victim", rtc_config=loopback(), presence_interval=0.5) as victim, \
                ClaspP2P(relay.url, client_id="friend", rtc_config=loopback(), presence_interval=0.5) as friend:
            errors: list[Exception] = []
            victim.on_error(errors.append)
            closed: list[str | None] = []
            victim.on_disconnection(lambda peer, reason: closed.append(reason))
            signals_to_friend: list[dict] = []
            friend.client.signaling.on_signal(signals_to_friend.append)
            await friend.wait_for_peer("victim", TIMEOUT)
            to_victim = await asyncio.wait_for(friend.connect_to_peer("victim"), TIMEOUT)
            await wait_until(lambda: victim.connection(friend.session_id) is not None, what="the connection")
            at_victim = victim.connection(friend.session_id)
            got: list[int] = []
            at_victim.on("/traffic", lambda value, address: got.append(value))

            async def traffic() -> None:
                for i in range(400):
                    await to_victim.set("/traffic", i)
                    if i % 20 == 0:
                        await asyncio.sleep(0.005)

            sending = asyncio.ensure_future(traffic())
            await wait_until(lambda: len(got) > 50, what="traffic")
            # The relay would refuse the forged "from"; a reference router does not check it, so the
            # offer is put straight on the victim's signaling path.
            offer, attacker = await forged_offer(friend.session_id, victim.session_id)
            before = len(signals_to_friend)
            victim.client.signaling.deliver(offer)
            await wait_until(lambda: errors, what="the forged offer's report")
            await asyncio.wait_for(sending, TIMEOUT)
            await wait_until(lambda: len(got) == 400, what="every SET")
            assert got == list(range(400))
            assert isinstance(errors[0], SignalingError) and "ignored" in str(errors[0]) and len(errors) == 1
            assert victim.connection(friend.session_id) is at_victim and at_victim.connected and to_victim.connected
            assert closed == []
            # Nothing was sent to the claimed sender: a sentinel signal is the first thing it gets.
            await victim.client.signaling.send_signal(friend.session_id, {
                "type": "connected", "correlation_id": at_victim.transport.correlation_id, "sentinel": "1"})
            await wait_until(lambda: len(signals_to_friend) > before, what="the sentinel")
            assert [s.get("sentinel") for s in signals_to_friend[before:]] == ["1"]
            await attacker.close()


async def test_peer_that_really_restarted_its_connection_reconnects() -> None:
    async with relay_running() as relay:
        config = loopback(close_timeout=1.0)
        async with ClaspP2P(relay.url, client_id="server", rtc_config=config, presence_interval=0.5) as server:
            closed: list[str | None] = []
            server.on_disconnection(lambda peer, reason: closed.append(reason))
            client = await ClaspClient.connect(relay.url)
            transports: dict[str, WebRtcTransport] = {}
            seen: list[dict] = []

            async def dispatch() -> None:
                async for signal in client.signaling:
                    seen.append(signal)
                    transport = transports.get(str(signal["correlation_id"]))
                    if transport is not None:
                        transport.handle_signal(signal)

            async def connect() -> WebRtcTransport:
                transport = WebRtcTransport(config, client.signaling, server.session_id, pump_signals=False,
                                            correlation_id=f"{client.session_id}-{server.session_id}-{len(transports)}")
                transports[transport.correlation_id] = transport
                await asyncio.wait_for(transport.start(), TIMEOUT)
                return transport

            pump = asyncio.ensure_future(dispatch())
            try:
                first = await connect()
                await wait_until(lambda: server.connection(client.session_id) is not None, what="the first connection")
                old = server.connection(client.session_id)
                silence(first.ice_connection())  # the old connection dies without a word
                second = await connect()
                await wait_until(lambda: server.connection(client.session_id) not in (None, old),
                                 what="the new connection")
                new = server.connection(client.session_id)
                assert new.transport.correlation_id == second.correlation_id
                assert closed == ["replaced by a new connection"] and old.state == "closed"
                got: list[int] = []
                new.on("/after", lambda value, address: got.append(value))
                await second.sender.send(Set(address="/after", value=1))
                await wait_until(lambda: got == [1], what="data on the new connection")
                # The old connection was not ended with a "disconnected": the peer would apply it.
                assert not any(s["type"] == "disconnected" for s in seen)
            finally:
                pump.cancel()
                for transport in transports.values():
                    await transport.abort("test over")
                await client.close()

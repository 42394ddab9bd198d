"""ClaspP2P and Peer over the embedded relay and real aiortc connections on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
import weakref

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_to_sdp

from clasp_fast import ClaspP2P, Peer, TransportError
from clasp_fast.errors import ProtocolError
from clasp_fast.client import ClaspClient
from clasp_fast.codec import decode, decode_frame, encode
from clasp_fast.ice import install_gathering_policy, is_loopback
from clasp_fast.messages import Get, Param, Ping, Publish, Set, Snapshot
from clasp_fast.p2p import PRESENCE_PREFIX
from clasp_fast.relay import Relay
from clasp_fast.signaling import ANNOUNCE_ADDRESS
from clasp_fast.webrtc import RELIABLE_LABEL, WebRtcConfig, parse_candidate

TIMEOUT = 15


def loopback() -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=0.5, keepalive_timeout=5.0)


@contextlib.asynccontextmanager
async def relay_running():
    relay = await Relay.start(host="127.0.0.1", port=0)
    try:
        yield relay
    finally:
        await relay.close()


async def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def p2p(relay: Relay, client_id: str, **options) -> ClaspP2P:
    options.setdefault("presence_interval", 0.5)
    return ClaspP2P(relay.url, client_id=client_id, rtc_config=loopback(), **options)


async def test_late_joiner_finds_earlier_peer_by_client_id_and_every_operation_works_both_ways() -> None:
    async with relay_running() as relay:
        # alice refreshes nothing during the test, and her announce went out before bob existed.
        async with p2p(relay, "alice", presence_interval=30.0) as alice:
            async with p2p(relay, "bob") as bob:
                # bob learns alice from the presence SNAPSHOT: it precedes the ACK of bob's own
                # presence, which connect() waited for, so alice is known before anything else
                # could tell bob about her (alice answers bob's announce only after it).
                info = bob.find_peer("alice")
                assert info is not None and info.source == "presence"
                assert info.session_id == alice.session_id
                assert "seq2" not in info.features and "presence" in info.features
                await alice.wait_for_peer("bob", TIMEOUT)
                assert {p.client_id for p in alice.peers()} == {"bob"}
                connected_events: list[Peer] = []
                alice.on_connection(connected_events.append)

                to_alice = await asyncio.wait_for(bob.connect_to_peer("alice"), TIMEOUT)
                to_bob = await asyncio.wait_for(alice.incoming().__anext__(), TIMEOUT)
                assert connected_events == [to_bob]
                assert to_alice.client_id == "alice" and to_bob.client_id == "bob"
                assert to_alice.session_id == alice.session_id and to_bob.session_id == bob.session_id
                # A second connect_to_peer returns the open connection, by client id or session id.
                assert await bob.connect_to_peer("alice") is to_alice
                assert await bob.connect_to_peer(alice.session_id) is to_alice
                pair = to_alice.transport.selected_candidate_pair()
                assert is_loopback(pair.local_address[0]) and is_loopback(pair.remote_address[0])

                await exchange_everything(to_alice, to_bob, "/x")
                assert to_alice.connected, to_alice.transport.close_reason
                await exchange_everything(to_bob, to_alice, "/y")

                closed = asyncio.get_running_loop().create_future()
                alice.on_disconnection(lambda peer, reason: closed.set_result((peer, reason)))
                await to_alice.close()
                peer, reason = await asyncio.wait_for(closed, TIMEOUT)
                assert peer is to_bob  # the reason: the disconnected signal or the channel close, whichever came first
                assert reason in ("User requested disconnect", "reliable channel closed")
                assert to_bob.state == "closed" and alice.connections == []


async def exchange_everything(sender: Peer, receiver: Peer, root: str) -> None:
    """set, emit, stream (numpy), gesture, on with a type filter, get, create_data_channel, stats."""
    got: list[tuple] = []
    params: list[tuple] = []
    sub = receiver.on(f"{root}/**",
                      lambda value, address, message: got.append((address, value, type(message).__name__)))

    @receiver.on(f"{root}/**", types=["param"])
    def only_params(value, address):
        params.append((address, value))

    assert await sender.set(f"{root}/param", 1.5) == 1
    assert await sender.set(f"{root}/param", 2.5) == 2
    await sender.emit(f"{root}/event", {"n": 1, "s": "text"})
    await sender.stream(f"{root}/stream", np.array([0.25, -1.0, 3.0]), rate=100)
    await sender.gesture(f"{root}/gesture", 7, "move", {"x": 0.5})
    await wait_until(lambda: len(got) == 5, what="five messages")
    assert got[0] == (f"{root}/param", 1.5, "Set") and got[1] == (f"{root}/param", 2.5, "Set")
    assert got[2] == (f"{root}/event", {"n": 1, "s": "text"}, "Publish")
    address, samples, kind = got[3]
    assert address == f"{root}/stream" and kind == "Publish"
    assert isinstance(samples, np.ndarray) and samples.tolist() == [0.25, -1.0, 3.0]
    assert got[4] == (f"{root}/gesture", {"x": 0.5}, "Publish")
    assert params == [(f"{root}/param", 1.5), (f"{root}/param", 2.5)]

    # Each side holds the param and answers GET with it; an unknown address is a KeyError.
    assert await receiver.get(f"{root}/param") == 2.5
    assert await sender.get(f"{root}/param") == 2.5
    with pytest.raises(KeyError, match=f"{root}/nothing"):
        await sender.get(f"{root}/nothing")

    receiver.off(sub)
    await sender.emit(f"{root}/after-off", 1)
    sentinel: list[str] = []
    receiver.on(f"{root}/sentinel", lambda value, address: sentinel.append(address))
    await sender.emit(f"{root}/sentinel", 2)  # sent after: once it is in, so is the one before it
    await wait_until(lambda: sentinel == [f"{root}/sentinel"], what="the sentinel")
    assert [entry[0] for entry in got[5:]] == []  # the removed subscription saw neither
    assert params == [(f"{root}/param", 1.5), (f"{root}/param", 2.5)]

    # A channel for a prefix, partially reliable; both sides route that prefix to it.
    label = f"clasp/chan-{sender.session_id[:8]}"
    spec = await sender.create_data_channel(f"/chan-{sender.session_id[:8]}", ordered=False, max_retransmits=2)
    assert spec.label == label and spec.max_retransmits == 2
    await wait_until(lambda: label in receiver.transport.channels, what="remote channel")
    assert sender.transport.channel_for(Set(address=f"{spec.prefix}/v", value=1)) == label
    assert receiver.transport.channel_for(Set(address=f"{spec.prefix}/v", value=1)) == label
    on_channel: list = []
    receiver.on(f"{spec.prefix}/**", lambda value, address: on_channel.append(value))
    await sender.set(f"{spec.prefix}/v", 42)
    await wait_until(lambda: on_channel == [42], what="message on the new channel")

    stats = sender.stats()
    assert stats.sent["set"] == 3 and stats.sent["stream"] == 1 and stats.sent["gesture"] == 1
    assert receiver.stats().received["set"] == 3 and receiver.stats().transport.state == "connected"


async def test_refused_offer_fails_fast_with_a_clear_error_and_later_accept_works() -> None:
    async with relay_running() as relay:
        decisions = [False, True]
        asked: list[str | None] = []

        def accept(info):
            asked.append(info.client_id)
            return decisions.pop(0)

        async with p2p(relay, "door", accept=accept) as door, p2p(relay, "knocker") as knocker:
            await knocker.wait_for_peer("door", TIMEOUT)
            started = time.monotonic()
            with pytest.raises(TransportError, match="refused") as caught:
                await knocker.connect_to_peer("door")
            assert caught.value.step == "offer" and caught.value.peer == door.session_id
            assert time.monotonic() - started < 10  # not the 30 s connection timeout
            peer = await asyncio.wait_for(knocker.connect_to_peer("door"), TIMEOUT)
            assert peer.connected and asked == ["knocker", "knocker"]


async def test_unknown_peer_is_a_discovery_error() -> None:
    async with relay_running() as relay:
        async with p2p(relay, "lonely", discovery_timeout=0.5) as lonely:
            with pytest.raises(TransportError) as caught:
                await lonely.connect_to_peer("nobody")
            assert caught.value.step == "discovery" and caught.value.peer == "nobody"


async def test_both_sides_connecting_at_once_end_with_one_connection() -> None:
    async with relay_running() as relay:
        async with p2p(relay, "left") as left, p2p(relay, "right") as right:
            await left.wait_for_peer("right", TIMEOUT)
            await right.wait_for_peer("left", TIMEOUT)
            a, b = await asyncio.wait_for(
                asyncio.gather(left.connect_to_peer("right"), right.connect_to_peer("left")), TIMEOUT)
            assert a.connected and b.connected
            assert a.transport.correlation_id == b.transport.correlation_id
            got = []
            b.on("/glare", lambda value, address: got.append(value))
            await a.set("/glare", 1)
            await wait_until(lambda: got == [1])


async def test_presence_param_and_reference_announce_on_the_wire() -> None:
    async with relay_running() as relay:
        observer = await ClaspClient.connect(relay.url)
        announces: list = []
        presence: dict = {}
        try:
            await observer.subscribe(ANNOUNCE_ADDRESS, lambda value, address: announces.append(value))
            await observer.subscribe(PRESENCE_PREFIX + "*", lambda value, address: presence.__setitem__(address, value))
            async with p2p(relay, "visible") as visible:
                await wait_until(lambda: announces and presence, what="announce and presence")
                announce = announces[0]
                assert announce["session_id"] == visible.session_id and announce["p2p_capable"] is True
                assert {"webrtc", "reliable", "unreliable"} <= set(announce["features"])
                assert announce["client_id"] == "visible"
                value = presence[PRESENCE_PREFIX + visible.session_id]
                assert value == {"client_id": "visible", "session_id": visible.session_id,
                                 "features": list(visible.features), "ttl": visible.presence_ttl}
                assert await observer.get(PRESENCE_PREFIX + visible.session_id) == value
                count = len(announces)
                await wait_until(lambda: len(announces) > count, what="a refreshed announce")
            # Leaving withdraws the presence entry (a null value, expiring soon).
            await wait_until(lambda: presence[PRESENCE_PREFIX + visible.session_id] is None, what="withdrawal")
        finally:
            await observer.close()


async def reference_answerer(client: ClaspClient, received: list[bytes]):
    """A peer the way the Rust reference client behaves: it neither announces nor sets presence,
    answers without ``features`` and sends one frame per DataChannel message."""
    signaling = client.signaling
    offer = None
    while offer is None:
        signal = await signaling.recv_signal()
        if signal["type"] == "offer":
            offer = signal
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels = {}

    @pc.on("datachannel")
    def on_datachannel(dc):
        channels[dc.label] = dc
        dc.on("message", received.append)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
    install_gathering_policy(pc.sctp.transport.transport.iceGatherer._connection,
                             host_addresses=["127.0.0.1"], udp_receive_buffer=None)
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    cid = offer["correlation_id"]
    await signaling.send_signal(offer["from"], {"type": "answer", "sdp": answer.sdp, "correlation_id": cid})
    for c in pc.sctp.transport.transport.iceGatherer.getLocalCandidates():
        line = json.dumps({"candidate": "candidate:" + candidate_to_sdp(c), "sdpMid": "0", "sdpMLineIndex": 0,
                           "usernameFragment": None})
        await signaling.send_signal(offer["from"], {"type": "ice_candidate", "candidate": line, "correlation_id": cid})

    async def apply_candidates():
        while True:
            signal = await signaling.recv_signal()
            if signal["type"] == "ice_candidate":
                await pc.addIceCandidate(parse_candidate(signal["candidate"]))

    task = asyncio.ensure_future(apply_candidates())
    while RELIABLE_LABEL not in channels or channels[RELIABLE_LABEL].readyState != "open":
        await asyncio.sleep(0.01)
    return pc, channels, task


async def test_reference_only_peer_is_reachable_by_session_id() -> None:
    async with relay_running() as relay:
        reference = await ClaspClient.connect(relay.url)
        received: list[bytes] = []
        async with p2p(relay, "modern") as modern:
            assert modern.find_peer(reference.session_id) is None  # it never announced itself
            answering = asyncio.ensure_future(reference_answerer(reference, received))
            peer = await asyncio.wait_for(modern.connect_to_peer(reference.session_id), TIMEOUT)
            pc, channels, pump = await asyncio.wait_for(answering, TIMEOUT)
            try:
                assert peer.client_id is None and not peer.transport.batching
                for i in range(50):
                    await peer.set("/ref/value", i)
                await peer.emit("/ref/event", "go")
                await wait_until(lambda: len(received) == 51, what="51 frames at the reference peer")
                for i, data in enumerate(received[:50]):
                    assert decode_frame(data).size == len(data)  # exactly one frame per message
                    assert data == encode(Set(address="/ref/value", value=i))
                assert decode(received[50]) == Publish(address="/ref/event", signal="event", value="go",
                                                       phase="start")
                got = []
                peer.on("/from-ref", lambda value, address: got.append(value))
                channels[RELIABLE_LABEL].send(encode(Set(address="/from-ref", value=7)))
                await wait_until(lambda: got == [7], what="a frame from the reference peer")
                assert peer.params["/from-ref"] == 7
            finally:
                pump.cancel()
                await pc.close()
        await reference.close()


async def connected_pair(near: ClaspP2P, far: ClaspP2P) -> tuple[Peer, Peer]:
    """Connect ``near`` to ``far``; return (near's peer, far's peer)."""
    to_far = await asyncio.wait_for(near.connect_to_peer(far.client_id), TIMEOUT)
    await wait_until(lambda: far.connection(near.session_id) is not None, what="the far side of the connection")
    return to_far, far.connection(near.session_id)


async def test_get_timeouts_leave_no_state_and_answers_are_matched_to_their_requests() -> None:
    async with relay_running() as relay:
        async with p2p(relay, "asker") as asker, p2p(relay, "holder") as holder:
            await asker.wait_for_peer("holder", TIMEOUT)
            errors: list[Exception] = []
            asker.on_error(errors.append)
            to_holder, to_asker = await connected_pair(asker, holder)
            await to_holder.set("/held", 7)
            swallowed: list[str] = []
            silent = True

            def swallow_gets(peer, message) -> bool:  # a peer that does not answer, like a reference peer
                if silent and isinstance(message, Get):
                    swallowed.append(message.address)
                    return True
                return False

            to_asker.add_message_hook(swallow_gets)
            for i in range(1000):
                with pytest.raises(TransportError) as caught:
                    await to_holder.get(f"/timeout/{i % 7}", timeout=0.001)
                assert caught.value.step == "get"
            assert len(to_holder._gets) == 0  # nothing kept for the 1,000 requests that timed out
            await wait_until(lambda: len(swallowed) == 1000, what="every GET at the holder")

            silent = False
            with pytest.raises(KeyError, match="/missing"):  # not a TransportError: the answer is matched
                await to_holder.get("/missing")
            assert await to_holder.get("/held") == 7

            # An unsolicited SNAPSHOT arriving while a GET waits answers nothing; the real answer does.
            silent = True
            pending = asyncio.ensure_future(to_holder.get("/held"))
            await wait_until(lambda: swallowed[-1:] == ["/held"] and len(swallowed) == 1001, what="the GET")
            await to_asker.send(Snapshot(params=[Param("/other", 1, 1)]), reliable=True)
            await to_asker.send(Snapshot(params=[Param("/held", 8, 2)]), reliable=True)
            assert await asyncio.wait_for(pending, TIMEOUT) == 8
            # With no GET waiting at all, it is reported and the connection goes on.
            await to_asker.send(Snapshot(params=[]), reliable=True)
            await to_asker.set("/sentinel", 1)
            await wait_until(lambda: to_holder.params.get("/sentinel") == 1, what="the sentinel")
            assert to_holder.stats().received["unsolicited_snapshot"] == 2
            unsolicited = [e for e in errors if "answers no waiting GET" in str(e)]
            assert len(unsolicited) == 2 and "/other" in str(unsolicited[0])
            assert isinstance(unsolicited[0], ProtocolError) and to_holder.connected


async def test_closed_connections_are_released() -> None:
    """Connections nobody iterates incoming() for are not kept once closed (each held an aiortc stack)."""
    async with relay_running() as relay:
        async with p2p(relay, "dialer") as dialer, p2p(relay, "listener") as listener:
            await dialer.wait_for_peer("listener", TIMEOUT)
            released: list[weakref.ref] = []
            for _ in range(3):
                to_listener, to_dialer = await connected_pair(dialer, listener)
                await to_listener.set("/cycle", 1)
                await wait_until(lambda d=to_dialer: d.params.get("/cycle") == 1, what="the message")
                for peer in (to_listener, to_dialer):
                    released += [weakref.ref(peer), weakref.ref(peer.transport),
                                 weakref.ref(peer.transport.peer_connection)]
                await to_listener.close()
                await wait_until(lambda d=to_dialer: d.state == "closed", what="the far side closing")
                del to_listener, to_dialer, peer
            await asyncio.sleep(0.2)  # the close callbacks run
            gc.collect()
            alive = [ref() for ref in released if ref() is not None]
            assert alive == [], f"{len(alive)} objects of closed connections are still alive: {alive[:3]}"


async def test_second_live_claim_of_a_client_id_is_ignored_and_reported_as_is_malformed_discovery() -> None:
    async with relay_running() as relay:
        impostor = await ClaspClient.connect(relay.url)
        claiming = None
        try:
            async with p2p(relay, "victim", presence_interval=5.0) as victim, p2p(relay, "observer") as observer:
                errors: list[Exception] = []
                observer.on_error(errors.append)
                assert (await observer.wait_for_peer("victim", TIMEOUT)).session_id == victim.session_id
                claim = {"session_id": impostor.session_id, "p2p_capable": True, "features": ["webrtc"],
                         "client_id": "victim"}

                def from_router(message) -> None:
                    # The embedded relay refuses a second claim (409) and malformed discovery data;
                    # a reference router forwards them: the observer gets them as it would from one.
                    observer.client._handle(decode(encode(message)))

                claims_made = 0

                async def keep_claiming():  # more often than the victim refreshes its claim
                    nonlocal claims_made
                    while True:
                        from_router(Publish(address=ANNOUNCE_ADDRESS, signal="event", value=claim))
                        from_router(Set(address=PRESENCE_PREFIX + impostor.session_id, value=claim, revision=1))
                        claims_made += 1
                        await asyncio.sleep(0.02)

                claiming = asyncio.ensure_future(keep_claiming())
                await wait_until(lambda: observer.find_peer(impostor.session_id) is not None,
                                 what="the observer learning the second claimant")
                seen = claims_made
                await wait_until(lambda: claims_made >= seen + 5, what="five more claims handled")
                assert {p.session_id for p in observer.peers() if p.client_id == "victim"} == {
                    victim.session_id, impostor.session_id}
                assert observer.find_peer("victim").session_id == victim.session_id
                conflicts = [e for e in errors if "claim client id 'victim'" in str(e)]
                assert len(conflicts) == 1 and isinstance(conflicts[0], ProtocolError)
                assert victim.session_id in str(conflicts[0]) and impostor.session_id in str(conflicts[0])
                # Malformed discovery data is reported by address and changes nothing.
                from_router(Publish(address=ANNOUNCE_ADDRESS, signal="event", value="not a map"))
                from_router(Set(address=PRESENCE_PREFIX + "bogus", value=[1, 2], revision=1))
                await wait_until(lambda: len([e for e in errors if "must be a map" in str(e)]) == 2,
                                 what="two reports of malformed discovery data")
                malformed = {e.address for e in errors if "must be a map" in str(e)}
                assert malformed == {ANNOUNCE_ADDRESS, PRESENCE_PREFIX + "bogus"}
                assert observer.find_peer("bogus") is None
                peer = await asyncio.wait_for(observer.connect_to_peer("victim"), TIMEOUT)
                assert peer.session_id == victim.session_id and observer.connection("victim") is peer
                # Once the first claimant leaves, the id is free and the other live claim holds it.
                victim_session = victim.session_id
                await victim.close()
                await wait_until(lambda: observer.find_peer(victim_session) is None, what="the withdrawal")
                assert observer.find_peer("victim").session_id == impostor.session_id
        finally:
            if claiming is not None:
                claiming.cancel()
            await impostor.close()


async def test_pings_are_answered_in_order_without_a_task_each() -> None:
    async with relay_running() as relay:
        async with p2p(relay, "pinger") as pinger, p2p(relay, "ponger") as ponger:
            await pinger.wait_for_peer("ponger", TIMEOUT)
            to_ponger, to_pinger = await connected_pair(pinger, ponger)
            busiest: list[int] = []
            to_pinger.add_message_hook(lambda peer, message: busiest.append(len(peer._tasks)) or False)
            for _ in range(3000):
                await to_ponger.send(Ping(), reliable=True)
            await wait_until(lambda: to_ponger.stats().received["other"] == 3000, what="3,000 PONGs")
            assert len(busiest) == 3000 and max(busiest) <= 1  # a task per PING made this ~256 per batch


async def test_a_peer_that_leaves_its_answers_unread_is_reported_and_the_connection_goes_on(monkeypatch) -> None:
    monkeypatch.setattr("clasp_fast.p2p.peer.MAX_PENDING_ANSWERS", 100)
    tight = WebRtcConfig(host_addresses=["127.0.0.1"], high_water_mark=1)  # every answer waits for room
    async with relay_running() as relay:
        async with p2p(relay, "pinger") as pinger, \
                ClaspP2P(relay.url, client_id="ponger", rtc_config=tight, presence_interval=0.5) as ponger:
            errors: list[Exception] = []
            ponger.on_error(errors.append)
            await pinger.wait_for_peer("ponger", TIMEOUT)
            to_ponger, to_pinger = await connected_pair(pinger, ponger)
            for _ in range(1000):
                to_ponger.transport.sender.send_nowait(Ping(), reliable=True)  # one burst, in big batches
            await wait_until(lambda: any("without reading the answers" in str(e) for e in errors), what="the report")
            assert isinstance(errors[0], ProtocolError) and to_pinger.connected
            unanswered = to_pinger.stats().received["unanswered"]
            assert 0 < unanswered < 1000
            await wait_until(lambda: to_ponger.stats().received["other"] == 1000 - unanswered, what="the answers")
            await to_pinger.set("/after", 1)  # and both directions still work
            assert await asyncio.wait_for(to_ponger.get("/after"), TIMEOUT) == 1

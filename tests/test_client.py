"""ClaspClient against the embedded relay on loopback: API, errors, reconnect, signaling."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from websockets.asyncio.server import serve

from clasp_fast.client import ClaspBuilder, ClaspClient, ClaspTimeoutError
from clasp_fast.codec import decode, encode
from clasp_fast.errors import PatternError, ProtocolError, SignalingError
from clasp_fast.messages import Hello, Publish, Set, SignalInfo, Snapshot, Welcome
from clasp_fast.relay import Relay
from clasp_fast.signaling import SignalingChannel


class Inbox:
    """Collects callback deliveries and lets a test wait for a number of them."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self._changed = asyncio.Event()

    def __call__(self, value, address) -> None:
        self.items.append((address, value))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 3.0) -> list[tuple]:
        async def until() -> None:
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(until(), timeout)
        return self.items


async def test_connect_builder_and_session(relay):
    client = await ClaspBuilder(relay.url).name("built").connect()
    assert client.connected and len(client.session_id) == 36
    assert relay.sessions[client.session_id].name == "built"
    # The relay's clock in µs since the epoch; the relay runs in this process, so it agrees with ours.
    assert abs(client.time() - time.time_ns() // 1000) < 1_000_000
    await client.close()
    assert not client.connected


async def test_set_ack_echo_get_and_cache(relay):
    async with await ClaspClient.connect(relay.url, name="a") as a, \
            await ClaspClient.connect(relay.url, name="b") as b:
        inbox = Inbox()
        await b.subscribe("/mix/**", inbox)
        await b.ping()  # the SUBSCRIBE is processed once the PONG is back
        assert await a.set("/mix/gain", 0.5) == 1
        assert await a.set("/mix/gain", 0.75) == 2
        assert await inbox.wait_for(2) == [("/mix/gain", 0.5), ("/mix/gain", 0.75)]
        assert b.cached("/mix/gain") == 0.75
        assert await b.get("/mix/gain") == 0.75
        assert a.cached("/mix/gain") == 0.75


async def test_rejected_set_raises_protocol_error(relay):
    async with await ClaspClient.connect(relay.url) as a, await ClaspClient.connect(relay.url) as b:
        await a.set("/locked", 1, lock=True)
        with pytest.raises(ProtocolError) as info:
            await b.set("/locked", 2)
        assert info.value.code == 400 and info.value.address == "/locked"
        assert a.session_id in str(info.value)
        with pytest.raises(ProtocolError) as info:
            await a.set("/locked", 3, revision=7)
        assert info.value.code == 400 and "RevisionConflict" in str(info.value)
        assert await a.set("/locked", 4, revision=1, unlock=True) == 2
        assert await b.set("/locked", 5) == 3


async def test_get_unknown_address_times_out_with_clear_error(relay):
    async with await ClaspClient.connect(relay.url) as client:
        with pytest.raises(ClaspTimeoutError) as info:
            await client.get("/nothing/here", timeout=0.3)
        assert info.value.address == "/nothing/here"
        assert "/nothing/here" in str(info.value)
        assert isinstance(info.value, TimeoutError)


async def test_emit_stream_gesture_and_type_filters(relay):
    async with await ClaspClient.connect(relay.url) as sender, await ClaspClient.connect(relay.url) as receiver:
        events, streams, everything = [], [], Inbox()
        await receiver.subscribe("/io/**", lambda v, a, m: events.append((a, v, m.signal)), types=["event"])
        await receiver.subscribe("/io/**", lambda v, a: streams.append((a, v)), types=["stream"])
        await receiver.subscribe("/io/**", everything)
        await receiver.ping()
        await sender.emit("/io/cue", {"scene": 3})
        await sender.stream("/io/audio", np.array([0.0, -1.5, 0.25]), rate=48000)
        await sender.stream("/io/fader", 0.5)
        await sender.gesture("/io/touch", 7, "start", {"x": 0.1})
        await sender.gesture("/io/touch", 7, "end")
        await everything.wait_for(5)
        assert events == [("/io/cue", {"scene": 3}, "event")]
        assert streams[0][0] == "/io/audio" and list(streams[0][1]) == [0.0, -1.5, 0.25]
        assert streams[1] == ("/io/fader", 0.5)
        assert [a for a, _ in everything.items][-2:] == ["/io/touch", "/io/touch"]


async def test_unsubscribe_and_on_decorator(relay):
    async with await ClaspClient.connect(relay.url) as sender, await ClaspClient.connect(relay.url) as receiver:
        got = []

        @receiver.on("/deco/*")
        def handler(value, address):
            got.append(value)

        sub = await receiver.subscribe("/other/*", lambda v, a: got.append(("other", v)))
        await receiver.ping()
        await sender.set("/deco/x", 1)
        await sender.set("/other/x", 2)
        await receiver.unsubscribe(sub)
        await receiver.ping()
        await sender.set("/other/x", 3)
        await sender.set("/deco/x", 4)
        await receiver.ping()
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.01)
        assert got == [1, ("other", 2), 4]
        with pytest.raises(PatternError):
            await receiver.subscribe("no-leading-slash", lambda v, a: None)


async def test_bundle_announce_query_and_clock_sync(relay):
    async with await ClaspClient.connect(relay.url) as client:
        revision = await client.bundle([Set(address="/b/1", value=1), Set(address="/b/2", value=2),
                                        Publish(address="/b/cue", signal="event", value="go")])
        assert revision == 1
        assert await client.get("/b/2") == 2
        await client.announce("/dev", [SignalInfo(address="/dev/gain", signal_type="param", datatype="f32")])
        found = await client.query("/dev/**")
        assert [s.address for s in found] == ["/dev/gain"]
        offset = await client.sync_clock()
        assert abs(offset) < 1_000_000  # same machine: the clocks agree within a second


async def test_snapshot_for_late_joiner(relay):
    async with await ClaspClient.connect(relay.url) as writer:
        await writer.set("/late/a", 1)
        await writer.set("/late/b", "two")
        late = await ClaspClient.connect(relay.url)
        inbox = Inbox()
        await late.subscribe("/late/**", inbox)
        items = await inbox.wait_for(2)
        assert sorted(items) == [("/late/a", 1), ("/late/b", "two")]
        assert late.cached("/late/b") == "two"
        await late.close()


async def test_bad_frames_do_not_stop_the_receive_loop():
    """A server that sends garbage between good frames: the client reports and goes on."""
    async def handler(ws):
        hello = decode(await ws.recv())
        assert isinstance(hello, Hello)
        await ws.send(encode(Welcome(session="s-1", name="odd", features=["param"], time=1)))
        await ws.send(encode(Snapshot(params=[])))
        await ws.recv()  # the client's SUBSCRIBE
        await ws.send(b"\x53\x01\x00\x05\x21\x00")  # truncated SET
        await ws.send(b"not a frame")
        await ws.send("text")
        await ws.send(encode(Set(address="/ok", value=1, revision=1)))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = await ClaspClient.connect(f"ws://127.0.0.1:{port}", reconnect=False)
        errors, inbox = [], Inbox()
        client.on_error(errors.append)
        await client.subscribe("/ok", inbox)
        assert await inbox.wait_for(1) == [("/ok", 1)]
        assert len(errors) == 3
        assert "offset" in str(errors[0])
        await client.close()


async def test_text_message_during_the_handshake_is_a_protocol_error():
    """A text WebSocket message where WELCOME should be is refused with ProtocolError, not a TypeError."""
    async def handler(ws):
        await ws.recv()  # HELLO
        await ws.send("welcome")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ProtocolError, match="text WebSocket message during the handshake"):
            await ClaspClient.connect(f"ws://127.0.0.1:{port}", reconnect=False)


async def test_callback_exception_is_reported_not_fatal(relay):
    async with await ClaspClient.connect(relay.url) as client:
        errors, inbox = [], Inbox()
        client.on_error(errors.append)

        def broken(value, address):
            raise RuntimeError("callback bug")

        await client.subscribe("/cb/**", broken)
        await client.subscribe("/cb/**", inbox)
        await client.set("/cb/x", 1)
        await client.set("/cb/x", 2)
        await inbox.wait_for(2)
        assert len(errors) == 2 and all("callback bug" in str(e) for e in errors)


async def test_reconnect_with_backoff_and_resubscribe():
    relay = await Relay.start(host="127.0.0.1", port=0)
    port = relay.port
    client = await ClaspClient.connect(relay.url, reconnect_initial_delay=0.05, reconnect_max_delay=0.2)
    connects, disconnects, inbox = [], [], Inbox()
    client.on_connect(lambda: connects.append(client.session_id))
    client.on_disconnect(disconnects.append)
    await client.subscribe("/re/**", inbox)
    first_session = client.session_id
    await relay.close()
    await asyncio.sleep(0.3)  # a few failed attempts while nothing listens
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not disconnects and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert disconnects and not client.connected
    relay = await Relay.start(host="127.0.0.1", port=port)
    try:
        await client.wait_connected(5.0)
        assert client.session_id != first_session and connects == [client.session_id]
        async with await ClaspClient.connect(relay.url) as writer:
            await client.ping()  # the re-sent SUBSCRIBE has been processed
            await writer.set("/re/x", 42)
            assert await inbox.wait_for(1) == [("/re/x", 42)]
    finally:
        await client.close()
        await relay.close()


async def test_signaling_between_two_clients(relay):
    async with await ClaspClient.connect(relay.url) as a, await ClaspClient.connect(relay.url) as b, \
            await ClaspClient.connect(relay.url) as eavesdropper:
        heard = []
        await eavesdropper.subscribe("/clasp/p2p/signal/**", lambda v, ad: heard.append(ad))
        await eavesdropper.ping()
        assert isinstance(a.signaling, SignalingChannel)
        assert a.signaling.session_id == a.session_id
        offer = {"type": "offer", "sdp": "v=0\r\n", "correlation_id": f"{a.session_id}-{b.session_id}-1",
                 "features": ["batch"]}
        await a.signaling.send_signal(b.session_id, offer)
        got = await asyncio.wait_for(b.signaling.recv_signal(), 2.0)
        assert got == {**offer, "from": a.session_id}
        await b.signaling.send_signal(a.session_id, {"type": "answer", "sdp": "v=0\r\n",
                                                     "correlation_id": offer["correlation_id"]})
        answer = await asyncio.wait_for(a.signaling.__anext__(), 2.0)
        assert answer["type"] == "answer" and answer["from"] == b.session_id
        await eavesdropper.ping()
        assert heard == []  # signals go only to their target
        with pytest.raises(SignalingError) as info:
            await a.signaling.send_signal("00000000-0000-4000-8000-000000000000",
                                          {"type": "connected", "correlation_id": "c"})
        assert info.value.peer == "00000000-0000-4000-8000-000000000000"
        assert "404" in str(info.value)


async def test_announce_fan_out_excludes_sender(relay):
    async with await ClaspClient.connect(relay.url) as a, await ClaspClient.connect(relay.url) as b, \
            await ClaspClient.connect(relay.url) as c:
        got = {"a": Inbox(), "b": Inbox(), "c": Inbox()}
        for name, client in (("a", a), ("b", b), ("c", c)):
            await client.subscribe("/clasp/p2p/announce", got[name])
            await client.ping()
        await a.emit("/clasp/p2p/announce", {"session_id": a.session_id, "p2p_capable": True,
                                             "features": ["webrtc", "reliable", "unreliable", "batch"]})
        await got["b"].wait_for(1)
        await got["c"].wait_for(1)
        await a.ping()
        assert got["a"].items == []
        assert got["b"].items[0][1]["session_id"] == a.session_id

"""Connection lifecycle of ClaspP2P against a peer clasp_fast did not write (plain aiortc, WIRE.md §10.5):
teardown that loses nothing either way, every ICE candidate applied whatever its timing, and offers
that claim a live peer's session."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from clasp_fast import ClaspP2P, Peer
from clasp_fast.client import ClaspClient
from clasp_fast.codec import decode_frame, encode
from clasp_fast.errors import SignalingError
from clasp_fast.messages import Set
from clasp_fast.webrtc import RELIABLE_LABEL, WebRtcConfig

from .raw_peer import RawPeer, blackhole
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


@pytest.mark.parametrize("role", ROLES)
async def test_peer_disconnecting_right_after_its_data_loses_nothing(role: str) -> None:
    async with connected_pair(role) as (p2p, peer, raw, _):
        got: list[int] = []
        peer.on("/lifecycle/value", lambda value, address: got.append(index(value)))
        closed = closed_future(p2p)
        for i in range(COUNT):
            raw.send(frame(i))
        await raw.signal_now("disconnected", reason="raw peer done")  # no delay: data still in flight
        assert await asyncio.wait_for(closed, TIMEOUT) == "raw peer done"
        assert got == list(range(COUNT))
        # clasp_fast answers with its own disconnected once the data is in.
        await asyncio.wait_for(raw.remote_disconnected.wait(), TIMEOUT)
        assert [s["type"] for s in raw.signals][-1] == "disconnected"


@pytest.mark.parametrize("role", ROLES)
async def test_close_delivers_everything_to_a_peer_that_drops_the_connection_on_disconnected(role: str) -> None:
    async with connected_pair(role) as (p2p, peer, raw, _):
        raw.drop_on_disconnected = True
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
        await raw.signal_now("disconnected", reason="hung")
        blackhole(raw.pc)  # the peer's stack never answers the stream resets
        started = time.monotonic()
        assert await asyncio.wait_for(closed, TIMEOUT) == "hung"
        assert 0.9 <= time.monotonic() - started < 3.0
    async with connected_pair("clasp_fast offers", config) as (p2p, peer, raw, _):
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

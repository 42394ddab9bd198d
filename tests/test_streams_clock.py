"""peer.clock: the peer's clock estimated continuously over the control channel (SYNC in place of
the keepalive PINGs), between two processes with an injected offset, and with peers that do not
answer clock probes."""

from __future__ import annotations

import asyncio
import contextlib
import json

from clasp_fast.clock import wall_clock_us
from clasp_fast.messages import Set
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport

from .webrtc_peer import loopback_config, spawn_peer

RESOLUTION_US = 2  # each of the four stamps is a whole µs


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_transport_estimates_a_shifted_child_clock_within_half_the_rtt() -> None:
    shift = -1_750_000 + 4_321  # the child's clock runs 1.75 s behind
    config = loopback_config(keepalive_interval=0.05, keepalive_timeout=5.0)
    child_args = ("--shift-us", str(shift), "--interval", "0.05", "--seconds", "20")
    async with spawn_peer("control", *child_args, config=config, module="tests.clock_peer") as (transport, process):
        assert "clock" in transport.remote_features
        await wait_for(lambda: transport.clock is not None and transport.clock.samples >= 12)
        clock = transport.clock
        # The true offset lies within half the chosen sample's round-trip time.
        assert abs(clock.offset_us - shift) <= clock.min_rtt_us / 2 + RESOLUTION_US
        assert clock.uncertainty_us >= clock.min_rtt_us / 2
        assert transport.stats().clock == transport.clock or transport.stats().clock.samples >= clock.samples
        assert transport.stats().rtt is not None and transport.stats().rtt > 0
        await transport.close()
        child = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
    estimate = child["estimate"]  # the child's estimate of ours: the same offset, negated
    assert estimate is not None and estimate["samples"] >= 4
    assert abs(estimate["offset_us"] + shift) <= estimate["min_rtt_us"] / 2 + RESOLUTION_US


async def test_a_peer_that_does_not_offer_clock_keeps_working_and_the_clock_stays_unknown() -> None:
    config = loopback_config(keepalive_interval=0.05, keepalive_timeout=5.0)
    child_args = ("--no-clock", "--shift-us", "0", "--interval", "0.05", "--seconds", "20")
    async with spawn_peer("control", *child_args, config=config, module="tests.clock_peer") as (transport, process):
        assert "clock" not in transport.remote_features and "keepalive" in transport.remote_features
        # PING/PONG keepalives still run (the RTT comes from them) and the link stays up.
        await wait_for(lambda: transport.stats().rtt is not None)
        await asyncio.sleep(0.3)
        assert transport.state == "connected"
        assert transport.clock is None and transport.stats().clock is None
        await transport.close()
        child = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
    assert child["estimate"] is None and "clock" in child["features"]


@contextlib.asynccontextmanager
async def alice_and_bob():
    """Two ClaspP2P endpoints over in-memory signaling, alice knowing bob; yields (alice, bob, alice's Peer of bob)."""
    from clasp_fast import ClaspP2P
    from clasp_fast.p2p import PeerInfo, StaticDiscovery

    rtc = WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=0.05, keepalive_timeout=5.0)
    sig_a, sig_b = InMemorySignaling.pair("a", "b")
    alice = ClaspP2P(sig_a, client_id="alice", rtc_config=rtc, discovery=StaticDiscovery([PeerInfo("b", "bob")]))
    bob = ClaspP2P(sig_b, client_id="bob", rtc_config=rtc)
    async with alice, bob:
        yield alice, bob, await asyncio.wait_for(alice.connect_to_peer("bob"), 15)


async def test_peer_clock_on_a_claspp2p_connection_and_data_still_flows() -> None:
    async with alice_and_bob() as (alice, bob, peer):
        await wait_for(lambda: peer.clock is not None and peer.clock.samples >= 4)
        # Same host, same clock: the estimate is within its bound of zero.
        assert abs(peer.clock.offset_us) <= peer.clock.uncertainty_us + RESOLUTION_US
        got = asyncio.get_running_loop().create_future()
        other = await asyncio.wait_for(anext(aiter(bob.incoming())), 5)
        other.on("/x", lambda value, address: got.done() or got.set_result(value))
        await peer.set("/x", 7)
        assert await asyncio.wait_for(got, 5) == 7


async def test_sync_on_the_control_channel_never_reaches_the_application() -> None:
    config = WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=0.05, keepalive_timeout=5.0)
    sig_a, sig_b = InMemorySignaling.pair("a", "b")
    (a, _), (b_sender, b) = await asyncio.wait_for(asyncio.gather(
        WebRtcTransport.connect(config, sig_a, peer="b"),
        WebRtcTransport.connect(config, sig_b, role="answerer"),
    ), 15)
    try:
        await wait_for(lambda: a.transport.clock is not None and b_sender.transport.clock is not None)
        await a.send(Set(address="/sentinel", value=1))
        first = await asyncio.wait_for(b.recv(), 5)
        assert isinstance(first, Set) and first.address == "/sentinel"  # no SYNC before it
        assert abs(a.transport.clock.to_local(wall_clock_us()) - wall_clock_us()) < 50_000
    finally:
        await a.close()
        await b_sender.close()

"""ClaspP2P against a relay in authenticated mode: the token reaches the relay, and a client id
can only be used by a session whose token claims it (docs/security.md)."""

import asyncio

import pytest

from clasp_fast.auth import TokenAuth
from clasp_fast.errors import ProtocolError
from clasp_fast.p2p import ClaspP2P
from clasp_fast.relay import Relay
from clasp_fast.webrtc import WebRtcConfig

P2P = ["read:/clasp/**", "write:/clasp/**"]
TOKENS = {
    "cpsk_peer": [*P2P, "claim:a", "claim:b"],
    "cpsk_rx": [*P2P, "claim:rx"],
    "cpsk_tx": [*P2P, "claim:tx"],
    "cpsk_any": P2P,  # P2P by session id only: no client id may be claimed
}


pytestmark = pytest.mark.relay_options(auth=TokenAuth(TOKENS))


def loopback() -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"])


async def test_p2p_with_a_valid_token_connects_and_sees_its_peer(relay):
    async with ClaspP2P(relay.url, client_id="a", token="cpsk_peer", rtc_config=loopback()) as a, \
            ClaspP2P(relay.url, client_id="b", token="cpsk_peer", rtc_config=loopback()) as b:
        peer = await a.connect_to_peer("b")
        assert peer.session_id == b.session_id


async def test_p2p_without_a_token_is_refused_with_code_300(relay):
    p2p = ClaspP2P(relay.url, client_id="nobody", rtc_config=loopback())
    with pytest.raises(ProtocolError) as refused:
        await p2p.connect()
    assert refused.value.code == 300
    await p2p.close()


async def test_a_token_without_the_claim_cannot_take_another_client_id(relay):
    """The hijack of issue 14: a session allowed only read/write on /clasp/p2p/** ran
    ClaspP2P(client_id="rx") and peers resolved "rx" to it."""
    async with ClaspP2P(relay.url, client_id="rx", token="cpsk_rx", rtc_config=loopback()) as rx, \
            ClaspP2P(relay.url, client_id="tx", token="cpsk_tx", rtc_config=loopback(),
                     presence_interval=0.3) as tx:
        attacker = ClaspP2P(relay.url, client_id="rx", token="cpsk_any", rtc_config=loopback(),
                            presence_interval=0.3)
        with pytest.raises(ProtocolError) as refused:
            await attacker.connect()
        assert refused.value.code == 301 and "'rx'" in refused.value.reason
        assert not attacker.client.connected  # a refused connect() cleans up
        # The sender resolves "rx" to the real receiver, and what it sends reaches it.
        assert (await tx.wait_for_peer("rx")).session_id == rx.session_id
        received: asyncio.Queue = asyncio.Queue()
        rx.on_connection(lambda peer: peer.on("/peer/rx/**", lambda value, address: received.put_nowait(value)))
        peer = await tx.connect_to_peer("rx")
        assert peer.session_id == rx.session_id
        await peer.emit("/peer/rx/secret", "for rx only")
        assert await asyncio.wait_for(received.get(), 10.0) == "for rx only"


async def test_a_claim_scope_is_a_pattern_of_client_ids():
    auth = TokenAuth({"sensors": [*P2P, "claim:sensor-*"]})
    async with Relay(host="127.0.0.1", port=0, auth=auth) as relay:
        async with ClaspP2P(relay.url, client_id="sensor-1", token="sensors", rtc_config=loopback()) as one:
            assert one.client.connected
            other = ClaspP2P(relay.url, client_id="mixer", token="sensors", rtc_config=loopback())
            with pytest.raises(ProtocolError) as refused:
                await other.connect()
            assert refused.value.code == 301
            # The same grant, but the id is taken by a live session: 409.
            twin = ClaspP2P(relay.url, client_id="sensor-1", token="sensors", rtc_config=loopback())
            with pytest.raises(ProtocolError) as taken:
                await twin.connect()
            assert taken.value.code == 409 and one.session_id in taken.value.reason

"""ClaspP2P against a relay in authenticated mode: the token reaches the relay."""

import pytest

from clasp_fast.auth import TokenAuth
from clasp_fast.errors import ProtocolError
from clasp_fast.p2p import ClaspP2P
from clasp_fast.relay import Relay
from clasp_fast.webrtc import WebRtcConfig

SCOPES = ["read:/clasp/**", "write:/clasp/**"]


@pytest.fixture
async def relay():
    relay = await Relay.start(host="127.0.0.1", port=0, auth=TokenAuth({"cpsk_peer": SCOPES}))
    yield relay
    await relay.close()


async def test_p2p_with_a_valid_token_connects_and_sees_its_peer(relay):
    config = WebRtcConfig(host_addresses=["127.0.0.1"])
    async with ClaspP2P(relay.url, client_id="a", token="cpsk_peer", rtc_config=config) as a, \
            ClaspP2P(relay.url, client_id="b", token="cpsk_peer", rtc_config=config) as b:
        peer = await a.connect_to_peer("b")
        assert peer.session_id == b.session_id


async def test_p2p_without_a_token_is_refused_with_code_300(relay):
    p2p = ClaspP2P(relay.url, client_id="nobody", rtc_config=WebRtcConfig(host_addresses=["127.0.0.1"]))
    with pytest.raises(ProtocolError) as refused:
        await p2p.connect()
    assert refused.value.code == 300
    await p2p.close()

"""WebRTC set-up signaled through the embedded relay (clasp_fast.relay.Relay + ClaspClient.signaling)."""

from __future__ import annotations

import asyncio

from clasp_fast.codec import decode, encode
from clasp_fast.messages import Publish, Set
from clasp_fast.client import ClaspClient
from clasp_fast.relay import Relay
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport


async def test_connect_through_the_relay_and_exchange_messages() -> None:
    relay = await Relay.start(host="127.0.0.1", port=0)
    client_a = await ClaspClient.connect(relay.url)
    client_b = await ClaspClient.connect(relay.url)
    config = WebRtcConfig(host_addresses=["127.0.0.1"])
    try:
        (send_a, recv_a), (send_b, recv_b) = await asyncio.wait_for(
            asyncio.gather(
                WebRtcTransport.connect(config, client_a.signaling, peer=client_b.session_id),
                WebRtcTransport.connect(config, client_b.signaling, role="answerer"),
            ),
            10,
        )
        a, b = send_a.transport, send_b.transport
        assert a.peer == client_b.session_id and b.peer == client_a.session_id
        assert a.batching and b.batching
        await send_a.send(Set(address="/via/relay", value=1))
        await send_b.send(Publish(address="/via/relay/e", signal="event", value="back"))
        assert await asyncio.wait_for(recv_b.recv(), 5) == Set(address="/via/relay", value=1)
        expected = decode(encode(Publish(address="/via/relay/e", signal="event", value="back")))
        assert await asyncio.wait_for(recv_a.recv(), 5) == expected
        await a.close()
        await asyncio.wait_for(b.wait_closed(), 5)  # the disconnected signal crossed the relay
        assert b.close_reason == "User requested disconnect"
    finally:
        await client_a.close()
        await client_b.close()
        await relay.close()

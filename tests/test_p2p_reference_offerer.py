"""A peer that follows the Rust reference client's procedure *offers* to a ClaspP2P (docs/protocol.md §10.5).

It never announces or sets presence, puts no ``features`` in its offer, sends the offer SDP taken
before ICE gathering and trickles its candidates afterwards, creates both channels itself, and sends
one frame per DataChannel message. ClaspP2P must accept it, answer, and talk to it unbatched.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_to_sdp

from clasp_fast.client import ClaspClient
from clasp_fast.codec import decode_frame, encode
from clasp_fast.ice import install_gathering_policy, is_loopback
from clasp_fast.messages import Set
from clasp_fast.webrtc import RELIABLE_LABEL, UNRELIABLE_LABEL, parse_candidate

from .test_p2p import TIMEOUT, p2p, relay_running, wait_until


async def reference_offerer(client: ClaspClient, target: str, received: list[bytes]):
    signaling = client.signaling
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels = {
        UNRELIABLE_LABEL: pc.createDataChannel(UNRELIABLE_LABEL, ordered=False, maxRetransmits=0),
        RELIABLE_LABEL: pc.createDataChannel(RELIABLE_LABEL),
    }
    for channel in channels.values():
        channel.on("message", received.append)
    gatherer = pc.sctp.transport.transport.iceGatherer
    install_gathering_policy(gatherer._connection, host_addresses=["127.0.0.1"], udp_receive_buffer=None)
    offer = await pc.createOffer()  # taken before gathering: no candidates in it
    cid = f"{client.session_id}-{target}-{uuid.uuid4()}"
    await signaling.send_signal(target, {"type": "offer", "sdp": offer.sdp, "correlation_id": cid})
    await pc.setLocalDescription(offer)
    for candidate in gatherer.getLocalCandidates():
        assert is_loopback(candidate.ip)
        init = {"candidate": "candidate:" + candidate_to_sdp(candidate), "sdpMid": "0",
                "sdpMLineIndex": 0, "usernameFragment": None}
        await signaling.send_signal(target, {"type": "ice_candidate", "candidate": json.dumps(init),
                                             "correlation_id": cid})
    answer = None
    queued = []
    while answer is None:
        signal = await signaling.recv_signal()
        if signal.get("correlation_id") != cid:
            continue
        if signal["type"] == "answer":
            answer = signal
        elif signal["type"] == "ice_candidate":
            queued.append(signal)
    assert answer["from"] == target and answer["sdp"].startswith("v=0")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    for signal in queued:
        await pc.addIceCandidate(parse_candidate(signal["candidate"]))

    async def apply_candidates():
        while True:
            signal = await signaling.recv_signal()
            if signal["type"] == "ice_candidate" and signal.get("correlation_id") == cid:
                await pc.addIceCandidate(parse_candidate(signal["candidate"]))

    pump = asyncio.ensure_future(apply_candidates())
    while channels[RELIABLE_LABEL].readyState != "open":
        await asyncio.sleep(0.01)
    await signaling.send_signal(target, {"type": "connected", "correlation_id": cid})
    return pc, channels, pump


async def test_reference_peer_offering_to_claspp2p_is_accepted_and_served_unbatched() -> None:
    async with relay_running() as relay:
        reference = await ClaspClient.connect(relay.url)
        received: list[bytes] = []
        incoming = []
        async with p2p(relay, "modern") as modern:
            modern.on_connection(incoming.append)
            pc, channels, pump = await asyncio.wait_for(
                reference_offerer(reference, modern.session_id, received), TIMEOUT)
            try:
                await wait_until(lambda: len(incoming) == 1, what="the incoming connection")
                peer = incoming[0]
                assert peer.session_id == reference.session_id
                assert peer.client_id is None and not peer.transport.batching

                got = []
                peer.on("/from-ref/*", lambda value, address: got.append((address, value)))
                for i in range(20):
                    channels[RELIABLE_LABEL].send(encode(Set(address=f"/from-ref/{i}", value=i)))
                await wait_until(lambda: len(got) == 20, what="20 SETs from the reference peer")
                assert got == [(f"/from-ref/{i}", i) for i in range(20)]

                for i in range(30):
                    await peer.set("/to-ref/value", i)
                await wait_until(lambda: len(received) == 30, what="30 frames at the reference peer")
                for i, data in enumerate(received):
                    assert decode_frame(data).size == len(data)  # one frame per DataChannel message
                    assert data == encode(Set(address="/to-ref/value", value=i))
            finally:
                pump.cancel()
                await pc.close()
        await reference.close()

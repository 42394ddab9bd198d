"""InMemorySignaling and the signal helpers, checked against docs/protocol.md §10.3/§10.4 and the Rust vectors."""

from __future__ import annotations

import asyncio
import re

import pytest

from clasp_fast.codec import decode_frame
from clasp_fast.errors import SignalingError
from clasp_fast.messages import Publish
from clasp_fast.signaling import (
    InMemorySignaling,
    SignalingChannel,
    new_correlation_id,
    parse_signal,
    signal_address,
)

from .spec_data import load_json


def _vector(name: str) -> dict:
    for vector in load_json("vectors/reference_rust.json"):
        if vector.get("name") == name:
            return vector
    raise LookupError(name)


async def test_pair_delivers_signal_with_from_filled() -> None:
    a, b = InMemorySignaling.pair("peer-a", "peer-b")
    await a.send_signal("peer-b", {"type": "connected", "correlation_id": "x"})
    signal = await asyncio.wait_for(b.recv_signal(), 1)
    assert signal == {"type": "connected", "correlation_id": "x", "from": "peer-a"}
    assert isinstance(a, SignalingChannel)


async def test_signal_is_carried_as_the_rust_reference_publish_byte_for_byte() -> None:
    vector = _vector("rs_p2p_offer_signal")
    a, b = InMemorySignaling.pair("peer-a", "peer-b")
    signal = {
        "from": "ignored-and-replaced",
        "sdp": "v=0\r\n",
        "correlation_id": "peer-a-peer-b-00000000-0000-4000-8000-000000000000",
        "type": "offer",
    }
    await a.send_signal("peer-b", signal)
    assert a.sent_frames[-1] == bytes.fromhex(vector["frame_hex"])
    frame = decode_frame(a.sent_frames[-1])
    assert isinstance(frame.message, Publish)
    assert frame.qos == 1
    assert frame.message.address == "/clasp/p2p/signal/peer-b"
    assert frame.message.signal == "event"
    received = await b.recv_signal()
    assert received["from"] == "peer-a"
    assert received["sdp"] == "v=0\r\n"


async def test_features_list_survives_the_codec() -> None:
    a, b = InMemorySignaling.pair()
    await a.send_signal("b", {"type": "answer", "sdp": "v=0\r\n", "correlation_id": "c", "features": ["batch"]})
    assert (await b.recv_signal())["features"] == ["batch"]


async def test_unknown_target_raises_signaling_error_naming_peer_and_step() -> None:
    a, _ = InMemorySignaling.pair()
    with pytest.raises(SignalingError) as info:
        await a.send_signal("nobody", {"type": "connected", "correlation_id": "c"})
    assert info.value.peer == "nobody"
    assert info.value.step == "signal"
    assert "nobody" in str(info.value)


async def test_closed_channel_becomes_unknown() -> None:
    a, b = InMemorySignaling.pair()
    b.close()
    with pytest.raises(SignalingError):
        await a.send_signal("b", {"type": "connected", "correlation_id": "c"})


async def test_join_adds_a_third_session_and_async_iteration_yields_in_order() -> None:
    a, b = InMemorySignaling.pair()
    c = a.join("c")
    await a.send_signal("c", {"type": "connected", "correlation_id": "1"})
    await b.send_signal("c", {"type": "connected", "correlation_id": "2"})
    seen = []
    async for signal in c:
        seen.append((signal["from"], signal["correlation_id"]))
        if len(seen) == 2:
            break
    assert seen == [("a", "1"), ("b", "2")]


def test_duplicate_session_id_rejected() -> None:
    a, _ = InMemorySignaling.pair()
    with pytest.raises(ValueError):
        a.join("b")


@pytest.mark.parametrize("target", ["", "a/b"])
def test_signal_address_rejects_targets_that_are_not_one_segment(target: str) -> None:
    with pytest.raises(SignalingError):
        signal_address(target)


def test_correlation_id_shape() -> None:
    cid = new_correlation_id("peer-a", "peer-b")
    assert re.fullmatch(r"peer-a-peer-b-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", cid)
    assert new_correlation_id("peer-a", "peer-b") != cid


@pytest.mark.parametrize(
    "value, ok",
    [
        ({"type": "offer", "from": "a", "sdp": "v=0", "correlation_id": "c"}, True),
        ({"type": "offer", "from": "a", "correlation_id": "c"}, False),
        ({"type": "ice_candidate", "from": "a", "candidate": "{}", "correlation_id": "c"}, True),
        ({"type": "ice_candidate", "from": "a", "candidate": 5, "correlation_id": "c"}, False),
        ({"type": "disconnected", "from": "a", "correlation_id": "c", "reason": "bye"}, True),
        ({"type": "hello", "from": "a", "correlation_id": "c"}, False),
        ("offer", False),
        (None, False),
    ],
)
def test_parse_signal(value: object, ok: bool) -> None:
    assert (parse_signal(value) is not None) is ok

"""Conformance of the codec against the shared vectors (tests/data/vectors, docs/protocol.md §14)."""

from __future__ import annotations

import math

import numpy
import pytest

from clasp_fast import codec
from clasp_fast.errors import DecodeError
from clasp_fast.messages import (
    MISSING,
    Ack,
    Bundle,
    Error,
    Hello,
    Ping,
    Publish,
    Set,
    Subscribe,
    Ttl,
)
from clasp_fast.wire.neutral import from_neutral

from .spec_data import load_json

RUST = load_json("vectors/reference_rust.json")
JS = load_json("vectors/official_js.json")
PY = load_json("vectors/official_py.json")
HANDCRAFTED = load_json("vectors/handcrafted.json")


def by_name(vectors):
    return {v["name"]: v for v in vectors}


def as_binary_decoded(message):
    """What a binary decode of `message` yields: PUBLISH always gets signal and phase
    (docs/protocol.md §6.7), and SUBSCRIBE options with no field set are "no options" (§6.5)."""
    if isinstance(message, Publish):
        if message.signal is None:
            message.signal = "event"
        if message.phase is None:
            message.phase = "start"
    elif isinstance(message, Subscribe):
        if message.options is not None and all(
            getattr(message.options, k) is None for k in ("max_rate", "epsilon", "history", "window")
        ):
            message.options = None
    elif isinstance(message, Bundle):
        for inner in message.messages:
            as_binary_decoded(inner)
    return message


# ---------------------------------------------------------------------------------------------
# reference_rust.json: the authority


@pytest.mark.parametrize("vector", RUST, ids=lambda v: v["name"])
def test_rust_vector_decodes_to_its_message(vector):
    frame = bytes.fromhex(vector["frame_hex"])
    expected = as_binary_decoded(from_neutral(vector["message"]))
    assert codec.decode(frame) == expected


@pytest.mark.parametrize("vector", RUST, ids=lambda v: v["name"])
def test_rust_vector_encodes_to_its_bytes(vector):
    frame = bytes.fromhex(vector["frame_hex"])
    header = codec.decode_frame(frame)
    encoded = codec.encode(from_neutral(vector["message"]), qos=header.qos,
                           timestamp=header.timestamp)
    if encoded != frame:
        # Map key order on the wire is unspecified (docs/protocol.md §4): then compare by content.
        assert len(encoded) == len(frame)
        assert encoded[:4] == frame[:4]
        assert codec.decode(encoded) == codec.decode(frame)
        assert "map" in str(vector["message"])
    assert codec.decode_frame(encoded).qos == header.qos


@pytest.mark.parametrize("vector", RUST, ids=lambda v: v["name"])
def test_rust_vector_default_qos_matches_reference(vector):
    """Without an explicit qos the encoder writes the reference's QoS bits (docs/protocol.md §2.1)."""
    frame = bytes.fromhex(vector["frame_hex"])
    if vector["name"] == "rs_set_with_frame_timestamp_commit":
        pytest.skip("this frame was written with an explicit QoS (Commit)")
    encoded = codec.encode(from_neutral(vector["message"]))
    assert encoded[1] & 0xC0 == frame[1] & 0xC0


@pytest.mark.parametrize("vector", RUST, ids=lambda v: v["name"])
def test_rust_vector_v0_payload_decodes_to_same_message(vector):
    payload = bytes.fromhex(vector["v0_msgpack_payload_hex"])
    frame = b"\x53\x00" + len(payload).to_bytes(2, "big") + payload
    expected = from_neutral(vector["message"])
    if vector["name"] == "rs_set_bytes":
        # The Rust encoder writes v0 bytes as an array of small ints (docs/protocol.md §7.2).
        expected.value = list(expected.value)
    if vector["name"] == "rs_subscribe_options_all_none":
        expected.options = None
    assert codec.decode(frame) == expected


@pytest.mark.parametrize("vector", RUST + JS + PY, ids=lambda v: v["name"])
def test_every_truncation_is_a_decode_error(vector):
    """Every proper prefix of a frame (and every shortened payload length) is rejected cleanly."""
    frame = bytes.fromhex(vector["frame_hex"])
    for cut in range(len(frame)):
        with pytest.raises(DecodeError) as info:
            codec.decode(frame[:cut])
        assert info.value.offset is not None and 0 <= info.value.offset <= cut
    header = 12 if frame[1] & 0x20 else 4
    payload_len = len(frame) - header
    for shorter in range(1, payload_len):
        # Header intact, payload declared (and present) shorter than the message needs.
        relabelled = frame[:2] + shorter.to_bytes(2, "big") + frame[4:header + shorter]
        try:
            message = codec.decode(relabelled)
        except DecodeError as e:
            assert e.offset is not None and e.offset <= len(relabelled)
        else:
            # Only fields that may legitimately be absent at the end can be cut silently:
            # PUBLISH's rate (no presence flag, docs/protocol.md §6.7), or the tail of a v0 payload
            # after a complete MessagePack map (none of these vectors has one).
            assert isinstance(message, Publish) and message.rate is None


# ---------------------------------------------------------------------------------------------
# official_js.json and official_py.json: every frame decodes; disagreements pinned down


@pytest.mark.parametrize("vector", JS + PY, ids=lambda v: v["name"])
def test_official_client_frame_decodes(vector):
    frame = bytes.fromhex(vector["frame_hex"])
    message = codec.decode(frame)
    assert type(message).__name__.upper().replace("FEDERATIONSYNC", "FEDERATION_SYNC") == \
        vector["message"]["type"]
    # Whatever we decode we can encode again, and that decodes to the same message.
    assert codec.decode(codec.encode(message)) == as_binary_decoded(message)


def test_js_numbers_arrive_as_floats():
    """JS sends every number as f64 (docs/protocol.md §4.1, §11.1): we keep the wire type, a float."""
    js = by_name(JS)
    assert codec.decode(bytes.fromhex(js["js_set_value_num_1"]["frame_hex"])).value == 1.0
    assert type(codec.decode(bytes.fromhex(js["js_set_value_num_1"]["frame_hex"])).value) is float
    value = codec.decode(bytes.fromhex(js["js_set_value_num_nan"]["frame_hex"])).value
    assert math.isnan(value)
    neg_zero = codec.decode(bytes.fromhex(js["js_set_value_num_neg_zero"]["frame_hex"])).value
    assert neg_zero == 0.0 and math.copysign(1, neg_zero) < 0


def test_python_ints_keep_i64_precision():
    """Python/Rust send i64: we keep it exact (JS would round above 2**53)."""
    py = by_name(PY)
    assert codec.decode(bytes.fromhex(py["py_set_value_int_2pow53_plus1"]["frame_hex"])).value == \
        2**53 + 1
    assert codec.decode(bytes.fromhex(py["py_set_value_int_i64_max"]["frame_hex"])).value == 2**63 - 1
    assert codec.decode(bytes.fromhex(py["py_set_revision_u64_max"]["frame_hex"])).revision == \
        2**64 - 1


def test_federation_feature_bit_is_kept_when_present():
    """JS and Python drop the federation bit when encoding; we decode what is on the wire."""
    js = by_name(JS)
    hello = codec.decode(bytes.fromhex(js["js_hello_token_all_features"]["frame_hex"]))
    assert hello.features == ["param", "event", "stream", "gesture", "timeline"]
    assert hello.token == "cpsk_secret"
    assert codec.encode(Hello("n", ["param", "federation"]))[6] == 0x84  # type, version, features


def test_js_ttl_is_absent_and_python_ttl_decodes():
    """JS has no TTL (docs/protocol.md §6.8); Python's raw 0x80000000 is absolute 0, not never."""
    js, py = by_name(JS), by_name(PY)
    assert codec.decode(bytes.fromhex(js["js_set_ttl_is_dropped_by_js"]["frame_hex"])).ttl is None
    assert codec.decode(bytes.fromhex(py["py_set_ttl_0_absolute"]["frame_hex"])).ttl == Ttl.absolute(0)
    assert codec.decode(bytes.fromhex(py["py_set_ttl_overflow_masked"]["frame_hex"])).ttl == \
        Ttl.sliding(5)
    assert codec.decode(bytes.fromhex(py["py_set_ttl_sliding_30"]["frame_hex"])).ttl == Ttl.sliding(30)


def test_null_payload_forms_stay_distinct():
    """JS sends indicator 1 + null, Python indicator 0 (docs/protocol.md §6.7): we keep them apart
    as value=None and value=MISSING, like the Rust decoder's Some(Null) vs None."""
    js, py = by_name(JS), by_name(PY)
    assert codec.decode(bytes.fromhex(js["js_publish_event_null_payload"]["frame_hex"])).value is None
    assert codec.decode(bytes.fromhex(py["py_publish_event_payload_none"]["frame_hex"])).value is MISSING


def test_python_unsupported_values_arrive_as_null():
    """Python silently sends tuple/bytearray as null; the frame is valid, the value is None.
    clasp_fast itself encodes tuples as arrays and bytearrays as bytes instead."""
    py = by_name(PY)
    assert codec.decode(bytes.fromhex(py["py_set_value_tuple_is_not_supported"]["frame_hex"])).value \
        is None
    assert codec.decode(codec.encode(Set("/t", (1, 2)))).value == [1, 2]
    assert codec.decode(codec.encode(Set("/t", bytearray(b"ab")))).value == b"ab"


def test_python_subscribe_mask_0_means_all_types():
    """Python drops gesture/timeline and sends mask 0x00; like the router we read it as all."""
    py = by_name(PY)
    sub = codec.decode(bytes.fromhex(py["py_subscribe_types_gesture_only_becomes_mask0"]["frame_hex"]))
    assert sub.types == []


def test_python_msgpack_fallbacks_decode_as_messages():
    """Python sends many types as v0 MessagePack in version-1 frames (docs/protocol.md §7.3)."""
    py = by_name(PY)
    bundle = codec.decode(bytes.fromhex(py["py_msgpack_fallback_bundle"]["frame_hex"]))
    assert isinstance(bundle, Bundle) and bundle.timestamp is None
    ack = codec.decode(bytes.fromhex(py["py_msgpack_fallback_ack"]["frame_hex"]))
    assert isinstance(ack, Ack)
    error = codec.decode(bytes.fromhex(py["py_msgpack_fallback_error"]["frame_hex"]))
    assert isinstance(error, Error) and error.code == 400
    # Non-UTF-8 bin inside v0: the reference rejects the message; we keep the bytes
    # (see test_handcrafted for the reasoning).
    with_bytes = codec.decode(bytes.fromhex(py["py_msgpack_fallback_bundle_with_bytes_value"]["frame_hex"]))
    assert with_bytes.messages[0] == Set("/b", b"\x00\xff")


def test_js_qos_and_frame_timestamp_are_reported():
    js = by_name(JS)
    frame = codec.decode_frame(bytes.fromhex(js["js_frame_timestamp_set"]["frame_hex"]))
    assert frame.timestamp == 1_700_000_000_000_000 and frame.qos == 1
    assert codec.decode_frame(bytes.fromhex(js["js_frame_qos_commit_publish"]["frame_hex"])).qos == 2


# ---------------------------------------------------------------------------------------------
# handcrafted.json: one expected outcome per vector


def err(offset, field):
    return ("error", offset, field)


# Decoded message, or err(byte offset, field). Derived from each vector's intent and docs/protocol.md.
HANDCRAFTED_EXPECTED = {
    # Narrow integer and f32 codes are widened (§4.1).
    "hc_set_i8_127": Set("/h", 127),
    "hc_set_i8_neg128": Set("/h", -128),
    "hc_set_i16_32767": Set("/h", 32767),
    "hc_set_i16_neg32768": Set("/h", -32768),
    "hc_set_i32_max": Set("/h", 2**31 - 1),
    "hc_set_i32_min": Set("/h", -(2**31)),
    "hc_set_i64_min": Set("/h", -(2**63)),
    "hc_set_i64_2pow53_plus1": Set("/h", 2**53 + 1),
    "hc_set_f32_1_5": Set("/h", 1.5),
    "hc_set_f32_0_1": Set("/h", 0.10000000149011612),
    "hc_set_f32_nan": Set("/h", float("nan")),
    "hc_set_f32_neg_inf": Set("/h", float("-inf")),
    "hc_set_array_narrow_ints_f32": Set("/h", [-1, -2, -3, 0.5, -4]),
    "hc_set_map_nested_narrow": Set("/h", {"a": 300, "b": {"c": 7}}),
    # Duplicate map keys: the last one wins, as in every decoder (§4).
    "hc_set_map_duplicate_key": Set("/h", {"k": 2}),
    "hc_set_string_65000_bytes": Set("/big", "x" * 65000),
    # TTL raw forms (§6.8): 0x80000000 is absolute 0, not never.
    "hc_set_ttl_raw_0x80000000": Set("/h", 1.0, ttl=Ttl.absolute(0)),
    "hc_set_ttl_raw_0x7fffffff": Set("/h", 1.0, ttl=Ttl.sliding(2**31 - 1)),
    "hc_set_flag_bits_vtype_only_bit3": Set("/h", "str"),
    # Trailing bytes after the last defined field are ignored (§6.18).
    "hc_set_trailing_garbage_in_payload": Set("/h", 2.0),
    # Signal codes 5..7 decode as event, phases 4..7 as start (§5).
    "hc_publish_sig_code_5": Publish("/p", "event", phase="start"),
    "hc_publish_sig_code_7_phase_7": Publish("/p", "event", phase="start"),
    "hc_publish_event_with_phase_end": Publish("/p", "event", phase="end"),
    # Unknown value indicator: "no body" (§6.7).
    "hc_publish_value_indicator_3": Publish("/p", "event", phase="start"),
    # rate is read iff >= 4 bytes remain; fewer are ignored (§6.7).
    "hc_publish_rate_only": Publish("/p", "stream", 1.0, phase="start", rate=60),
    "hc_publish_3_trailing_bytes": Publish("/p", "stream", phase="start"),
    "hc_publish_samples_with_ts_and_id": Publish("/g", "gesture", samples=[1.0, 2.0], timestamp=1000,
                                                 id=9, phase="move"),
    "hc_publish_value_i8": Publish("/p", "event", -5, phase="start"),
    # Frame header oddities that decode (§2): reserved QoS, version bits ignored,
    # encrypted/compressed ignored, timestamp u64 max, trailing bytes / a second frame ignored.
    "hc_frame_qos_reserved_3": Ping(),
    "hc_frame_version_0_binary_payload": Ping(),
    "hc_frame_version_7": Ping(),
    "hc_frame_encrypted_compressed_bits": Ping(),
    "hc_frame_timestamp_max": Ping(),
    "hc_frame_trailing_bytes": Ping(),
    "hc_frame_two_frames_concatenated": Ping(),
    # Malformed frames: DecodeError at the byte where the problem is.
    "hc_frame_truncated_payload": err(15, "payload"),  # buffer ends at 15, 18 declared
    "hc_frame_bad_magic": err(0, "magic"),
    "hc_frame_empty_payload": err(2, "payload_len"),
    "hc_frame_header_only_3_bytes": err(3, "header"),
    "hc_unknown_message_type_0x05": err(4, "type"),
    "hc_unknown_value_type_0x0c": err(5, "value"),  # the SET flags byte holds the type code
    "hc_invalid_utf8_string": err(12, "value"),  # first invalid byte (0xff)
    # The reference decoder panics on these two (§6.18, §11.16); we reject them.
    "hc_set_missing_revision_bytes": err(18, "revision"),
    "hc_bundle_inner_len_overflow": err(10, "item"),
    # Bundle items must be binary (§6.12).
    "hc_bundle_inner_msgpack": err(10, "item"),
    # The token string is a required field of WELCOME (§6.2); the reference's string read fails.
    "hc_welcome_missing_token_field": err(27, "token"),
    # Undefined feature bits are dropped; federation is kept for HELLO (§5).
    "hc_hello_federation_and_unknown_bits": Hello("fed", ["param", "federation"]),
    # Masks with none of the five bits are "all types" = [] (§5).
    "hc_subscribe_mask_0": Subscribe(1, "/a"),
    "hc_subscribe_mask_0x1f": Subscribe(1, "/a", ["param", "event", "stream", "gesture", "timeline"]),
    "hc_subscribe_mask_0xe0_unknown_bits": Subscribe(1, "/a"),
    "hc_ack_unknown_flag_bits": Ack(),
    "hc_error_correlation_only": Error(500, "x", correlation_id=9),
    "hc_federation_unknown_op": err(5, "op"),
    # v0 MessagePack payloads (§7), decoded as the reference does ...
    "hc_v0_set_float": Set("/a", 1.5, revision=1),
    "hc_v0_set_int": Set("/a", 7),
    "hc_v0_set_u64_value": Set("/a", float(2**64 - 1)),  # above i64::MAX -> float
    # ... except a non-UTF-8 bin: the reference fails the whole message; we keep it as bytes,
    # which is what the only v0 sender (the Python client) meant, and what JS/Python decode.
    "hc_v0_set_bin_value": Set("/a", b"\x00\xff"),
    "hc_v0_set_bin_value_utf8": Set("/a", "abc"),  # UTF-8 bin -> str, as the reference
    "hc_v0_set_array_small_ints": Set("/a", [1, 2, 3]),
    "hc_v0_set_ttl_sliding": Set("/a", 1, ttl=Ttl.sliding(30)),
    "hc_v0_set_ttl_never": Set("/a", 1, ttl=Ttl.never()),
    "hc_v0_ping": Ping(),
    "hc_v0_publish_event": Publish("/e", "event", "x"),  # v0 may lack phase: left None
    "hc_v0_subscribe": Subscribe(1, "/**", ["param"]),
    "hc_v0_hello": Hello("legacy", ["param"]),
    # Lower-case or missing type tags are rejected, as by the reference (§7.2).
    "hc_v0_lowercase_type": err(4, "v0.type"),
    "hc_v0_missing_type": err(4, "v0.type"),
}


def test_handcrafted_table_covers_every_vector():
    assert set(HANDCRAFTED_EXPECTED) == {v["name"] for v in HANDCRAFTED}
    assert len(HANDCRAFTED_EXPECTED) == 67


@pytest.mark.parametrize("vector", HANDCRAFTED, ids=lambda v: v["name"])
def test_handcrafted(vector):
    frame = bytes.fromhex(vector["frame_hex"])
    expected = HANDCRAFTED_EXPECTED[vector["name"]]
    if isinstance(expected, tuple):
        _, offset, field = expected
        with pytest.raises(DecodeError) as info:
            codec.decode(frame)
        assert (info.value.offset, info.value.field) == (offset, field)
        assert str(offset) in str(info.value) and field in str(info.value)
    else:
        got = codec.decode(frame)
        assert got == expected
        if isinstance(got, Publish) and got.samples is not None:
            assert isinstance(got.samples, numpy.ndarray) and got.samples.dtype == numpy.float64


def test_handcrafted_frame_header_fields():
    hc = by_name(HANDCRAFTED)
    qos3 = codec.decode_frame(bytes.fromhex(hc["hc_frame_qos_reserved_3"]["frame_hex"]))
    assert qos3.qos == 0  # reserved QoS 3 reads as Fire, like the reference
    flags = codec.decode_frame(bytes.fromhex(hc["hc_frame_encrypted_compressed_bits"]["frame_hex"]))
    assert flags.encrypted and flags.compressed and flags.version == 1
    assert codec.decode_frame(bytes.fromhex(hc["hc_frame_version_7"]["frame_hex"])).version == 7
    ts = codec.decode_frame(bytes.fromhex(hc["hc_frame_timestamp_max"]["frame_hex"]))
    assert ts.timestamp == 2**64 - 1 and ts.size == 13
    two = bytes.fromhex(hc["hc_frame_two_frames_concatenated"]["frame_hex"])
    assert codec.decode_frame(two).size == 5
    assert codec.decode_all(two) == [Ping(), codec.decode(two[5:])]

"""The codec's Python API: encode errors, multi-frame buffers, messages as objects."""

from __future__ import annotations

import math
import pickle

import numpy
import pytest

import clasp_fast
from clasp_fast import codec
from clasp_fast.errors import ClaspError, DecodeError, EncodeError
from clasp_fast.messages import (
    MISSING,
    QOS_COMMIT,
    QOS_CONFIRM,
    QOS_FIRE,
    Ack,
    Announce,
    Bundle,
    Get,
    Hello,
    Param,
    Ping,
    Pong,
    Publish,
    Result,
    Set,
    SignalInfo,
    SignalMeta,
    Snapshot,
    Subscribe,
    SubscribeOptions,
    Ttl,
    default_qos,
)

# ---------------------------------------------------------------------------------------------
# EncodeError for everything the wire cannot carry


def nested_list(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value, words",
    [
        (2**63, ["int", str(2**63), "i64", "value"]),
        (-(2**63) - 1, ["int", "i64"]),
        ([1, 2, 3, 2**70], ["i64", "value[3]"]),
        ({"a": {"b": [0, 2**64]}}, ["value['a']['b'][1]"]),
        ({1: "x"}, ["map key 1", "not a str"]),
        ({"ok": {b"k": 1}}, ["map key b'k'", "value['ok']"]),
        ("x" * 65536, ["string", "65536", "65535"]),
        ("€" * 21846, ["65538 UTF-8 bytes"]),
        (b"\x00" * 65536, ["bytes", "65536"]),
        (nested_list(65), ["nesting deeper than 64"]),
        (object(), ["unsupported value type object"]),
        ({1.5, 2.5}, ["unsupported value type set"]),
        ("\ud800", ["UTF-8"]),
    ],
)
def test_unrepresentable_value_raises_encode_error(value, words):
    with pytest.raises(EncodeError) as info:
        codec.encode(Set("/a", value))
    for word in words:
        assert word in str(info.value)
    assert isinstance(info.value, ClaspError)


def test_nesting_up_to_the_limit_is_fine():
    assert codec.MAX_NESTING == 64
    value = nested_list(64)
    assert codec.decode(codec.encode(Set("/a", value))).value == value


def test_nesting_beyond_the_limit_is_refused_when_decoding():
    # 65 nested empty arrays, hand-built: 0x0a 0x0001 ... 0x0a 0x0000
    data = b"\x0a\x00\x01" * 64 + b"\x0a\x00\x00"
    payload = b"\x21\x0a\x00\x02/a" + data[1:]
    frame = b"\x53\x41" + len(payload).to_bytes(2, "big") + payload
    with pytest.raises(DecodeError) as info:
        codec.decode(frame)
    assert "nesting" in str(info.value)


def test_payload_over_65535_bytes_raises():
    with pytest.raises(EncodeError) as info:
        codec.encode(Set("/a", ["x" * 60000, "y" * 6000]))
    assert "65535" in str(info.value)
    params = [Param(f"/p/{i}", 1.0, 1) for i in range(6000)]
    with pytest.raises(EncodeError):
        codec.encode(Snapshot(params))


@pytest.mark.parametrize(
    "message, words",
    [
        (Set(1, 1.0), ["address", "str", "int"]),
        (Set("/a", 1.0, revision=-1), ["revision", "-1"]),
        (Set("/a", 1.0, revision=2**64), ["revision"]),
        (Set("/a", 1.0, ttl=30), ["ttl", "Ttl"]),
        (Publish("/a", "noise"), ["signal", "noise"]),
        (Publish("/a", "gesture", phase="wiggle"), ["phase", "wiggle"]),
        (Publish("/a", value=1.0, samples=[1.0]), ["value or samples"]),
        (Publish("/a", samples=[[1.0, 2.0]]), ["one-dimensional"]),
        (Publish("/a", samples=["x"]), ["samples"]),
        (Publish("/a", id=2**32), ["id"]),
        (Subscribe(1, "/a", ["param", "sound"]), ["types", "sound"]),
        (Hello("n", ["param", "telepathy"]), ["feature", "telepathy"]),
        (Get(None), ["address", "NoneType"]),
        ("not a message", ["not a CLASP message"]),
        (Bundle([Ping(), 5]), ["not a CLASP message"]),
    ],
)
def test_bad_message_fields_raise_encode_error(message, words):
    with pytest.raises(EncodeError) as info:
        codec.encode(message)
    for word in words:
        assert word in str(info.value)


def test_bad_qos_and_timestamp_raise():
    with pytest.raises(EncodeError):
        codec.encode(Ping(), qos=3)
    with pytest.raises(EncodeError):
        codec.encode(Ping(), timestamp=-5)


def test_encoder_is_usable_after_an_error():
    with pytest.raises(EncodeError):
        codec.encode(Set("/a", [1, object()]))
    assert codec.encode(Ping()) == bytes.fromhex("5301000141")


# ---------------------------------------------------------------------------------------------
# Frames, QoS, timestamps


def test_default_qos_follows_the_reference_table():
    assert default_qos(Set("/a", 1)) == QOS_CONFIRM
    assert default_qos(Publish("/a", "stream")) == QOS_FIRE
    assert default_qos(Publish("/a", "timeline")) == QOS_COMMIT
    assert default_qos(Publish("/a", "event")) == QOS_CONFIRM
    assert default_qos(Publish("/a")) == QOS_FIRE
    assert default_qos(Bundle([])) == QOS_COMMIT
    assert default_qos(Subscribe(1, "/a")) == QOS_CONFIRM
    assert default_qos(Ping()) == QOS_FIRE


def test_frame_header_fields_round_trip():
    frame = codec.decode_frame(codec.encode(Set("/a", 1.0), qos=QOS_COMMIT, timestamp=2**64 - 1))
    assert (frame.qos, frame.timestamp, frame.version, frame.encrypted, frame.compressed) == \
        (2, 2**64 - 1, 1, False, False)
    assert frame.message == Set("/a", 1.0)
    assert frame.size == 12 + 1 + 1 + 4 + 8
    assert "Frame(Set(" in repr(frame)


def test_decode_accepts_bytes_like_and_ignores_trailing_bytes():
    data = codec.encode(Set("/a", 1.0)) + b"junk"
    assert codec.decode(bytearray(data)) == Set("/a", 1.0)
    assert codec.decode(memoryview(data)) == Set("/a", 1.0)
    assert codec.decode(memoryview(b"xx" + data)[2:]) == Set("/a", 1.0)
    with pytest.raises(TypeError):
        codec.decode("53010001")


def test_decode_all_and_iter_frames():
    messages = [Set("/a", float(i)) if i % 2 else Publish("/s", "stream", float(i), phase="start")
                for i in range(50)]
    buffer = b"".join(codec.encode(m) for m in messages)
    assert codec.decode_all(buffer) == messages
    assert [f.message for f in codec.iter_frames(buffer)] == messages
    assert codec.decode_all(b"") == []


def test_decode_all_reports_the_offset_of_a_bad_frame():
    good = codec.encode(Ping())
    bad = bytes.fromhex("530100020500")  # unknown type 0x05
    with pytest.raises(DecodeError) as info:
        codec.decode_all(good + good + bad + good)
    assert info.value.offset == 14 and info.value.field == "type"


def test_decode_all_collect_skips_bad_payloads_and_stops_at_broken_headers():
    good = codec.encode(Set("/a", 1.0))
    bad_payload = bytes.fromhex("5341000a210800022f680002fffe")  # invalid UTF-8
    messages, errors = codec.decode_all(good + bad_payload + good, errors="collect")
    assert messages == [Set("/a", 1.0), Set("/a", 1.0)]
    assert len(errors) == 1 and errors[0].offset == len(good) + 12

    messages, errors = codec.decode_all(good + b"\x54\x01\x00\x01\x41" + good, errors="collect")
    assert messages == [Set("/a", 1.0)]
    assert len(errors) == 1 and errors[0].field == "magic" and errors[0].offset == len(good)

    messages, errors = codec.decode_all(good + good[:7], errors="collect")
    assert messages == [Set("/a", 1.0)] and errors[0].field == "payload"
    with pytest.raises(ValueError):
        codec.decode_all(good, errors="ignore")


def test_frame_size_for_stream_reassembly():
    frame = codec.encode(Set("/a", 1.0), timestamp=5)
    two = codec.encode(Ping()) + frame
    assert codec.frame_size(two) == 5
    assert codec.frame_size(two, 5) == len(frame)
    assert codec.frame_size(two[:7], 5) is None
    assert codec.frame_size(b"") is None
    with pytest.raises(DecodeError):
        codec.frame_size(b"\x00\x01\x00\x01")


def test_write_buffer_collects_frames():
    buf = codec.WriteBuffer()
    assert buf.append(Ping()) == 5
    assert buf.append(Set("/a", 1.0), qos=0) == 18
    with pytest.raises(EncodeError):
        buf.append(Set("/a", object()))
    assert len(buf) == 23  # the failed append left nothing behind
    assert codec.decode_all(buf.getvalue()) == [Ping(), Set("/a", 1.0)]
    buf.clear()
    assert len(buf) == 0


# ---------------------------------------------------------------------------------------------
# Values and messages as Python objects


def test_value_types_round_trip():
    value = {"n": None, "t": True, "f": False, "i": -7, "x": 0.25, "s": "ünï", "b": b"\x00\xff",
             "l": [1, [2.0, "3"]], "m": {"k": {}}, "e": []}
    assert codec.decode(codec.encode(Set("/a", value))).value == value
    assert codec.decode(codec.encode(Set("/a", numpy.float64(1.5)))).value == 1.5
    assert codec.decode(codec.encode(Set("/a", numpy.int32(-3)))).value == -3
    decoded = codec.decode(codec.encode(Set("/a", True))).value
    assert decoded is True


def test_int_and_float_are_distinct_and_nan_equals_nan():
    assert Set("/a", 1) != Set("/a", 1.0)
    assert Set("/a", float("nan")) == Set("/a", float("nan"))
    assert Set("/a", [True]) != Set("/a", [1])
    assert codec.decode(codec.encode(Set("/a", 3))).value.__class__ is int


def test_samples_are_numpy_float64():
    samples = numpy.linspace(-1.0, 1.0, 64)
    message = codec.decode(codec.encode(Publish("/audio", "stream", samples=samples, rate=48000)))
    assert isinstance(message.samples, numpy.ndarray) and message.samples.dtype == numpy.float64
    assert numpy.array_equal(message.samples, samples)
    assert message.samples.flags.writeable
    # Non-contiguous arrays, float32 arrays and plain lists are accepted too.
    assert numpy.array_equal(codec.decode(codec.encode(Publish("/a", samples=samples[::2]))).samples,
                             samples[::2])
    f32 = numpy.array([0.5, 1.5], dtype=numpy.float32)
    assert codec.decode(codec.encode(Publish("/a", samples=f32))).samples.tolist() == [0.5, 1.5]
    assert codec.decode(codec.encode(Publish("/a", samples=[]))).samples.shape == (0,)


def test_publish_value_missing_versus_null():
    assert codec.decode(codec.encode(Publish("/a", "event"))).value is MISSING
    assert codec.decode(codec.encode(Publish("/a", "event", None))).value is None
    assert not MISSING and repr(MISSING) == "MISSING"


def test_repr_shows_non_default_fields():
    assert repr(Set("/a", 1.0, revision=3)) == "Set(address='/a', value=1.0, revision=3)"
    assert repr(Publish("/p", "event", value=None)) == "Publish(address='/p', signal='event', value=None)"
    assert repr(Ping()) == "Ping()"
    assert repr(Ttl.sliding(5)) == "Ttl.sliding(5)"
    assert repr(Hello("n")) == "Hello(name='n')"


def test_messages_compare_by_type_and_fields():
    assert Set("/a", 1.0) == Set("/a", 1.0)
    assert Set("/a", 1.0) != Set("/b", 1.0)
    assert Ping() != Pong()
    assert Get("/a") != "/a"
    with pytest.raises(TypeError):
        hash(Set("/a", 1.0))


def test_messages_pickle():
    message = Announce("/ns", [SignalInfo("/ns/x", "param", "f64", "rw",
                                          SignalMeta("dB", (-1.0, 1.0), 0.0, "gain"))])
    assert pickle.loads(pickle.dumps(message)) == message
    assert pickle.loads(pickle.dumps(Set("/a", 1, ttl=Ttl.absolute(3)))) == Set("/a", 1, ttl=Ttl.absolute(3))


def test_ttl_forms():
    assert Ttl.from_raw(0) == Ttl.never() and Ttl.never().raw == 0
    assert Ttl.from_raw(0x80000005) == Ttl.absolute(5) and Ttl.absolute(5).raw == 0x80000005
    assert Ttl.from_raw(30) == Ttl.sliding(30) and Ttl.sliding(30).mode == "sliding"
    assert Ttl.sliding(30).secs == 30
    with pytest.raises(ValueError):
        Ttl.sliding(2**31)
    with pytest.raises(ValueError):
        Ttl("forever")


def test_result_drops_meta_and_subscribe_empty_options_are_none():
    info = SignalInfo("/x", "param", meta=SignalMeta(unit="m"))
    assert codec.decode(codec.encode(Result([info]))).signals == [SignalInfo("/x", "param")]
    assert codec.decode(codec.encode(Subscribe(1, "/a", options=SubscribeOptions()))).options is None


def test_ack_and_snapshot_fields():
    ack = Ack("/a", 2**64 - 1, False, "sess", 7)
    assert codec.decode(codec.encode(ack)) == ack
    snap = Snapshot([Param("/a", 1, 1, "w", 5), Param("/b", None, 2)])
    assert codec.decode(codec.encode(snap)) == snap


def test_top_level_package_exports():
    assert clasp_fast.encode is codec.encode and clasp_fast.decode is codec.decode
    assert clasp_fast.Set is Set and clasp_fast.MISSING is MISSING
    assert math.isfinite(clasp_fast.decode(clasp_fast.encode(clasp_fast.Set("/a", 1.0))).value)

"""Property tests: round trips for every message type, and hostile bytes never crash."""

from __future__ import annotations

import numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clasp_fast import codec
from clasp_fast.errors import DecodeError
from clasp_fast.messages import (
    FEATURES,
    MISSING,
    PHASES,
    SIGNAL_TYPES,
    Ack,
    Announce,
    Bundle,
    Error,
    FederationSync,
    Get,
    Hello,
    Param,
    Ping,
    Pong,
    Publish,
    Query,
    Replay,
    Result,
    Set,
    SignalInfo,
    SignalMeta,
    Snapshot,
    Subscribe,
    SubscribeOptions,
    Sync,
    Ttl,
    Unsubscribe,
    Welcome,
)
from clasp_fast.wire.neutral import from_neutral, to_neutral

from .spec_data import load_json

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=12)
nonempty = st.text(min_size=1, max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)
signal_types = st.sampled_from(SIGNAL_TYPES)
type_lists = st.lists(signal_types, unique=True).map(
    lambda names: [n for n in SIGNAL_TYPES if n in names])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), floats, text,
    st.binary(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)

ttls = st.one_of(st.just(Ttl.never()), st.integers(1, 2**31 - 1).map(Ttl.sliding),
                 st.integers(0, 2**31 - 1).map(Ttl.absolute))
opt = st.none().__or__
metas = st.builds(SignalMeta, opt(nonempty), opt(st.tuples(floats, floats)),
                  st.one_of(st.just(MISSING), values), opt(text))
options = st.builds(SubscribeOptions, u32, opt(floats), opt(u32), opt(u32))

simple_messages = st.one_of(
    st.builds(Hello, text, st.lists(st.sampled_from(FEATURES), unique=True).map(
        lambda f: [n for n in FEATURES if n in f]), u8, opt(nonempty)),
    st.builds(Welcome, text, text, st.lists(st.sampled_from(FEATURES[:5]), unique=True).map(
        lambda f: [n for n in FEATURES if n in f]), u64, u8, opt(nonempty)),
    st.builds(Announce, text, st.lists(st.builds(SignalInfo, text, signal_types, opt(text),
                                                 opt(text), opt(metas)), max_size=3)),
    st.builds(FederationSync, st.integers(1, 4), st.lists(text, max_size=3),
              st.dictionaries(text, u64, max_size=3), opt(u64), opt(text)),
    st.builds(Subscribe, u32, text, type_lists, opt(options)),
    st.builds(Unsubscribe, u32),
    st.builds(Publish, text, signal_types, st.one_of(st.just(MISSING), values), st.none(),
              opt(u64), opt(u32), st.sampled_from(PHASES), opt(u32)),
    st.builds(lambda a, s, samples, ts, r: Publish(a, s, samples=numpy.array(samples, dtype=float),
                                                   timestamp=ts, phase="start", rate=r),
              text, signal_types, st.lists(floats, max_size=20), opt(u64), opt(u32)),
    st.builds(Set, text, values, opt(u64), st.booleans(), st.booleans(), opt(ttls)),
    st.builds(Get, text),
    st.builds(Snapshot, st.lists(st.builds(Param, text, values, u64, opt(text), opt(u64)),
                                 max_size=3)),
    st.builds(Replay, text, opt(u64), opt(u64), opt(u32), type_lists),
    st.builds(Sync, u64, opt(u64), opt(u64)),
    st.just(Ping()),
    st.just(Pong()),
    st.builds(Ack, opt(text), opt(u64), opt(st.booleans()), opt(text), opt(u32)),
    st.builds(Error, u16, text, opt(text), opt(u32)),
    st.builds(Query, text),
    st.builds(Result, st.lists(st.builds(SignalInfo, text, signal_types, opt(text), opt(text)),
                               max_size=3)),
)
messages = st.recursive(
    simple_messages,
    lambda inner: st.builds(Bundle, st.lists(inner, max_size=3), opt(u64)),
    max_leaves=6,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.sampled_from([None, 0, 1, 2]), opt(u64))
def test_decode_of_encode_is_identity(message, qos, timestamp):
    frame = codec.encode(message, qos=qos, timestamp=timestamp)
    decoded = codec.decode_frame(frame)
    assert decoded.message == message
    assert decoded.timestamp == timestamp
    assert decoded.size == len(frame)
    assert decoded.qos == (codec.default_qos(message) if qos is None else qos)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_neutral_form_round_trips(message):
    assert from_neutral(to_neutral(message)) == message


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_raise_decode_error(data):
    for candidate in (data, b"\x53" + data, b"\x53\x01" + len(data).to_bytes(2, "big") + data):
        try:
            codec.decode(candidate)
        except DecodeError as e:
            assert e.offset is not None and 0 <= e.offset <= len(candidate)


FRAMES = [bytes.fromhex(v["frame_hex"])
          for name in ("reference_rust", "official_js", "official_py", "handcrafted")
          for v in load_json(f"vectors/{name}.json")]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(FRAMES), st.lists(st.tuples(st.integers(0, 2**16), u8), min_size=1,
                                          max_size=4))
def test_mutated_frames_decode_or_raise_decode_error(frame, edits):
    data = bytearray(frame)
    for position, byte in edits:
        data[position % len(data)] = byte
    try:
        codec.decode(bytes(data))
    except DecodeError as e:
        assert e.offset is not None and 0 <= e.offset <= len(data)
    messages, errors = codec.decode_all(bytes(data) * 2, errors="collect")
    assert all(isinstance(e, DecodeError) for e in errors)

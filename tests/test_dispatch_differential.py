"""Randomized differential test: the compiled dispatcher delivers exactly what the plain-Python
registry and receive path delivered (tests/callbacks_model.py), for random subscriptions
(patterns, type filters, arities, failing callbacks), random batches (SET, PUBLISH, other
messages, malformed frames) received in random slices.

One deliberate difference: the compiled walk reports a malformed frame where it meets it, the
Python path reported a slice's malformed frames after delivering the slice. So decode errors are
compared as their own list; everything else is compared as one ordered event stream.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clasp_fast._dispatch import CallbackRegistry
from clasp_fast.codec import encode
from clasp_fast.errors import DecodeError
from clasp_fast.messages import Get, Ping, Publish, Set

from tests.callbacks_model import ModelRegistry

SETTINGS = settings(max_examples=int(os.environ.get("CLASP_FAST_HYPOTHESIS_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

SIGNALS = ("param", "event", "stream", "gesture", "timeline")
segments = st.sampled_from(["a", "b", "ab", "x", ""])
pattern_segments = st.sampled_from(["a", "b", "ab", "*", "**", "a*", "*b"])
addresses = st.lists(segments, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))
patterns = st.lists(pattern_segments, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
type_filters = st.one_of(st.none(), st.lists(st.sampled_from(SIGNALS + ("custom",)), max_size=3))


class Later:
    """An awaitable a callback returns (spawn gets it)."""

    def __init__(self, tag: object) -> None:
        self.tag = tag

    def __await__(self):
        return iter(())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Later) and other.tag == self.tag


subscriptions = st.lists(
    st.tuples(patterns, type_filters, st.sampled_from([2, 3]), st.sampled_from(["ok", "raise", "await"])),
    min_size=1, max_size=6)

frames = st.one_of(
    st.builds(lambda a, v: encode(Set(a, v)), addresses, st.integers(-5, 5)),
    st.builds(lambda a, s, v: encode(Publish(a, signal=s, value=v)), addresses, st.sampled_from(SIGNALS),
              st.integers(-5, 5)),
    st.builds(lambda a: encode(Get(a)), addresses),
    st.just(encode(Ping())),
    st.just(b"\x53\x01\x00\x02\x99\x00"),  # intact header, unknown type: skipped
)
batches = st.tuples(st.lists(frames, min_size=1, max_size=12),
                    st.sampled_from([b"", b"", b"\x53\x01\x00\x40"]))  # sometimes a truncated last frame


def build(registry_class, subs, removed):
    events: list = []
    decode_errors: list = []

    def report(exc: Exception) -> None:
        if isinstance(exc, DecodeError):
            decode_errors.append((exc.offset, exc.field, str(exc)))
        else:
            events.append(("report", type(exc).__name__, str(exc)))

    registry = registry_class(lambda awaitable: events.append(("spawn", awaitable)), report)
    for index, (pattern, types, arity, behaviour) in enumerate(subs):
        def callback(value, address, message=None, index=index, arity=arity, behaviour=behaviour):
            events.append(("call", index, value, address, None if arity == 2 else type(message).__name__))
            if behaviour == "raise":
                raise RuntimeError(f"callback {index} on {address}")
            if behaviour == "await":
                return Later((index, address))
            return None

        if arity == 2:
            registry.add(pattern, lambda v, a, cb=callback: cb(v, a), types)
        else:
            registry.add(pattern, callback, types)
    for subscription_id in removed:
        registry.remove(subscription_id)
    return registry, events, decode_errors


@SETTINGS
@given(subscriptions, st.lists(st.integers(1, 6), max_size=3), batches, st.sampled_from([-1, 1, 2, 3, 5]))
def test_receive_delivers_what_the_python_path_delivered(subs, removed, batch, max_frames):
    data = b"".join(batch[0]) + batch[1]
    outcomes = []
    for registry_class in (CallbackRegistry, ModelRegistry):
        registry, events, decode_errors = build(registry_class, subs, removed)
        slices = []
        start = 0
        while start < len(data):
            result = registry.receive(data, start, max_frames, other=lambda m: events.append(("other", m)))
            slices.append(result)
            start = result[0]
        outcomes.append((events, decode_errors, slices, [s.id for s in registry]))
    assert outcomes[0] == outcomes[1]


@SETTINGS
@given(subscriptions, addresses, st.sampled_from(SIGNALS + ("custom", "")), st.integers())
def test_dispatch_calls_what_the_python_registry_called(subs, address, signal, value):
    outcomes = []
    for registry_class in (CallbackRegistry, ModelRegistry):
        registry, events, _ = build(registry_class, subs, ())
        registry.dispatch(address, value, signal, "message")
        outcomes.append(events)
    assert outcomes[0] == outcomes[1]

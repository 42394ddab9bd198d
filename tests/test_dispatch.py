"""The compiled dispatcher (clasp_fast._dispatch): subscriptions, dispatch, and the receive path
that decodes a DataChannel message and calls the callbacks without leaving compiled code."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from clasp_fast import _dispatch
from clasp_fast.runtime import dispatch as runtime_dispatch
from clasp_fast._codec import decode_slice, frame_count
from clasp_fast.codec import encode
from clasp_fast.errors import DecodeError, PatternError
from clasp_fast.messages import Bundle, Get, Param, Ping, Publish, Set

BAD_TYPE = b"\x53\x01\x00\x02\x99\x00"  # intact header, unknown message type 0x99


class Recorder:
    """A registry whose spawn and report go to lists."""

    def __init__(self) -> None:
        self.spawned: list = []
        self.reported: list[Exception] = []
        self.registry = _dispatch.CallbackRegistry(self.spawned.append, self.reported.append)


def test_the_python_layer_uses_the_compiled_registry():
    assert runtime_dispatch.CallbackRegistry is _dispatch.CallbackRegistry
    assert runtime_dispatch.CallbackSubscription is _dispatch.Subscription
    assert runtime_dispatch.wants_message is _dispatch.wants_message


def test_add_gives_fresh_ids_and_remove_returns_the_subscription():
    r = Recorder().registry
    first = r.add("/a/*", lambda v, a: None)
    second = r.add("/b/**", lambda v, a, m: None, types=["event", "stream"])
    assert (first.id, second.id) == (1, 2)
    assert (second.pattern, second.types, second.wants_message) == ("/b/**", frozenset({"event", "stream"}), True)
    assert (first.types, first.wants_message) == (None, False)
    assert [s.id for s in r] == [1, 2] and len(r) == 2
    assert r.remove(1) is first
    assert r.remove(1) is None
    assert r.add("/c", print).id == 3  # ids are never reused


def test_an_invalid_pattern_is_refused_and_uses_no_id():
    r = Recorder().registry
    with pytest.raises(PatternError, match="empty segment"):
        r.add("/a//b", print)
    assert len(r) == 0
    assert r.add("/a", print).id == 1


def test_dispatch_passes_the_message_to_callbacks_that_take_three_arguments():
    rec = Recorder()
    got = []
    rec.registry.add("/a/*", lambda value, address: got.append(("two", value, address)))
    rec.registry.add("/a/**", lambda value, address, message: got.append(("three", value, address, message)))
    rec.registry.add("/a/*", lambda *args: got.append(("star", args)))
    rec.registry.dispatch("/a/b", 5, "param", "the message")
    assert got == [("two", 5, "/a/b"), ("three", 5, "/a/b", "the message"), ("star", (5, "/a/b", "the message"))]


def test_types_filter_by_signal_including_unknown_names():
    rec = Recorder()
    got = []
    rec.registry.add("/**", lambda v, a: got.append(("events", v)), types=["event"])
    rec.registry.add("/**", lambda v, a: got.append(("custom", v)), types=["custom"])
    rec.registry.add("/**", lambda v, a: got.append(("all", v)))
    for value, signal in ((1, "param"), (2, "event"), (3, "custom"), (4, "stream")):
        rec.registry.dispatch("/x", value, signal, None)
    assert got == [("all", 1), ("events", 2), ("all", 2), ("custom", 3), ("all", 3), ("all", 4)]


def test_a_failing_callback_is_reported_and_the_others_still_run():
    rec = Recorder()
    got = []

    def broken(value, address):
        raise RuntimeError(f"broken on {address}")

    rec.registry.add("/a", lambda v, a: got.append(1))
    rec.registry.add("/a", broken)
    rec.registry.add("/a", lambda v, a: got.append(3))
    rec.registry.dispatch("/a", None, "param", None)
    assert got == [1, 3]
    assert [str(e) for e in rec.reported] == ["broken on /a"]


def test_a_base_exception_from_a_callback_is_not_swallowed():
    rec = Recorder()

    def interrupt(value, address):
        raise KeyboardInterrupt

    rec.registry.add("/a", interrupt)
    with pytest.raises(KeyboardInterrupt):
        rec.registry.receive(encode(Set("/a", 1)))


async def test_coroutines_returned_by_callbacks_go_to_spawn():
    done = []

    async def handler(value, address):
        done.append((value, address))

    tasks: list[asyncio.Task] = []
    registry = _dispatch.CallbackRegistry(lambda c: tasks.append(asyncio.ensure_future(c)), pytest.fail)
    registry.add("/a", handler)
    registry.receive(encode(Set("/a", 7)))
    await asyncio.gather(*tasks)
    assert done == [(7, "/a")]


def test_dispatch_message_knows_set_publish_and_snapshot_params():
    rec = Recorder()
    got = []
    rec.registry.add("/**", lambda value, address, message: got.append((value, address, type(message).__name__)))
    samples = [0.5, 0.25]
    assert rec.registry.dispatch_message(Set("/s", 1))
    assert rec.registry.dispatch_message(Publish("/p", signal="stream", samples=samples))
    assert rec.registry.dispatch_message(Publish("/e", value=None))  # no signal: an event
    assert rec.registry.dispatch_message(Param("/q", 2, revision=3))
    assert not rec.registry.dispatch_message(Get("/s"))
    assert not rec.registry.dispatch_message(Bundle([Set("/s", 9)]))
    assert got == [(1, "/s", "Set"), (samples, "/p", "Publish"), (None, "/e", "Publish"), (2, "/q", "Param")]


def test_receive_delivers_every_set_and_publish_of_a_batch_in_order():
    rec = Recorder()
    got = []
    rec.registry.add("/lumen/*/opacity", lambda v, a: got.append(("opacity", v, a)))
    rec.registry.add("/lumen/**", lambda v, a, m: got.append(("any", v, a, type(m).__name__)), types=["event"])
    others = []
    batch = b"".join([
        encode(Set("/lumen/0/opacity", 0.5)),
        encode(Publish("/lumen/cue", signal="event", value="go")),
        encode(Get("/lumen/0/opacity")),
        encode(Set("/lumen/1/opacity", 1.0), timestamp=123),
        encode(Publish("/elsewhere", signal="event", value=1)),
    ])
    end, decoded, failed = rec.registry.receive(batch, other=others.append)
    assert (end, decoded, failed) == (len(batch), 5, 0)
    assert got == [("opacity", 0.5, "/lumen/0/opacity"), ("any", "go", "/lumen/cue", "Publish"),
                   ("opacity", 1.0, "/lumen/1/opacity")]
    assert others == [Get("/lumen/0/opacity")]
    assert rec.reported == []


def test_receive_reports_a_bad_frame_with_its_offset_and_goes_on():
    rec = Recorder()
    got = []
    rec.registry.add("/a", lambda v, a: got.append(v))
    first = encode(Set("/a", 1))
    batch = first + BAD_TYPE + encode(Set("/a", 2))
    assert rec.registry.receive(batch) == (len(batch), 2, 1)
    assert got == [1, 2]
    [error] = rec.reported
    assert isinstance(error, DecodeError)
    assert (error.offset, error.field) == (len(first) + 4, "type")


def test_receive_sends_decode_errors_to_their_own_sink_when_given():
    rec = Recorder()
    decode_errors: list[DecodeError] = []
    rec.registry.add("/a", lambda v, a: 1 / 0)
    batch = BAD_TYPE + encode(Set("/a", 2))
    assert rec.registry.receive(batch, decode_error=decode_errors.append) == (len(batch), 1, 1)
    assert [e.offset for e in decode_errors] == [4]
    assert [type(e) for e in rec.reported] == [ZeroDivisionError]


def test_a_broken_header_ends_the_walk():
    rec = Recorder()
    got = []
    rec.registry.add("/a", lambda v, a: got.append(v))
    good = encode(Set("/a", 1))
    batch = good + b"\x00garbage" + encode(Set("/a", 2))
    assert rec.registry.receive(batch) == (len(batch), 1, 1)
    assert got == [1]
    assert rec.reported[0].field == "magic" and rec.reported[0].offset == len(good)


def test_receive_in_slices_returns_the_next_offset_like_decode_slice():
    rec = Recorder()
    got = []
    rec.registry.add("/n", lambda v, a: got.append(v))
    batch = b"".join(encode(Set("/n", i)) for i in range(10)) + BAD_TYPE + encode(Set("/n", 10))
    start, slices = 0, 0
    while start < len(batch):
        end, decoded, failed = rec.registry.receive(batch, start, 3)
        assert end == decode_slice(batch, start, 3)[2]
        assert decoded + failed == 3 or end == len(batch)
        start, slices = end, slices + 1
    assert slices == 4
    assert got == list(range(11))
    assert len(rec.reported) == 1


def test_intercept_sees_every_message_first_and_can_consume_it():
    rec = Recorder()
    got = []
    seen = []
    rec.registry.add("/**", lambda v, a: got.append(a))

    def intercept(message):
        seen.append(type(message).__name__)
        return getattr(message, "address", None) == "/hidden"

    batch = encode(Set("/shown", 1)) + encode(Set("/hidden", 2)) + encode(Ping())
    others = []
    rec.registry.receive(batch, intercept=intercept, other=others.append)
    assert seen == ["Set", "Set", "Ping"]
    assert got == ["/shown"]
    assert others == [Ping()]


def test_failing_intercept_and_other_are_reported_and_the_walk_goes_on():
    rec = Recorder()
    got = []
    rec.registry.add("/a", lambda v, a: got.append(v))

    def other(message):
        raise ValueError("other failed")

    batch = encode(Ping()) + encode(Set("/a", 1))
    assert rec.registry.receive(batch, other=other) == (len(batch), 2, 0)
    assert got == [1]
    assert [str(e) for e in rec.reported] == ["other failed"]


def test_receive_accepts_bytes_like_objects_and_checks_its_arguments():
    rec = Recorder()
    got = []
    rec.registry.add("/a", lambda v, a: got.append(v))
    frame = encode(Set("/a", 1))
    rec.registry.receive(bytearray(frame))
    rec.registry.receive(memoryview(frame))
    assert got == [1, 1]
    with pytest.raises(TypeError, match="bytes-like"):
        rec.registry.receive("not bytes")
    with pytest.raises(ValueError, match="outside the buffer"):
        rec.registry.receive(frame, len(frame) + 1)
    with pytest.raises(ValueError, match="max_frames"):
        rec.registry.receive(frame, 0, 0)


def test_callbacks_that_change_the_registry_during_delivery():
    rec = Recorder()
    got = []
    registry = rec.registry

    def once(value, address):
        got.append(("once", value))
        registry.remove(first.id)
        registry.add("/a", lambda v, a: got.append(("late", v)))

    first = registry.add("/a", once)
    registry.add("/a", lambda v, a: got.append(("steady", v)))
    batch = encode(Set("/a", 1)) + encode(Set("/a", 2))
    registry.receive(batch)
    # The callbacks matched for a message are the ones registered when it is dispatched.
    assert got == [("once", 1), ("steady", 1), ("steady", 2), ("late", 2)]


def test_a_context_variable_set_around_receive_is_visible_in_callbacks():
    # How the transport keeps its Delivery metadata (current_delivery) for a slice.
    delivery: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("delivery", default=None)
    rec = Recorder()
    seen = []
    rec.registry.add("/a", lambda v, a: seen.append(delivery.get()))
    batch = encode(Set("/a", 1)) * 3
    fields = ("peer-1", "clasp-reliable", frame_count(batch), len(batch))
    token = delivery.set(fields)
    try:
        rec.registry.receive(batch)
    finally:
        delivery.reset(token)
    assert seen == [fields] * 3

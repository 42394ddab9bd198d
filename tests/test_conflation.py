"""clasp_fast.conflation: which messages conflate, and the guarantees of the latest-value queue."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clasp_fast.conflation import ConflationPolicy, LatestValueQueue
from clasp_fast.errors import PatternError
from clasp_fast.messages import MSG_PUBLISH, MSG_SET, Bundle, Get, Publish, Set, Ttl

# -- the policy --------------------------------------------------------------------------------


def test_only_plain_sets_and_stream_publishes_under_the_patterns_conflate() -> None:
    policy = ConflationPolicy(["/sensor/**", "/mixer/*/gain"])
    assert policy.kind(Set(address="/sensor/a/x", value=1.0)) == MSG_SET
    assert policy.kind(Set(address="/sensor/a", value=1.0, ttl=Ttl.sliding(5))) == MSG_SET
    assert policy.kind(Publish(address="/mixer/3/gain", signal="stream", value=0.5)) == MSG_PUBLISH
    assert policy.kind(Publish(address="/sensor/accel", signal="stream", samples=[1.0, 2.0])) == MSG_PUBLISH
    never = [
        Set(address="/sensor/a", value=1, revision=4),  # compare-and-set
        Set(address="/sensor/a", value=1, lock=True),
        Set(address="/sensor/a", value=1, unlock=True),
        Publish(address="/sensor/a", signal="event", value=1),
        Publish(address="/sensor/a", signal="gesture", id=1, phase="move", value=1),
        Publish(address="/sensor/a", signal="timeline", value=1),
        Publish(address="/sensor/a", signal="param", value=1),
        Bundle(messages=[Set(address="/sensor/a", value=1)], timestamp=7),  # the exactly-once envelope
        Get(address="/sensor/a"),
        Set(address="/other/a", value=1),
        Publish(address="/mixer/3/mute", signal="stream", value=1),
        b"\x53\x01\x00\x01\x41",
    ]
    assert [policy.kind(m) for m in never] == [None] * len(never)


def test_a_whole_channel_opts_in_with_the_double_star() -> None:
    policy = ConflationPolicy("/**")
    assert policy.matches("/a") and policy.matches("/a/b/c")
    assert policy.patterns == ("/**",)


@pytest.mark.parametrize("pattern, reason", [("sensor/**", "must start with '/'"), ("/a//b", "empty segment"),
                                              ("", "empty")])
def test_an_invalid_pattern_is_one_clear_error_naming_it(pattern, reason) -> None:
    with pytest.raises(PatternError, match=reason) as info:
        ConflationPolicy(["/ok/**", pattern])
    assert info.value.address == pattern
    assert "conflation pattern" in str(info.value)


def test_a_policy_needs_patterns_that_are_strings() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ConflationPolicy([])
    with pytest.raises(PatternError, match="must be a string"):
        ConflationPolicy([42])


# -- the queue: examples -----------------------------------------------------------------------

def test_a_newer_value_replaces_the_waiting_one_in_its_place() -> None:
    q: LatestValueQueue[str] = LatestValueQueue()
    assert not q.push("a=1", "/a", MSG_SET)
    assert not q.push("b=1", "/b", MSG_SET)
    assert q.push("a=2", "/a", MSG_SET)
    assert q.push("a=3", "/a", MSG_SET)
    assert (len(q), q.conflated, q.open_slots) == (2, 2, 2)
    assert list(q.drain()) == ["a=3", "b=1"]
    assert q.open_slots == 0


def test_once_a_value_left_the_next_one_waits_again() -> None:
    q: LatestValueQueue[str] = LatestValueQueue()
    q.push("a=1", "/a", MSG_SET)
    assert q.pop() == "a=1"
    assert not q.push("a=2", "/a", MSG_SET)
    assert list(q.drain()) == ["a=2"] and q.conflated == 0


def test_set_and_stream_to_one_address_do_not_replace_each_other() -> None:
    q: LatestValueQueue[str] = LatestValueQueue()
    q.push("set=1", "/a", MSG_SET)
    q.push("stream=1", "/a", MSG_PUBLISH)
    q.push("stream=2", "/a", MSG_PUBLISH)
    assert list(q.drain()) == ["set=1", "stream=2"]


def test_events_are_never_conflated_and_fence_their_own_address() -> None:
    q: LatestValueQueue[str] = LatestValueQueue()
    q.push("a=1", "/a", MSG_SET)
    q.push("b=1", "/b", MSG_SET)
    q.push("event /a", "/a")
    q.push("event /a", "/a")
    q.push("a=2", "/a", MSG_SET)  # behind the events to /a: a new slot
    q.push("b=2", "/b", MSG_SET)  # no fence for /b: replaces b=1, ahead of the events
    assert list(q.drain()) == ["a=1", "b=2", "event /a", "event /a", "a=2"]


def test_fence_all_keeps_every_value_on_its_side_of_any_event() -> None:
    q: LatestValueQueue[str] = LatestValueQueue(fence="all")
    q.push("a=1", "/a", MSG_SET)
    q.push("b=1", "/b", MSG_SET)
    q.push("cue", "/cue/go")
    q.push("b=2", "/b", MSG_SET)
    q.push("b=3", "/b", MSG_SET)
    assert list(q.drain()) == ["a=1", "b=1", "cue", "b=3"]


def test_bad_queue_use_is_refused() -> None:
    with pytest.raises(ValueError, match="fence"):
        LatestValueQueue(fence="none")
    with pytest.raises(ValueError, match="address"):
        LatestValueQueue().push("x", None, MSG_SET)
    with pytest.raises(IndexError):
        LatestValueQueue().pop()


# -- the queue: properties -----------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    seq: int
    address: str
    kind: int | None  # None: an event (never conflated)


ADDRESSES = ("/a", "/b", "/c", "/d/e")
KINDS = (MSG_SET, MSG_PUBLISH, None)

# A run: pushes of (address index, kind index), and pops ("pop", n).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, len(ADDRESSES) - 1), st.sampled_from(KINDS)),
        st.tuples(st.just("pop"), st.integers(1, 4)),
    ),
    max_size=120,
)


def run(ops, fence) -> tuple[list[Item], list[Item], list[tuple[int, int, int]]]:
    """Apply ``ops``, then drain. Returns (pushed, delivered, memory checks (len, keys, events))."""
    q: LatestValueQueue[Item] = LatestValueQueue(fence=fence)
    pushed: list[Item] = []
    delivered: list[Item] = []
    checks = []
    for op in ops:
        if op[0] == "push":
            item = Item(len(pushed), ADDRESSES[op[1]], op[2])
            pushed.append(item)
            q.push(item, item.address, item.kind)
        else:
            for _ in range(min(op[1], len(q))):
                delivered.append(q.pop())
        waiting = set(delivered)
        pending_events = sum(1 for p in pushed if p.kind is None and p not in waiting)
        keys = {(p.address, p.kind) for p in pushed if p.kind is not None}
        checks.append((len(q), len(keys), pending_events))
    delivered.extend(q.drain())
    assert q.conflated == len(pushed) - len(delivered)
    return pushed, delivered, checks


@settings(max_examples=150, deadline=None)
@given(operations, st.sampled_from(["address", "all"]))
def test_events_all_arrive_once_in_order_and_the_latest_value_always_arrives(ops, fence) -> None:
    pushed, delivered, _ = run(ops, fence)
    assert len(set(delivered)) == len(delivered)
    events = [p for p in pushed if p.kind is None]
    assert [d for d in delivered if d.kind is None] == events
    for address in ADDRESSES:
        for kind in (MSG_SET, MSG_PUBLISH):
            sent = [p for p in pushed if (p.address, p.kind) == (address, kind)]
            got = [d for d in delivered if (d.address, d.kind) == (address, kind)]
            assert [g.seq for g in got] == sorted(g.seq for g in got)  # in the order sent
            if sent:
                assert got[-1] == sent[-1]  # the latest always arrives


@settings(max_examples=150, deadline=None)
@given(operations, st.sampled_from(["address", "all"]))
def test_a_value_never_crosses_a_fence(ops, fence) -> None:
    pushed, delivered, _ = run(ops, fence)
    position = {d: i for i, d in enumerate(delivered)}
    for event in (p for p in pushed if p.kind is None):
        for value in (d for d in delivered if d.kind is not None):
            if fence == "address" and value.address != event.address:
                continue
            before_sent = value.seq < event.seq
            before_delivered = position[value] < position[event]
            assert before_sent == before_delivered, (value, event)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_only_values_with_a_newer_one_behind_them_are_skipped(ops) -> None:
    pushed, delivered, _ = run(ops, "address")
    got = set(delivered)
    for skipped in (p for p in pushed if p not in got):
        assert skipped.kind is not None
        assert any(later.seq > skipped.seq and (later.address, later.kind) == (skipped.address, skipped.kind)
                   for later in pushed)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_memory_is_bounded_by_keys_plus_pending_events(ops) -> None:
    _, _, checks = run(ops, "address")
    for length, keys, pending_events in checks:
        # one open slot per (address, type) + the events waiting + at most 2 slots each of them closed
        assert length <= keys + 3 * pending_events
        if pending_events == 0:
            assert length <= keys


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(ADDRESSES) - 1), st.sampled_from((MSG_SET, MSG_PUBLISH))),
                max_size=200))
def test_without_events_slots_leave_in_first_enqueue_order(pushes) -> None:
    q: LatestValueQueue[Item] = LatestValueQueue()
    first: dict[tuple[str, int], int] = {}
    for seq, (a, kind) in enumerate(pushes):
        item = Item(seq, ADDRESSES[a], kind)
        first.setdefault((item.address, kind), seq)
        q.push(item, item.address, kind)
    assert len(q) == len(first)
    delivered = list(q.drain())
    assert [first[(d.address, d.kind)] for d in delivered] == sorted(first.values())

"""The runtime helpers every client, peer, transport and relay is built on: TaskSet, ErrorSink, the
dispatcher and Waiters."""

from __future__ import annotations

import asyncio
import logging

import pytest

from clasp_fast.errors import PatternError, TransportError
from clasp_fast.runtime.dispatch import make_dispatcher, wants_message
from clasp_fast.runtime.sink import ErrorSink
from clasp_fast.runtime.tasks import TaskSet
from clasp_fast.runtime.waiters import Waiters

# -- TaskSet ------------------------------------------------------------------------------------


async def test_taskset_keeps_tasks_until_done_and_reports_failures_not_cancellations():
    errors: list[BaseException] = []
    tasks = TaskSet(errors.append)
    release = asyncio.Event()

    async def waits() -> None:
        await release.wait()

    async def fails() -> None:
        raise ValueError("boom")

    waiting = tasks.spawn(waits())
    tasks.spawn(fails())
    cancelled = tasks.spawn(asyncio.sleep(10))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(tasks) == 2  # the failed one is gone, the others are kept
    assert [str(e) for e in errors] == ["boom"]
    cancelled.cancel()
    release.set()
    await asyncio.gather(waiting, cancelled, return_exceptions=True)
    assert len(tasks) == 0 and len(errors) == 1  # a cancellation is not a failure


async def test_taskset_awaited_tasks_are_cancelled_with_the_rest_but_their_failures_are_the_callers():
    errors: list[BaseException] = []
    tasks = TaskSet(errors.append)

    async def fails() -> None:
        raise TransportError("the caller sees this")

    awaited = tasks.spawn(fails(), awaited=True)
    with pytest.raises(TransportError):
        await awaited
    assert errors == []
    sleeper = tasks.spawn(asyncio.sleep(10), awaited=True)
    await tasks.cancel_and_wait()
    assert sleeper.cancelled()


async def test_taskset_notify_runs_every_callback_spawns_coroutines_and_reports_exceptions():
    errors: list[BaseException] = []
    tasks = TaskSet(errors.append)
    calls: list[tuple] = []
    done = asyncio.Event()

    def first(a, b):
        calls.append(("first", a, b))
        raise RuntimeError("first failed")

    async def second(a, b):
        calls.append(("second", a, b))
        done.set()

    def third(a, b):
        calls.append(("third", a, b))

    tasks.notify([first, second, third], 1, 2)
    await asyncio.wait_for(done.wait(), 1)
    assert calls == [("first", 1, 2), ("third", 1, 2), ("second", 1, 2)]
    assert [str(e) for e in errors] == ["first failed"]


async def test_taskset_join_waits_for_the_others_but_not_for_the_caller():
    tasks = TaskSet(lambda exc: None)
    finished: list[str] = []

    async def short() -> None:
        await asyncio.sleep(0.01)
        finished.append("short")

    async def joiner() -> None:
        await tasks.join()
        finished.append("joiner")

    tasks.spawn(short())
    await asyncio.wait_for(tasks.spawn(joiner()), 2)
    assert finished == ["short", "joiner"]


# -- ErrorSink ----------------------------------------------------------------------------------


async def test_error_sink_logs_without_callbacks_and_hands_errors_to_them_otherwise(caplog):
    sink = ErrorSink(logging.getLogger("clasp_fast.test"))
    with caplog.at_level(logging.WARNING, logger="clasp_fast.test"):
        sink.report(ValueError("nobody listens"))
    assert [r.getMessage() for r in caplog.records] == ["nobody listens"]
    caplog.clear()
    got: list[BaseException] = []
    handled = asyncio.Event()

    async def later(exc: BaseException) -> None:
        handled.set()

    def broken(exc: BaseException) -> None:
        raise RuntimeError("the callback itself fails")

    sink.add(got.append)
    sink.add(later)
    sink.add(broken)
    with caplog.at_level(logging.WARNING, logger="clasp_fast.test"):
        sink.report(ValueError("reported"))
        await asyncio.wait_for(handled.wait(), 1)
    assert [str(e) for e in got] == ["reported"]
    # A failing callback is logged (never reported back into the sink), and the error itself is not.
    assert [r.getMessage() for r in caplog.records] == ["an on_error callback failed"]
    sink.remove(got.append)
    sink.remove(broken)
    sink.report(ValueError("again"))
    assert len(got) == 1 and len(sink) == 1


# -- the dispatcher -----------------------------------------------------------------------------


async def test_dispatcher_matches_patterns_filters_types_and_passes_the_message_to_those_who_want_it():
    errors: list[BaseException] = []
    spawned: list = []
    dispatcher = make_dispatcher(spawned.append, errors.append)
    got: list[tuple] = []
    one = dispatcher.add("/mixer/*/gain", lambda value, address: got.append(("one", address, value)))
    dispatcher.add("/mixer/**", lambda value, address, message: got.append(("all", address, message)))
    dispatcher.add("/mixer/**", lambda value, address: got.append(("params", address, value)), types=["param"])
    assert len(dispatcher) == 3 and one.id != 0

    dispatcher.dispatch("/mixer/1/gain", 0.5, "param", "SET")
    dispatcher.dispatch("/mixer/1/gain", 0.7, "event", "PUBLISH")
    dispatcher.dispatch("/other", 1, "param", "SET")
    assert got == [
        ("one", "/mixer/1/gain", 0.5), ("all", "/mixer/1/gain", "SET"), ("params", "/mixer/1/gain", 0.5),
        ("one", "/mixer/1/gain", 0.7), ("all", "/mixer/1/gain", "PUBLISH"),
    ]
    assert errors == [] and spawned == []


async def test_dispatcher_remove_stops_delivery_and_unknown_ids_are_none():
    dispatcher = make_dispatcher(lambda awaitable: None, lambda exc: None)
    got: list[str] = []
    sub = dispatcher.add("/a", lambda value, address: got.append("removed"))
    dispatcher.add("/a", lambda value, address: got.append("kept"))
    assert dispatcher.remove(sub.id) is sub
    assert dispatcher.remove(sub.id) is None
    dispatcher.dispatch("/a", 1, "event", None)
    assert got == ["kept"]
    assert [s.pattern for s in dispatcher] == ["/a"]


async def test_dispatcher_sends_coroutines_to_spawn_and_exceptions_to_report_and_goes_on():
    errors: list[BaseException] = []
    spawned: list = []
    dispatcher = make_dispatcher(spawned.append, errors.append)
    got: list[int] = []

    def raises(value, address):
        raise KeyError("callback bug")

    async def coroutine(value, address):
        got.append(value)

    dispatcher.add("/x", raises)
    dispatcher.add("/x", coroutine)
    dispatcher.add("/x", lambda value, address: got.append(-value))
    dispatcher.dispatch("/x", 3, "event", None)
    assert [type(e) for e in errors] == [KeyError]
    assert got == [-3] and len(spawned) == 1
    await spawned[0]
    assert got == [-3, 3]
    with pytest.raises(PatternError):
        dispatcher.add("no-slash", coroutine)


def test_wants_message_counts_positional_parameters():
    assert not wants_message(lambda value, address: None)
    assert wants_message(lambda value, address, message: None)
    assert wants_message(lambda *args: None)


# -- Waiters ------------------------------------------------------------------------------------


async def test_waiters_answer_requests_oldest_first_per_key_and_placeholders_keep_their_place():
    waiters = Waiters()
    first = waiters.add(("ack", "/a"))
    placeholder = waiters.add(("ack", "/a"), wait=False)
    third = waiters.add(("ack", "/a"))
    other = waiters.add(("ack", "/b"))
    assert placeholder is None and len(waiters) == 4
    assert waiters.resolve(("ack", "/a"), 1)
    assert not waiters.resolve(("ack", "/a"), 2)  # the placeholder took it: nobody waits for that one
    assert waiters.resolve(("ack", "/a"), 3)
    assert (await first, await third) == (1, 3)
    assert not waiters.waiting(("ack", "/a")) and waiters.waiting(("ack", "/b"))
    assert not other.done()


async def test_waiters_request_block_leaves_nothing_behind_and_a_late_answer_goes_to_the_next():
    waiters = Waiters()
    with pytest.raises(asyncio.TimeoutError):
        with waiters.request("ping") as pong:
            await asyncio.wait_for(pong, 0.001)
    assert len(waiters) == 0
    with waiters.request("ping") as pong:
        assert waiters.resolve("ping", "late answer")
        assert await pong == "late answer"


async def test_waiters_take_all_and_fail_all():
    waiters = Waiters()
    gets = [waiters.add(("get", "/a")) for _ in range(3)]
    gets[1].cancel()
    assert waiters.take_all(("get", "/a")) == [gets[0], gets[2]]
    pending = [waiters.add("query"), waiters.add(("sync", 7))]
    error = TransportError("connection lost")
    waiters.fail_all(error)
    for future in pending:
        with pytest.raises(TransportError):
            future.result()
    assert len(waiters) == 0

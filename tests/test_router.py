"""The relay's Router on its own: no socket, an in-memory outbox per session and a clock the test moves.

The router answers through each session's outbox (clasp_fast.relay.router.Outbox); ``Inbox`` is
that interface keeping the frames in a list, which is all the socket layer adds.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from clasp_fast.codec import decode, encode
from clasp_fast.messages import (
    Ack,
    Error,
    Get,
    Hello,
    Ping,
    Pong,
    Publish,
    Set,
    Snapshot,
    Subscribe,
    Ttl,
    Unsubscribe,
    Welcome,
)
from clasp_fast.relay.router import Router, RouterConfig, Session
from clasp_fast.wire.protocol import ANNOUNCE_ADDRESS, PRESENCE_PREFIX, SIGNAL_PREFIX


class Inbox:
    """An Outbox that keeps what the router queues for one session (streams produced at once)."""

    behind = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def reply(self, frame: bytes, address: str | None = None) -> None:
        self.frames.append(frame)

    def stream(self, frames: Iterator[bytes]) -> None:
        self.frames.extend(frames)

    def broadcast(self, frame: bytes, sender: str | None = None, address: str | None = None) -> bool:
        self.frames.append(frame)
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def take(self) -> list:
        messages = [decode(frame) for frame in self.frames]
        self.frames.clear()
        return messages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router(clock: Clock) -> Router:
    return Router(RouterConfig(gesture_coalesce=None), clock=clock)


def join(router: Router, name: str = "s") -> tuple[Session, Inbox]:
    inbox = Inbox()
    session = router.connect(inbox, Hello(name=name))
    return session, inbox


def test_connect_answers_welcome_and_the_snapshot_of_the_store(router):
    first, inbox = join(router)
    welcome, snapshot = inbox.take()
    assert isinstance(welcome, Welcome) and welcome.session == first.id
    assert snapshot == Snapshot(params=[])
    router.receive(first, Set(address="/a", value=1))
    second, inbox2 = join(router, "later")
    _, snapshot = inbox2.take()
    assert [(p.address, p.value, p.writer) for p in snapshot.params] == [("/a", 1, first.id)]
    assert set(router.sessions) == {first.id, second.id}


def test_set_is_acknowledged_echoed_to_subscribers_including_the_sender_and_read_back(router):
    writer, out = join(router, "writer")
    reader, inbox = join(router, "reader")
    out.take(), inbox.take()
    router.receive(writer, Subscribe(id=1, pattern="/mixer/**"))
    router.receive(reader, Subscribe(id=1, pattern="/mixer/*"))
    router.receive(writer, Set(address="/mixer/gain", value=0.5))
    router.receive(writer, Set(address="/mixer/gain", value=0.7))
    echoes = [m for m in out.take() if isinstance(m, Set)]
    assert [(m.value, m.revision) for m in echoes] == [(0.5, 1), (0.7, 2)]
    assert [(m.value, m.revision) for m in inbox.take()] == [(0.5, 1), (0.7, 2)]
    router.receive(reader, Get(address="/mixer/gain"))
    (answer,) = inbox.take()
    assert [(p.address, p.value, p.revision) for p in answer.params] == [("/mixer/gain", 0.7, 2)]
    router.receive(reader, Get(address="/mixer/none"))
    assert inbox.take() == []  # the reference answers nothing for an address without a value
    router.receive(writer, Set(address="/mixer/gain", value=1.0, revision=1))
    error = out.take()[-1]
    assert isinstance(error, Error) and error.code == 400 and "RevisionConflict" in error.message


def test_set_answers_ack_after_its_echo(router):
    writer, out = join(router)
    out.take()
    router.receive(writer, Subscribe(id=7, pattern="/x"))
    router.receive(writer, Set(address="/x", value=3))
    echo, ack = out.take()
    assert isinstance(echo, Set) and ack == Ack(address="/x", revision=1)


def test_publish_reaches_other_subscribers_by_type_filter_never_the_sender(router):
    sender, out = join(router, "sender")
    events, inbox_events = join(router, "events")
    streams, inbox_streams = join(router, "streams")
    for inbox in (out, inbox_events, inbox_streams):
        inbox.take()
    router.receive(sender, Subscribe(id=1, pattern="/cue/**"))
    router.receive(events, Subscribe(id=1, pattern="/cue/**", types=["event"]))
    router.receive(streams, Subscribe(id=1, pattern="/cue/**", types=["stream"]))
    router.receive(sender, Publish(address="/cue/go", signal="event", value=1))
    assert out.take() == []
    assert [m.address for m in inbox_events.take()] == ["/cue/go"]
    assert inbox_streams.take() == []
    router.receive(events, Unsubscribe(id=1))
    router.receive(sender, Publish(address="/cue/go", signal="event", value=2))
    assert inbox_events.take() == []
    assert router.subscribers("/cue/go", "event") == [sender]


def test_expired_params_are_never_served_even_before_the_sweep_runs(router, clock):
    writer, out = join(router)
    router.receive(writer, Set(address="/t/short", value=1, ttl=Ttl.absolute(1)))
    router.receive(writer, Set(address="/t/keep", value=2, ttl=Ttl.never()))
    out.take()
    clock.now += 1.5  # past the TTL; router.expire() (the relay's sweep) is never called
    router.receive(writer, Get(address="/t/short"))
    router.receive(writer, Ping())
    assert out.take() == [Pong()]  # no SNAPSHOT for the expired param
    router.receive(writer, Subscribe(id=1, pattern="/t/**"))
    (snapshot,) = out.take()
    assert [p.address for p in snapshot.params] == ["/t/keep"]
    _, inbox = join(router, "late")
    _, welcome_snapshot = inbox.take()
    assert [p.address for p in welcome_snapshot.params] == ["/t/keep"]


def test_expiry_by_sweep_removes_the_param_and_sends_nothing(router, clock):
    writer, out = join(router)
    router.receive(writer, Subscribe(id=1, pattern="/t/**"))
    router.receive(writer, Set(address="/t/short", value=1, ttl=Ttl.absolute(1)))
    out.take()
    clock.now += 1.5
    assert router.expire() == 1
    assert "/t/short" not in router.store and out.take() == []


def test_signals_go_to_their_target_only_with_the_senders_own_from(router):
    a, out_a = join(router, "a")
    b, out_b = join(router, "b")
    out_a.take(), out_b.take()
    forged = Publish(address=SIGNAL_PREFIX + b.id, signal="event",
                     value={"type": "offer", "from": "someone else", "sdp": "v=0", "correlation_id": "c"})
    router.receive(a, forged)
    (error,) = out_a.take()
    assert error.code == 403 and out_b.take() == []
    router.receive(a, Publish(address=SIGNAL_PREFIX + "nobody", signal="event",
                              value={"type": "offer", "from": a.id, "sdp": "v=0", "correlation_id": "c"}))
    assert out_a.take()[0].code == 404
    honest = Publish(address=SIGNAL_PREFIX + b.id, signal="event",
                     value={"type": "offer", "from": a.id, "sdp": "v=0", "correlation_id": "c"})
    router.receive(a, honest)
    assert out_b.take() == [decode(encode(honest))] and out_a.take() == []


def presence(session: Session, client_id: str) -> Set:
    return Set(address=PRESENCE_PREFIX + session.id, value={"client_id": client_id, "session_id": session.id,
                                                            "features": []})


def test_client_id_claims_first_wins_and_end_with_the_session(router):
    a, out_a = join(router, "a")
    b, out_b = join(router, "b")
    watcher, inbox = join(router, "watcher")
    for box in (out_a, out_b, inbox):
        box.take()
    router.receive(watcher, Subscribe(id=1, pattern=PRESENCE_PREFIX + "*"))
    router.receive(a, presence(a, "mixer"))
    assert isinstance(out_a.take()[-1], Ack)
    router.receive(b, presence(b, "mixer"))
    assert out_b.take()[-1].code == 409
    router.receive(b, Publish(address=ANNOUNCE_ADDRESS, signal="event",
                              value={"session_id": b.id, "p2p_capable": True, "client_id": "mixer"}))
    assert out_b.take()[-1].code == 409
    router.receive(a, presence(b, "other"))  # a writes b's presence
    assert out_a.take()[-1].code == 403
    inbox.take()
    router.disconnect(a)
    (withdrawal,) = inbox.take()
    assert withdrawal.address == PRESENCE_PREFIX + a.id and withdrawal.value is None
    router.receive(b, presence(b, "mixer"))
    assert isinstance(out_b.take()[-1], Ack)
    assert router.claims.holder("mixer") == b.id


def test_rate_limit_refuses_beyond_the_budget_per_second(clock):
    router = Router(RouterConfig(rate_limit=3), clock=clock)
    session, out = join(router)
    out.take()
    for _ in range(5):
        router.receive(session, Ping())
    replies = out.take()
    assert replies[:3] == [Pong()] * 3
    assert [r.code for r in replies[3:]] == [429, 429] and session.refused == 2
    clock.now += 1.0
    router.receive(session, Ping())
    assert out.take() == [Pong()]


def test_messages_the_router_does_not_handle_are_ignored(router):
    session, out = join(router)
    out.take()
    router.receive(session, Welcome(session="x", name="n", features=[], time=1))
    router.receive(session, Snapshot(params=[]))
    assert out.take() == [] and session.received == 2

"""FairQueue, the per-sender lanes of a relay connection's outgoing frames."""

from clasp_fast.relay.fair_queue import OWN, FairQueue


def test_fair_queue_serves_senders_round_robin_and_keeps_each_in_order():
    queue = FairQueue(limit=100)
    for i in range(5):
        queue.offer("flood", b"f%d" % i)
    queue.offer("calm", b"c0")
    queue.put(OWN, b"ack")
    queue.offer("calm", b"c1")
    order = []
    while (frame := queue.pop()) is not None:
        order.append(frame)
    assert order == [b"f0", b"c0", b"ack", b"f1", b"c1", b"f2", b"f3", b"f4"]


def test_fair_queue_keeps_frames_of_one_address_in_order_across_senders():
    queue = FairQueue(limit=100)
    queue.offer("a", b"a-x1", "/x")
    queue.offer("a", b"a-y1", "/y")
    queue.offer("b", b"b-y2", "/y")  # must wait for a-y1, although b's turn comes first after a's
    queue.offer("b", b"b-z1")
    queue.put(OWN, b"get-y", "/y")  # a GET reply reflects the newest state: after both
    order = []
    while (frame := queue.pop()) is not None:
        order.append(frame)
    assert order.index(b"a-y1") < order.index(b"b-y2") < order.index(b"get-y")
    assert order.index(b"b-z1") < order.index(b"b-y2") or order.index(b"b-y2") < order.index(b"b-z1")
    assert sorted(order) == sorted([b"a-x1", b"a-y1", b"b-y2", b"b-z1", b"get-y"])


def test_fair_queue_full_takes_room_from_the_longest_lane_never_from_replies():
    queue = FairQueue(limit=4)
    for i in range(3):
        assert queue.offer("flood", b"f%d" % i)
    queue.put(OWN, b"reply")
    assert not queue.offer("flood", b"f3")  # full, and flood is the longest: the new one goes
    assert not queue.offer("calm", b"c0")  # admitted, flood's newest frame made room (reported)
    assert len(queue) == 4
    order = []
    while (frame := queue.pop()) is not None:
        order.append(frame)
    assert order == [b"f0", b"reply", b"c0", b"f1"]


def test_fair_queue_produces_a_stream_frame_by_frame():
    produced = []

    def frames():
        for i in range(3):
            produced.append(i)
            yield b"s%d" % i

    queue = FairQueue(limit=10)
    queue.put(OWN, b"welcome")
    queue.put_stream(OWN, frames())
    queue.put(OWN, b"pong")
    queue.offer("other", b"o0")
    assert queue.pop() == b"welcome"
    assert produced == []
    assert queue.pop() == b"o0"
    assert queue.pop() == b"s0" and produced == [0]
    assert [queue.pop() for _ in range(3)] == [b"s1", b"s2", b"pong"]
    assert queue.pop() is None and len(queue) == 0

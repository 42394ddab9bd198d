"""Encode once for many peers, or once per peer: the compiled codec and batcher, 8 receivers.

Run with ``pytest benchmarks/bench_fanout.py --benchmark-only``. Each round sends 100 messages to 8
batchers (one per peer's DataChannel, as ``FanoutGroup`` feeds them):

* ``once``: ``encode(message)`` once, then ``Batcher.add_frame(frame)`` per peer (a copy);
* ``per_peer``: ``Batcher.add_message(message)`` per peer (an encode each, straight into the batch).

Two messages: a small SET, and a stream PUBLISH of 64 float samples (a sensor frame).
"""

from __future__ import annotations

import numpy
import pytest

from clasp_fast._codec import Batcher
from clasp_fast.codec import encode
from clasp_fast.messages import Publish, Set

PEERS = 8
ROUNDS = 100
MESSAGES = {
    "set": Set(address="/sensor/gain", value=0.5),
    "samples64": Publish(address="/sensor/accel", signal="stream", samples=numpy.linspace(0, 1, 64)),
}


def batchers() -> list[Batcher]:
    return [Batcher(1 << 20) for _ in range(PEERS)]


def send_once(message) -> int:
    out = batchers()
    for _ in range(ROUNDS):
        frame = encode(message)
        for batcher in out:
            batcher.add_frame(frame)
    return sum(len(b.take()) for b in out)


def send_per_peer(message) -> int:
    out = batchers()
    for _ in range(ROUNDS):
        for batcher in out:
            batcher.add_message(message)
    return sum(len(b.take()) for b in out)


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def bench_fanout_encode_once(benchmark, kind):
    benchmark.group = f"fanout-8-{kind}"
    message = MESSAGES[kind]
    assert benchmark(send_once, message) == PEERS * ROUNDS * len(encode(message))


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def bench_fanout_encode_per_peer(benchmark, kind):
    benchmark.group = f"fanout-8-{kind}"
    message = MESSAGES[kind]
    assert benchmark(send_per_peer, message) == PEERS * ROUNDS * len(encode(message))

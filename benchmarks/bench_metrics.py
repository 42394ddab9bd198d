"""What counting a message costs on the hot path: a plain dict counter against prometheus_client.

Run with ``pytest benchmarks/bench_metrics.py --benchmark-only``. Each round counts 1,000 messages:

* ``plain``: ``counters["messages_sent"] += 1`` -- what the transports do; clasp_fast.metrics reads
  such counters only when scraped;
* ``prometheus_child``: ``Counter.labels(...)`` bound once, then ``.inc()`` per message (a lock each);
* ``prometheus_labels``: ``.labels(...).inc()`` per message, the label lookup included.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

N = 1_000


def count_plain() -> int:
    counters = {"messages_sent": 0}
    for _ in range(N):
        counters["messages_sent"] += 1
    return counters["messages_sent"]


COUNTER = Counter("clasp_bench_messages", "bench", ["route", "peer", "channel", "direction"],
                  registry=CollectorRegistry())
CHILD = COUNTER.labels("p2p", "viewer-1", "clasp", "sent")


def count_prometheus_child() -> None:
    inc = CHILD.inc
    for _ in range(N):
        inc()


def count_prometheus_labels() -> None:
    for _ in range(N):
        COUNTER.labels("p2p", "viewer-1", "clasp", "sent").inc()


@pytest.mark.benchmark(group="count-1000-messages")
def bench_count_plain(benchmark):
    assert benchmark(count_plain) == N


@pytest.mark.benchmark(group="count-1000-messages")
def bench_count_prometheus_child(benchmark):
    benchmark(count_prometheus_child)


@pytest.mark.benchmark(group="count-1000-messages")
def bench_count_prometheus_labels(benchmark):
    benchmark(count_prometheus_labels)

"""The receive path: one DataChannel message decoded, matched and delivered to a callback.

Run with ``pytest benchmarks/bench_dispatch.py --benchmark-only``. Each group takes one message
of 1, 16 or 400 SET frames (16 addresses under ``/lumen/<n>/opacity``, one subscription
``/lumen/*/opacity``) through:

* ``compiled``: ``CallbackRegistry.receive`` (clasp_fast._dispatch): decode, match and call in
  compiled code.
* ``python``: the path before it (tests/callbacks_model.py): ``decode_slice``, then per message
  a type check, ``SubscriptionIndex.match_entries`` and the call, in Python.
"""

from __future__ import annotations

import pytest

from clasp_fast._dispatch import CallbackRegistry
from clasp_fast.codec import encode
from clasp_fast.messages import Set

from tests.callbacks_model import ModelRegistry

SIZES = (1, 16, 400)


def batch(frames: int) -> bytes:
    return b"".join(encode(Set(f"/lumen/{i % 16}/opacity", i / frames)) for i in range(frames))


def registry(kind: type) -> tuple[object, list[int]]:
    delivered = [0]

    def on_opacity(value: float, address: str) -> None:
        delivered[0] += 1

    def fail(exc: BaseException) -> None:
        raise AssertionError(f"unexpected report: {exc!r}")

    reg = kind(fail, fail)
    reg.add("/lumen/*/opacity", on_opacity)
    return reg, delivered


@pytest.mark.parametrize("frames", SIZES)
@pytest.mark.parametrize("path", ["compiled", "python"])
def bench_receive(benchmark, path: str, frames: int) -> None:
    benchmark.group = f"receive-{frames}-set"
    data = batch(frames)
    reg, delivered = registry(CallbackRegistry if path == "compiled" else ModelRegistry)
    end, decoded, failed = benchmark(reg.receive, data)
    assert (end, decoded, failed) == (len(data), frames, 0)
    assert delivered[0] % frames == 0 and delivered[0] > 0

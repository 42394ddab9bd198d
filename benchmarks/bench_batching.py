"""The compiled batcher and splitter next to the plain-Python way of doing the same.

Run with ``pytest benchmarks/bench_batching.py --benchmark-only``. Each group packs (or splits)
320 SET frames with 32-byte payloads, about one 16 KiB DataChannel message:

* pack: ``Batcher.add_message`` (frames encoded straight into the pending message) against
  ``b"".join(encode(m) for m in ...)`` (one bytes object per frame, then a copy).
* split: ``decode_all(batch, errors="collect")`` (one compiled walk) against a Python loop of
  ``frame_size`` + ``decode`` per frame.
"""

from __future__ import annotations

import pytest

from clasp_fast._codec import Batcher
from clasp_fast.codec import decode, decode_all, encode, frame_size
from clasp_fast.messages import Set

MESSAGES = [Set(address="/bench/x", value=i.to_bytes(8, "big") + bytes(24)) for i in range(320)]
BATCH = b"".join(encode(m) for m in MESSAGES)


def pack_with_batcher() -> bytes:
    batcher = Batcher(1 << 20)
    add = batcher.add_message
    for message in MESSAGES:
        add(message)
    return batcher.take()


def pack_with_join() -> bytes:
    return b"".join([encode(m) for m in MESSAGES])


def split_in_python(data: bytes) -> list:
    out = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        size = frame_size(data, offset)
        out.append(decode(view[offset : offset + size]))
        offset += size
    return out


@pytest.mark.benchmark(group="batch-pack-320")
def bench_pack_batcher(benchmark):
    assert benchmark(pack_with_batcher) == BATCH


@pytest.mark.benchmark(group="batch-pack-320")
def bench_pack_encode_join(benchmark):
    assert benchmark(pack_with_join) == BATCH


@pytest.mark.benchmark(group="batch-split-320")
def bench_split_decode_all(benchmark):
    messages, errors = benchmark(decode_all, BATCH, errors="collect")
    assert messages == MESSAGES and errors == []


@pytest.mark.benchmark(group="batch-split-320")
def bench_split_python_loop(benchmark):
    assert benchmark(split_in_python, BATCH) == MESSAGES

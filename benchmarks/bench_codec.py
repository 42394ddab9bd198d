"""Codec speed: clasp_fast next to the official pure-Python client (clasp-to 4.2.0).

Run with ``pytest benchmarks/bench_codec.py --benchmark-only``. Each group holds the same
operation done by clasp_fast and by clasp-to's own codec (``Clasp._encode`` / ``Clasp._decode``,
no network), measured in the same run.

clasp-to cannot encode or decode stream samples (docs/protocol.md §6.7), so in the "stream" groups it
handles the nearest thing it can: the same 64 floats as an array value.
"""

from __future__ import annotations

import numpy
import pytest

from clasp_fast import codec
from clasp_fast.messages import Publish, Set

clasp = pytest.importorskip("clasp")

SAMPLES = numpy.sin(numpy.linspace(0.0, 6.28, 64))
EVENT_MAP = {"cue": "crossfade", "layer": 3, "level": 0.75}


@pytest.fixture(scope="module")
def official():
    """The official client's codec; constructing it opens no connection."""
    return clasp.Clasp("ws://127.0.0.1:9")


# --------------------------------------------------------------------------------- SET (float)

SET_FAST = Set("/lumen/layer/0/opacity", 0.75)
SET_DICT = {"type": "SET", "address": "/lumen/layer/0/opacity", "value": 0.75}
SET_FRAME = codec.encode(SET_FAST)


@pytest.mark.benchmark(group="set-encode")
def bench_set_encode_clasp_fast(benchmark):
    assert benchmark(codec.encode, SET_FAST) == SET_FRAME


@pytest.mark.benchmark(group="set-encode")
def bench_set_encode_clasp_to(benchmark, official):
    # clasp-to always writes flags 0x01 (QoS 0); the payload is identical.
    assert benchmark(official._encode, SET_DICT)[4:] == SET_FRAME[4:]


@pytest.mark.benchmark(group="set-decode")
def bench_set_decode_clasp_fast(benchmark):
    assert benchmark(codec.decode, SET_FRAME) == SET_FAST


@pytest.mark.benchmark(group="set-decode")
def bench_set_decode_clasp_to(benchmark, official):
    assert benchmark(official._decode, SET_FRAME)["value"] == 0.75


# --------------------------------------------------------------------- PUBLISH event, small map

EVENT_FAST = Publish("/cue/fire", "event", EVENT_MAP)
EVENT_DICT = {"type": "PUBLISH", "address": "/cue/fire", "signal": "event", "value": EVENT_MAP}
EVENT_FRAME = codec.encode(EVENT_FAST)


@pytest.mark.benchmark(group="event-encode")
def bench_event_encode_clasp_fast(benchmark):
    assert benchmark(codec.encode, EVENT_FAST) == EVENT_FRAME


@pytest.mark.benchmark(group="event-encode")
def bench_event_encode_clasp_to(benchmark, official):
    assert benchmark(official._encode, EVENT_DICT)[4:] == EVENT_FRAME[4:]


@pytest.mark.benchmark(group="event-decode")
def bench_event_decode_clasp_fast(benchmark):
    assert benchmark(codec.decode, EVENT_FRAME).value == EVENT_MAP


@pytest.mark.benchmark(group="event-decode")
def bench_event_decode_clasp_to(benchmark, official):
    assert benchmark(official._decode, EVENT_FRAME)["value"] == EVENT_MAP


# ------------------------------------------------------------------ PUBLISH stream, 64 samples

STREAM_FAST = Publish("/sensor/audio", "stream", samples=SAMPLES)
STREAM_FRAME = codec.encode(STREAM_FAST)
STREAM_DICT = {"type": "PUBLISH", "address": "/sensor/audio", "signal": "stream",
               "value": SAMPLES.tolist()}


@pytest.mark.benchmark(group="stream64-encode")
def bench_stream_encode_clasp_fast(benchmark):
    assert benchmark(codec.encode, STREAM_FAST) == STREAM_FRAME


@pytest.mark.benchmark(group="stream64-encode")
def bench_stream_encode_clasp_to_as_array(benchmark, official):
    assert len(benchmark(official._encode, STREAM_DICT)) > 64 * 9


@pytest.mark.benchmark(group="stream64-decode")
def bench_stream_decode_clasp_fast(benchmark):
    assert numpy.array_equal(benchmark(codec.decode, STREAM_FRAME).samples, SAMPLES)


@pytest.mark.benchmark(group="stream64-decode")
def bench_stream_decode_clasp_to_as_array(benchmark, official):
    frame = official._encode(STREAM_DICT)
    assert benchmark(official._decode, frame)["value"] == SAMPLES.tolist()


# ---------------------------------------------------------- 1,000 back-to-back frames, decoded

BATCH_MESSAGES = [Set(f"/lumen/layer/{i % 8}/opacity", i / 1000.0) if i % 2 else
                  Publish(f"/sensor/{i % 4}", "stream", float(i)) for i in range(1000)]
BATCH = b"".join(codec.encode(m) for m in BATCH_MESSAGES)


def official_decode_all(client, data):
    """clasp-to has no multi-frame decoder: walk the headers and decode each frame."""
    out = []
    offset, end = 0, len(data)
    while offset < end:
        size = (12 if data[offset + 1] & 0x20 else 4) + ((data[offset + 2] << 8) | data[offset + 3])
        out.append(client._decode(data[offset:offset + size]))
        offset += size
    return out


@pytest.mark.benchmark(group="decode-1000-frames")
def bench_decode_all_clasp_fast(benchmark):
    assert len(benchmark(codec.decode_all, BATCH)) == 1000


@pytest.mark.benchmark(group="decode-1000-frames")
def bench_decode_all_clasp_to(benchmark, official):
    assert len(benchmark(official_decode_all, official, BATCH)) == 1000

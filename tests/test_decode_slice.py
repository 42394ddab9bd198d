"""decode_slice() and frame_count(): a received batch decoded a bounded number of frames at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clasp_fast._codec import decode_slice, frame_count
from clasp_fast.codec import decode_all, encode
from clasp_fast.errors import DecodeError
from clasp_fast.messages import Publish, Set

GOOD = [encode(Set(address="/a", value=1)), encode(Publish(address="/b/c", signal="event", value="x")),
        encode(Set(address="/long/" + "x" * 300, value=2.5))]
BAD_PAYLOAD = [b"\x53\x00\x00\x02\xff\xff", b"\x53\x00\x00\x01\x21"]  # intact header, malformed payload
BROKEN_TAIL = [b"\x53\x00", b"\x54\x00\x00\x01\x21", b"\x53\x00\x00\x09\x21"]  # bad header: ends the walk


def describe(messages, errors) -> tuple:
    return list(messages), [(str(e), e.offset, e.field) for e in errors]


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.sampled_from(GOOD + BAD_PAYLOAD), max_size=40),
    tail=st.sampled_from([b""] + BROKEN_TAIL),
    size=st.integers(1, 7),
)
def test_slices_add_up_to_decode_all(frames, tail, size):
    data = b"".join(frames) + tail
    messages, errors, start = [], [], 0
    while start < len(data):
        some, problems, end = decode_slice(data, start, size)
        assert len(some) + len(problems) <= size
        assert end > start
        messages += some
        errors += problems
        start = end
    assert start == len(data)
    assert describe(messages, errors) == describe(*decode_all(data, errors="collect"))
    assert frame_count(data) == len(messages) + len(errors)
    assert describe(*decode_slice(data)[:2]) == describe(messages, errors)


def test_a_broken_header_ends_the_batch_for_both():
    for broken in (b"\x53\x00\x00\x00", b"\x00\x00\x00\x01"):  # empty payload, bad magic
        data = GOOD[0] + broken + GOOD[1]
        messages, errors = decode_all(data, errors="collect")
        assert (len(messages), len(errors)) == (1, 1)
        assert frame_count(data) == 2


def test_offsets_count_from_the_start_of_the_batch():
    data = GOOD[0] * 3 + BAD_PAYLOAD[0] + GOOD[0]
    first, _, end = decode_slice(data, 0, 3)
    assert len(first) == 3 and end == 3 * len(GOOD[0])
    messages, (error,), end = decode_slice(data, end, 2)
    assert len(messages) == 1 and end == len(data)
    assert isinstance(error, DecodeError) and error.offset == 3 * len(GOOD[0]) + 4


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="outside the buffer"):
        decode_slice(GOOD[0], len(GOOD[0]) + 1, 1)
    with pytest.raises(ValueError, match="max_frames"):
        decode_slice(GOOD[0], 0, 0)
    assert decode_slice(b"", 0, 5) == ([], [], 0)
    assert frame_count(b"") == 0

"""The compiled Batcher: frames encoded into the pending message, limits, and splitting on receipt."""

from __future__ import annotations

import pytest

from clasp_fast._codec import Batcher, Ping, Publish, Set, decode_all, encode
from clasp_fast.errors import DecodeError, EncodeError


def _set(i: int) -> Set:
    return Set(address=f"/batch/{i}", value=float(i))


def _run(batcher: Batcher, items) -> list[bytes]:
    """Feed items as the transport does and return the DataChannel messages produced."""
    out = []
    for item in items:
        ready = batcher.add_frame(item) if isinstance(item, bytes) else batcher.add_message(item)
        if ready is not None:
            out.append(ready)
        if batcher.full:
            out.append(batcher.take())
    rest = batcher.take()
    if rest is not None:
        out.append(rest)
    return out


def test_frames_encoded_into_pending_are_the_codec_frames() -> None:
    batcher = Batcher(4096)
    assert batcher.add_message(_set(1)) is None
    assert batcher.add_message(Ping()) is None
    assert batcher.pending_frames == 2
    assert batcher.pending_size == len(encode(_set(1))) + len(encode(Ping()))
    assert batcher.take() == encode(_set(1)) + encode(Ping())
    assert batcher.pending_size == 0 and batcher.pending_frames == 0
    assert batcher.take() is None


def test_qos_and_timestamp_reach_the_frame_header() -> None:
    batcher = Batcher(4096)
    batcher.add_message(_set(1), 2, 123456)
    assert batcher.take() == encode(_set(1), qos=2, timestamp=123456)


def test_limit_zero_gives_one_frame_per_message() -> None:
    messages = [_set(i) for i in range(5)]
    out = _run(Batcher(0), messages)
    assert out == [encode(m) for m in messages]


def test_exact_fill_is_full_and_one_byte_more_starts_a_new_message() -> None:
    frame = encode(_set(1))
    size = len(frame)
    batcher = Batcher(2 * size)
    assert batcher.add_frame(frame) is None
    assert not batcher.full
    assert batcher.add_frame(frame) is None
    assert batcher.full  # exactly at the limit
    assert batcher.take() == frame * 2

    batcher = Batcher(2 * size - 1)
    assert batcher.add_frame(frame) is None
    ready = batcher.add_frame(frame)  # would be one byte over: the first frame leaves alone
    assert ready == frame
    assert batcher.pending_frames == 1 and batcher.pending_size == size


def test_frame_larger_than_the_limit_travels_alone() -> None:
    small = encode(_set(1))
    big = Publish(address="/big", signal="event", value=b"x" * 3000)
    out = _run(Batcher(1160), [_set(1), big, _set(2)])
    assert out == [small, encode(big), encode(_set(2))]


def test_every_message_within_limit_and_order_kept_across_boundaries() -> None:
    messages = [_set(i) if i % 3 else Publish(address=f"/p/{i}", signal="stream", value=b"y" * (i % 50), phase="start")
                for i in range(500)]
    out = _run(Batcher(1160), messages)
    assert len(out) > 10
    assert all(len(chunk) <= 1160 for chunk in out)
    decoded = [m for chunk in out for m in decode_all(chunk)]
    assert decoded == messages


@pytest.mark.parametrize("limit", [1, 17, 18, 19, 100, 1159, 1160, 1161, 16384])
def test_sizes_around_limits_lose_nothing(limit: int) -> None:
    messages = [_set(i) for i in range(200)]  # frames of 18-20 bytes
    out = _run(Batcher(limit), messages)
    for chunk in out:
        frames = decode_all(chunk)
        assert len(chunk) <= limit or len(frames) == 1
    assert [m for chunk in out for m in decode_all(chunk)] == messages


def test_encode_error_leaves_pending_untouched() -> None:
    batcher = Batcher(4096)
    batcher.add_message(_set(1))
    before = batcher.pending_size
    with pytest.raises(EncodeError):
        batcher.add_message(Set(address="/x", value=2**70))
    assert batcher.pending_size == before and batcher.pending_frames == 1
    assert batcher.take() == encode(_set(1))


@pytest.mark.parametrize(
    "frame, needle",
    [
        (b"\x53\x01", "4-byte header"),
        (b"\x54\x01\x00\x01\x41", "magic"),
        (b"\x53\x01\x00\x05\x41", "declares 9 bytes but 5"),
        (encode(Ping()) + b"\x00", "exactly one complete frame"),
    ],
)
def test_add_frame_rejects_what_is_not_one_frame(frame: bytes, needle: str) -> None:
    batcher = Batcher(4096)
    with pytest.raises(EncodeError, match=needle):
        batcher.add_frame(frame)
    assert batcher.pending_size == 0


def test_add_frame_accepts_bytes_like_and_timestamped_frames() -> None:
    frame = encode(_set(3), timestamp=99)
    batcher = Batcher(4096)
    batcher.add_frame(memoryview(frame))
    batcher.add_frame(bytearray(frame))
    assert batcher.take() == frame * 2


def test_negative_limit_rejected() -> None:
    with pytest.raises(ValueError):
        Batcher(-1)


def test_splitter_skips_a_malformed_frame_inside_a_batch() -> None:
    good1, good2 = encode(_set(1)), encode(_set(2))
    bad = bytearray(encode(_set(9)))
    bad[4] = 0x7F  # intact header, unknown message type
    batch = good1 + bytes(bad) + good2
    messages, errors = decode_all(batch, errors="collect")
    assert messages == [_set(1), _set(2)]
    assert len(errors) == 1 and isinstance(errors[0], DecodeError)
    assert errors[0].offset is not None and errors[0].offset >= len(good1)


def test_splitter_stops_at_a_broken_header_and_keeps_what_came_before() -> None:
    batch = encode(_set(1)) + b"\x00\x01\x02\x03" + encode(_set(2))
    messages, errors = decode_all(batch, errors="collect")
    assert messages == [_set(1)]
    assert len(errors) == 1 and errors[0].offset == len(encode(_set(1)))


def test_add_item_says_when_the_caller_has_more_to_do() -> None:
    frame = encode(_set(1))
    batcher = Batcher(2 * len(frame))
    assert batcher.add_item(_set(1), -1, False) is True  # pending, no flush scheduled yet
    assert batcher.take_left() is None
    assert batcher.add_item(frame, -1, True) is True  # exactly full
    assert batcher.take_left() is None and batcher.full
    assert batcher.take() == frame * 2
    assert batcher.add_item(_set(1), -1, True) is False  # pending, its flush already scheduled
    assert batcher.add_item(_set(1), -1, True) is True  # full again
    assert batcher.take() == frame * 2


def test_add_item_hands_over_the_message_a_frame_pushed_out_once() -> None:
    frame = encode(_set(1))
    batcher = Batcher(2 * len(frame) - 1)
    assert batcher.add_item(memoryview(frame), -1, True) is False
    assert batcher.add_item(_set(1), 2, True) is True
    assert batcher.take_left() == frame
    assert batcher.take_left() is None
    assert batcher.take() == encode(_set(1), qos=2)


def test_add_item_refuses_to_run_over_a_message_not_taken() -> None:
    frame = encode(_set(1))
    batcher = Batcher(len(frame))
    batcher.add_item(frame, -1, True)
    batcher.add_item(frame, -1, True)  # the first is pushed out (and the second fills the batch)
    with pytest.raises(RuntimeError, match="take_left"):
        batcher.add_item(frame, -1, True)
    assert batcher.take_left() == frame
    assert batcher.take() == frame


def test_add_item_error_names_the_item_and_leaves_the_batch() -> None:
    batcher = Batcher(4096)
    batcher.add_item(_set(1), -1, True)
    with pytest.raises(EncodeError, match="magic"):
        batcher.add_item(b"\x54\x01\x00\x01\x41", -1, True)
    with pytest.raises(EncodeError):
        batcher.add_item(object(), -1, True)
    assert batcher.take_left() is None
    assert batcher.take() == encode(_set(1))


def test_limit_zero_add_item_is_always_full() -> None:
    batcher = Batcher(0)
    assert batcher.add_item(_set(4), -1, True) is True
    assert batcher.full and batcher.take() == encode(_set(4))


class _Held:
    def __init__(self) -> None:
        self.held = 0


def test_has_room_reads_the_bytes_held_below_plus_the_pending() -> None:
    batcher = Batcher(4096)
    assert batcher.has_room() is False  # no high-water mark set: the caller checks itself
    held = _Held()
    frame = encode(_set(1))
    batcher.set_high_water_mark(held, "held", 100 + len(frame))
    held.held = 100
    assert batcher.has_room() is True
    batcher.add_frame(frame)
    assert batcher.has_room() is True  # exactly at the mark
    held.held = 101
    assert batcher.has_room() is False
    batcher.take()
    assert batcher.has_room() is True
    batcher.set_high_water_mark(held, "missing", 100)
    with pytest.raises(AttributeError):
        batcher.has_room()

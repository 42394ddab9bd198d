"""Encode and decode CLASP frames (docs/protocol.md §2-§7); the work happens in compiled code.

* ``encode(message, *, qos=None, timestamp=None) -> bytes`` -- one complete frame.
* ``decode(data) -> Message`` -- the frame at the start of ``data``; trailing bytes ignored.
* ``decode_frame(data) -> Frame`` -- the same plus header fields (qos, timestamp, version, size).
* ``decode_all(data, errors="raise")`` -- every frame of a buffer of back-to-back frames;
  ``errors="collect"`` returns ``(messages, errors)`` and skips frames with a bad payload.
* ``iter_frames(data)`` -- a ``Frame`` per frame of such a buffer.
* ``frame_size(data, offset=0)`` -- size of the frame at ``offset`` once its header is
  complete, else None (stream reassembly).
* ``decode_slice(data, start, count)`` -- the next ``count`` frames from ``start``: ``(messages,
  errors, end)``; ``frame_count(data)`` -- how many frames a buffer holds.
* ``Batcher(limit)`` -- frames encoded straight into a pending message of at most ``limit`` bytes.

Errors: ``DecodeError`` (with ``offset`` and ``field``) and ``EncodeError``.
Values nest at most ``MAX_NESTING`` (64) containers deep, bundles likewise.
"""

from __future__ import annotations

from .._codec import (
    MAX_NESTING,
    Batcher,
    Frame,
    WriteBuffer,
    decode,
    decode_all,
    decode_frame,
    decode_slice,
    encode,
    frame_count,
    frame_size,
    iter_frames,
)
from ..errors import DecodeError, EncodeError
from .messages import default_qos

__all__ = [
    "MAX_NESTING",
    "Batcher",
    "DecodeError",
    "EncodeError",
    "Frame",
    "WriteBuffer",
    "decode",
    "decode_all",
    "decode_frame",
    "decode_slice",
    "default_qos",
    "encode",
    "frame_count",
    "frame_size",
    "iter_frames",
]

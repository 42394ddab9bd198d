"""The compiled SCTP packet code (clasp_fast._sctp) against aiortc's pure-Python reference."""

from __future__ import annotations

import os
import random

import pytest
from aiortc import rtcsctptransport as aio
from google_crc32c import value as reference_crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from clasp_fast import _sctp
from clasp_fast.errors import DecodeError


def aio_data(flags, tsn, sid, seq, ppid, data):
    chunk = aio.DataChunk()
    chunk.flags, chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = flags, tsn, sid, seq, ppid
    chunk.user_data = data
    return chunk


@pytest.mark.parametrize("hardware", [True, False], ids=["cpu-instruction", "table"])
@pytest.mark.parametrize("size", [0, 1, 3, 7, 8, 9, 63, 1189, 4096, 16384])
def test_crc32c_matches_google_crc32c(size, hardware):
    # Both ways of computing it: the CPU's CRC32C instruction (where there is one) and the table.
    used = _sctp._use_hardware_crc32c(hardware)
    try:
        assert used == (hardware and _sctp._HARDWARE_CRC32C)
        data = random.Random(size).randbytes(size)
        assert _sctp.crc32c(data) == reference_crc32c(data)
        packet = _sctp.build_packet(5000, 5000, 7, b"", [_sctp.DataChunk(3, 1, 0, 0, 53, data)])
        assert _sctp.parse_packet(packet)[3][0].user_data == data
    finally:
        _sctp._use_hardware_crc32c(True)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 1160])
def test_data_packet_is_byte_identical_to_aiortc(size):
    payload = bytes(range(256)) * 5
    chunk = _sctp.DataChunk(3, 0xFFFFFFFF, 7, 65535, 53, payload[:size])
    ours = _sctp.build_packet(5000, 5001, 0xDEADBEEF, b"", [chunk])
    theirs = aio.serialize_packet(5000, 5001, 0xDEADBEEF, aio_data(3, 0xFFFFFFFF, 7, 65535, 53, payload[:size]))
    assert ours == theirs


def test_bundled_packet_parses_with_aiortc():
    sack = _sctp.build_sack(100, 65536, [(2, 3), (5, 5)], [99])
    chunks = [_sctp.DataChunk(2, 101, 1, 4, 53, b"abc"), _sctp.DataChunk(0, 102, 1, 4, 53, b"defgh"),
              _sctp.DataChunk(1, 103, 1, 4, 53, b"")]
    packet = _sctp.build_packet(5000, 5000, 42, sack, chunks)
    _, _, tag, parsed = aio.parse_packet(packet)
    assert tag == 42
    assert [type(c).__name__ for c in parsed] == ["SackChunk", "DataChunk", "DataChunk", "DataChunk"]
    assert parsed[0].cumulative_tsn == 100 and parsed[0].gaps == [(2, 3), (5, 5)] and parsed[0].duplicates == [99]
    assert [(c.tsn, c.flags, c.user_data) for c in parsed[1:]] == [(101, 2, b"abc"), (102, 0, b"defgh"), (103, 1, b"")]


def test_parse_reads_every_chunk_kind_aiortc_writes():
    forward = aio.ForwardTsnChunk()
    forward.cumulative_tsn = 77
    forward.streams = [(1, 2), (3, 65535)]
    heartbeat = aio.HeartbeatChunk()
    heartbeat.params = [(1, b"info")]
    for chunk, expected in [
        (aio_data(7, 5, 2, 9, 51, b"text"), None),
        (forward, (_sctp.CHUNK_FORWARD_TSN, 77, [(1, 2), (3, 65535)])),
        (heartbeat, (4, 0, heartbeat.body)),
    ]:
        _, _, _, (parsed,) = _sctp.parse_packet(aio.serialize_packet(1, 2, 3, chunk))
        if expected is None:
            fields = (parsed.flags, parsed.tsn, parsed.stream_id, parsed.stream_seq, parsed.protocol, parsed.user_data)
            assert fields == (7, 5, 2, 9, 51, b"text")
        else:
            assert parsed == expected


def test_forward_tsn_matches_aiortc():
    forward = aio.ForwardTsnChunk()
    forward.cumulative_tsn = 0x80000001
    forward.streams = [(4, 10)]
    assert _sctp.build_forward_tsn(0x80000001, [(4, 10)]) == bytes(forward)


def test_checksum_mismatch_names_the_field():
    packet = bytearray(_sctp.build_packet(1, 2, 3, b"", [_sctp.DataChunk(3, 1, 0, 0, 53, b"x")]))
    packet[-1] ^= 0xFF
    with pytest.raises(DecodeError) as info:
        _sctp.parse_packet(bytes(packet))
    assert info.value.offset == 8 and info.value.field == "checksum"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_buffer_parses_as_its_bytes_do(kind):
    control = _sctp.build_chunk(10, 0, b"cookie") + _sctp.build_sack(5, 1000, [(2, 3)], [])
    packet = _sctp.build_packet(1, 2, 3, control, [_sctp.DataChunk(3, 6, 1, 0, 53, b"abc")])
    source, destination, tag, chunks = _sctp.parse_packet(kind(packet))
    assert (source, destination, tag) == (1, 2, 3)
    assert chunks[0] == (10, 0, b"cookie") and chunks[1][:3] == (_sctp.CHUNK_SACK, 5, 1000)
    assert chunks[2].user_data == b"abc"
    with pytest.raises(DecodeError) as info:
        _sctp.parse_packet(kind(b""))
    assert info.value.field == "packet"


def _with_crc(body: bytes) -> bytes:
    crc = reference_crc32c(body[:8] + b"\0\0\0\0" + body[12:])
    return body[:8] + crc.to_bytes(4, "little") + body[12:]


@pytest.mark.parametrize(
    "chunk, offset, field",
    [
        (b"\x00\x03\x00\x02", 14, "chunk length"),  # shorter than a chunk header
        (b"\x00\x03\x00\x40" + bytes(8), 14, "chunk length"),  # runs past the end
        (b"\x00\x03\x00\x08" + bytes(4), 14, "chunk length"),  # DATA shorter than its header
        (b"\x03\x00\x00\x10" + bytes(8) + b"\x00\x05\x00\x00", 28, "SACK gap blocks"),  # 5 gaps announced, none there
    ],
)
def test_malformed_chunks_raise_with_offset(chunk, offset, field):
    with pytest.raises(DecodeError) as info:
        _sctp.parse_packet(_with_crc(bytes(12) + chunk))
    assert info.value.offset == offset
    assert info.value.field == field


def test_short_packet():
    with pytest.raises(DecodeError) as info:
        _sctp.parse_packet(bytes(15))
    assert info.value.offset == 0


def test_every_truncation_of_a_valid_packet_is_refused_or_parsed():
    packet = _sctp.build_packet(1, 2, 3, _sctp.build_sack(1, 2, [(1, 1)], [5]),
                                [_sctp.DataChunk(3, 9, 0, 0, 53, b"hello")])
    full = _sctp.parse_packet(packet)[3]
    assert len(full) == 2
    parsed_cuts = 0
    for cut in range(len(packet)):
        body = _with_crc(packet[:cut]) if cut >= 12 else packet[:cut]
        try:
            chunks = _sctp.parse_packet(body)[3]
        except DecodeError as error:
            assert 0 <= error.offset <= len(body)
        else:
            # Only whole chunks come out of a truncated packet: a proper prefix of the full list.
            parsed_cuts += 1
            assert 0 < len(chunks) < len(full) or cut >= len(packet) - 3
            assert repr(chunks) == repr(full[:len(chunks)])
    assert parsed_cuts > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_random_bodies_never_crash(body):
    packet = _with_crc(b"\x13\x88\x13\x88\x00\x00\x00\x01" + bytes(4) + body)
    try:
        _, _, _, chunks = _sctp.parse_packet(packet)
    except DecodeError as error:
        assert 0 <= error.offset <= len(packet)
        return
    # Whatever parses also parses with aiortc's reference parser into as many known chunks.
    try:
        reference = aio.parse_packet(packet)[3]
    except Exception:
        return
    assert len([c for c in chunks if not isinstance(c, tuple) or c[0] in aio.CHUNK_TYPES]) == len(reference)


def test_build_refuses_unpadded_control_and_oversized_chunks():
    with pytest.raises(ValueError, match="padded"):
        _sctp.build_packet(1, 2, 3, b"abc", [])
    with pytest.raises(ValueError, match="TSN 4"):
        _sctp.build_packet(1, 2, 3, b"", [_sctp.DataChunk(3, 4, 0, 0, 53, bytes(70000))])
    with pytest.raises(TypeError):
        _sctp.build_packet(1, 2, 3, b"", [object()])


def test_chunk_size_counts_header_and_padding():
    assert _sctp.chunk_size(0) == 16
    assert _sctp.chunk_size(1) == 20
    assert _sctp.chunk_size(1160) == 1176
    assert len(bytes(_sctp.DataChunk(3, 1, 0, 0, 53, os.urandom(5)))) == 24

"""The compiled per-chunk loops of the SCTP data path (_ext/sctp.pyx) against the Python rules.

``receive_in_order`` is checked by difference: two receivers of real aiortc associations get the
same seeded packet sequences (fragmented, ordered and unordered messages on several streams, with
loss, duplication, reordering and an oversized message), one taking in-order chunks and those
beyond a gap in compiled code and one sending every chunk through the Python path; after every
packet both must have delivered the same messages and hold the same state. The sending loops are
checked directly.
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from clasp_fast import _sctp, sctp

from tests.sctp_pair import close_pair, connect_pair

FIRST, LAST, UNORDERED = 2, 1, 4
MAX = 262_144  # the maximum message size aiortc 1.16 advertises (a larger message is refused)


def _messages(rng: random.Random, count: int, oversized: bool) -> list[tuple[int, bool, list[int]]]:
    """(stream, ordered, fragment sizes) of ``count`` messages; one over MAX when ``oversized``."""
    messages = []
    for _ in range(count):
        fragments = rng.choice([1, 1, 1, 2, 3, 7])
        messages.append((rng.choice([1, 3, 5]), rng.random() < 0.8, [rng.randint(1, 1100) for _ in range(fragments)]))
    if oversized:
        messages.insert(count // 2, (3, True, [1200] * (MAX // 1200 + 2)))
    return messages


def _chunks(messages) -> list[tuple[int, int, int, int, bytes]]:
    """(relative TSN, stream, stream sequence, flags, data) of every fragment, in TSN order."""
    chunks = []
    sequence: dict[int, int] = {}
    tsn = 1
    for number, (stream, ordered, sizes) in enumerate(messages):
        seq = 0
        if ordered:
            seq = sequence.get(stream, 0)
            sequence[stream] = (seq + 1) & 0xFFFF
        for index, size in enumerate(sizes):
            flags = 0 if ordered else UNORDERED
            flags |= FIRST if index == 0 else 0
            flags |= LAST if index == len(sizes) - 1 else 0
            data = bytes([number & 0xFF]) * size
            chunks.append((tsn, stream, seq, flags, data))
            tsn += 1
    return chunks


def _packets(rng: random.Random, chunks, faults: bool) -> list[list]:
    """Chunks grouped 1-4 per packet; with ``faults`` some packets are lost (sent again later),
    duplicated or swapped with the next one."""
    packets = []
    index = 0
    while index < len(chunks):
        take = rng.randint(1, 4)
        packets.append(chunks[index:index + take])
        index += take
    if not faults:
        return packets
    out: list[list] = []
    resend: list[list] = []
    for packet in packets:
        roll = rng.random()
        if roll < 0.05:
            resend.append(packet)
            continue
        out.append(packet)
        if roll < 0.08:
            out.append(packet)
        if resend and rng.random() < 0.3:
            out.append(resend.pop(0))
    out.extend(resend)
    for i in range(len(out) - 1):
        if rng.random() < 0.05:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _state(transport) -> dict:
    base = transport._clasp_base

    def rel(tsn):
        return (tsn - base) & 0xFFFFFFFF

    streams = {
        sid: (stream.sequence_number, [(rel(c.tsn), c.flags) for c in stream.reassembly])
        for sid, stream in transport._inbound_streams.items()
    }
    stats = transport.stats
    return {
        "cumulative": rel(transport._last_received_tsn),
        "rwnd": transport._advertised_rwnd,
        "misordered": sorted(rel(t) for t in transport._sack_misordered),
        "duplicates": sorted(rel(t) for t in transport._sack_duplicates),
        "streams": streams,
        "sack_needed": transport._sack_needed,
        "tails": {sid: (rel(tsn), size) for sid, (tsn, size) in transport._tail_message_bytes.items()},
        "received": (stats.data_chunks_received, stats.data_chunks_dropped, stats.messages_refused),
        "delivered": transport._clasp_delivered,
    }


def _record_deliveries(transport) -> None:
    transport._clasp_delivered = []
    receive = transport._receive

    async def recording(stream_id: int, pp_id: int, data: bytes) -> None:
        transport._clasp_delivered.append((stream_id, pp_id, len(data), data[:1]))
        await receive(stream_id, pp_id, data)

    transport._receive = recording


def _count_python_chunks(transport) -> list[int]:
    counted = [0]
    receive_data_chunk = transport._receive_data_chunk

    async def counting(chunk) -> None:
        counted[0] += 1
        await receive_data_chunk(chunk)

    transport._receive_data_chunk = counting
    return counted


def _packet(transport, chunks) -> bytes:
    base = transport._clasp_base
    data_chunks = [_sctp.DataChunk(flags, (base + tsn) & 0xFFFFFFFF, stream, seq, 53, data)
                   for tsn, stream, seq, flags, data in chunks]
    return _sctp.build_packet(5000, 5000, transport._local_verification_tag, b"", data_chunks)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("faults", [False, True], ids=["clean", "lossy"])
async def test_compiled_in_order_receive_matches_the_python_path(seed: int, faults: bool):
    rng = random.Random(seed)
    messages = _messages(rng, 120, oversized=seed % 2 == 1)
    packets = _packets(rng, _chunks(messages), faults)
    pairs = [await connect_pair(True, True, [dict(label="r")]) for _ in range(2)]
    try:
        compiled, python = pairs[0][1].sctp, pairs[1][1].sctp
        python.compiled_receive = False
        for receiver in (compiled, python):
            receiver._clasp_base = receiver._last_received_tsn
            _record_deliveries(receiver)
        python_chunks = [_count_python_chunks(compiled), _count_python_chunks(python)]
        for number, packet in enumerate(packets):
            for receiver in (compiled, python):
                await receiver._handle_data(_packet(receiver, packet))
            assert _state(compiled) == _state(python), f"after packet {number} of {len(packets)} (seed {seed})"
        delivered = _state(compiled)["delivered"]
        whole = sum(1 for _, _, sizes in messages if sum(sizes) <= MAX)
        assert len(delivered) == whole  # everything but the oversized message, once
        assert compiled.stats.messages_refused == seed % 2
        # The compiled loop took the in-order chunks: the Python path saw only the rest.
        total = sum(len(packet) for packet in packets)
        assert python_chunks[1][0] == total
        # Beyond a gap too, most chunks are taken in compiled code (unordered fragments, chunks
        # that fill a gap and messages that may complete go through the Python path).
        assert python_chunks[0][0] < (total // 2 if faults else 10 + MAX // 1200), python_chunks
    finally:
        for offerer, answerer, _, _ in pairs:
            await close_pair(offerer, answerer)


def test_fragment_splits_a_message_into_consecutive_chunks():
    queue: deque = deque()
    tsn, booked = _sctp.fragment(queue, b"abcdefghij", 4, UNORDERED, 0xFFFFFFFF, 7, 0, 51, 1.5, 3)
    assert tsn == 2  # 0xFFFFFFFF, 0, 1: the TSN wraps
    assert [c.tsn for c in queue] == [0xFFFFFFFF, 0, 1]
    assert [c.user_data for c in queue] == [b"abcd", b"efgh", b"ij"]
    assert [c.flags for c in queue] == [UNORDERED | FIRST, UNORDERED, UNORDERED | LAST]
    assert all((c.stream_id, c.protocol, c._expiry, c._max_retransmits) == (7, 51, 1.5, 3) for c in queue)
    assert booked == sum(c._book_size for c in queue) == 20 + 20 + 20
    single: deque = deque()
    assert _sctp.fragment(single, b"x" * 10, 100, 0, 5, 1, 9, 53, None, None) == (6, 28)
    assert single[0].flags == FIRST | LAST and single[0].stream_seq == 9
    with pytest.raises(ValueError, match="piece_max"):
        _sctp.fragment(deque(), b"x", 0, 0, 0, 0, 0, 0, None, None)


class _Channel:
    """What take_messages reads of an aiortc RTCDataChannel (its negotiated parameters)."""

    def __init__(self, id, *, ordered=True, life=None, retransmits=None):  # noqa: A002 - aiortc's name
        self.id, self.ordered, self.maxPacketLifeTime, self.maxRetransmits = id, ordered, life, retransmits


def test_take_messages_numbers_and_releases_per_channel_run():
    a, b, c = _Channel(1), _Channel(3, ordered=False, life=250, retransmits=2), _Channel(5)
    queue = deque([(a, 53, b"a" * 10), (a, 53, b"b" * 10), (b, 53, b"c" * 3), (a, 50, b"\x03open"),
                   (a, 53, b"d" * 9), (c, 51, b"e" * 30)])
    outbound: deque = deque()
    seqs = {1: 0xFFFF}
    released: list = []
    tsn, booked, stopped = _sctp.take_messages(queue, outbound, 7, 10_000, 0xFFFFFFFF, 12, seqs, released,
                                               lambda: 100.0)
    assert stopped is None and not queue
    assert tsn == 7 and booked == 7 + sum(chunk._book_size for chunk in outbound)
    assert [(x.tsn, x.stream_id, x.stream_seq, x.flags, x.protocol, x.user_data) for x in outbound] == [
        (0xFFFFFFFF, 1, 0xFFFF, FIRST | LAST, 53, b"a" * 10),  # the stream sequence wraps
        (0, 1, 0, FIRST | LAST, 53, b"b" * 10),
        (1, 3, 0, UNORDERED | FIRST | LAST, 53, b"ccc"),
        (2, 1, 1, FIRST | LAST, 50, b"\x03open"),  # DCEP: ordered, numbered in its stream
        (3, 1, 2, FIRST | LAST, 53, b"d" * 9),
        (4, 5, 0, FIRST, 51, b"e" * 12), (5, 5, 0, 0, 51, b"e" * 12), (6, 5, 0, LAST, 51, b"e" * 6),
    ]
    assert seqs == {1: 3, 5: 1}  # unordered messages take no sequence number
    assert [(x._expiry, x._max_retransmits) for x in outbound][1:4] == [(None, None), (100.25, 2), (None, None)]
    # Bytes off bufferedAmount: one entry per run of one channel, DCEP not counted.
    assert released == [(a, 20), (b, 3), (a, 9), (c, 30)]


def test_take_messages_stops_at_the_room_and_at_a_channel_without_stream_id():
    a, fresh = _Channel(0), _Channel(None)
    queue = deque([(a, 53, b"x" * 100)] * 3)
    outbound: deque = deque()
    released: list = []
    # Messages are taken while the queued bytes are under the room: the second passes it.
    tsn, booked, stopped = _sctp.take_messages(queue, outbound, 0, 150, 10, 1000, {}, released, lambda: 0.0)
    assert (tsn, booked, stopped, len(queue)) == (12, 232, None, 1)
    assert released == [(a, 200)]
    queue.extend([(fresh, 50, b"\x03open"), (a, 53, b"y")])
    released.clear()
    tsn, booked, stopped = _sctp.take_messages(queue, outbound, 0, 10_000, tsn, 1000, {}, released, lambda: 0.0)
    assert stopped is fresh and queue[0][0] is fresh and len(queue) == 2
    assert (tsn, released) == (13, [(a, 100)])
    with pytest.raises(ValueError, match="piece_max"):
        _sctp.take_messages(queue, outbound, 0, 10_000, 0, 0, {}, [], lambda: 0.0)
    text = deque([(a, 53, "text")])
    with pytest.raises(TypeError, match="holds str"):
        _sctp.take_messages(text, outbound, 0, 10_000, 0, 1000, {}, [], lambda: 0.0)
    assert len(text) == 1  # left where it was


def _sent(tsn: int, size: int = 100, *, acked: bool = False, in_flight: bool = True, sent_count: int = 1):
    chunk = _sctp.DataChunk(FIRST | LAST, tsn & 0xFFFFFFFF, 1, 0, 53, b"x" * size)
    chunk._acked, chunk._in_flight, chunk._sent_count, chunk._sent_time = acked, in_flight, sent_count, 10.0 + tsn
    return chunk


def test_acknowledge_takes_the_chunks_up_to_the_cumulative_tsn():
    queue = deque([_sent(0xFFFFFFFE), _sent(0xFFFFFFFF, acked=True), _sent(0, in_flight=False), _sent(1)])
    done, newly, left, sent_time = _sctp.acknowledge(queue, 0)
    assert (done, newly, left) == (3, 2 * 116, 2 * 116)
    assert sent_time == 10.0 + 0xFFFFFFFE  # the first chunk was sent once: an RTT sample
    assert [c.tsn for c in queue] == [1]
    resent = deque([_sent(5, sent_count=2), _sent(6)])
    assert _sctp.acknowledge(resent, 6)[3] is None  # Karn: no sample from a retransmitted chunk
    assert _sctp.acknowledge(deque([_sent(9)]), 8) == (0, 0, 0, None)  # an older SACK takes nothing


def test_take_new_data_fills_packets_within_both_windows():
    queue = deque(_sent(tsn, 1000, in_flight=False, sent_count=0) for tsn in range(6))
    queue[2]._abandoned = True
    sent_queue: deque = deque()
    bundler = _sctp.Bundler(2100, b"S" * 20)
    flight, taken = _sctp.take_new_data(queue, sent_queue, 0, 100_000, 4 * 1016, bundler, 42.0)
    packets, control, packet, used = bundler.packets, bundler.control, bundler.packet, bundler.used
    # The window takes four chunks in flight; the abandoned one moves to the sent queue uncounted.
    assert [c.tsn for c in sent_queue] == [0, 1, 2, 3, 4]
    assert flight == 4 * 1016 and taken == 5 * 1016
    assert [c.tsn for c in queue] == [5]  # waits for the window
    assert [(ctrl, [c.tsn for c in chunks]) for ctrl, chunks in packets] == [(b"S" * 20, [0, 1])]
    assert control == b"" and [c.tsn for c in packet] == [3, 4] and used == 2 * 1016
    assert all(c._in_flight and c._sent_count == 1 and c._sent_time == 42.0 for c in sent_queue if not c._abandoned)
    assert not sent_queue[2]._in_flight
    # The congestion window stops it too (a chunk may pass it, as RFC 4960 allows the last one).
    more = deque(_sent(tsn, 1000, in_flight=False, sent_count=0) for tsn in range(10, 14))
    bundler = _sctp.Bundler(1_000_000, b"")
    flight, taken = _sctp.take_new_data(more, deque(), 0, 1500, -1, bundler, 1.0)
    assert (flight, taken, len(bundler.packet), len(more)) == (2 * 1016, 2 * 1016, 2, 2)


def test_the_fast_path_is_on_by_default():
    assert sctp.FastSctpTransport.compiled_receive is True


@pytest.mark.parametrize("seed", [3, 8])
async def test_received_batches_take_the_compiled_path_and_the_python_path_under_loss(seed: int, monkeypatch):
    """Real associations, the sender's packets dropped, duplicated and reordered below DTLS: the
    receiver's data plane takes in-order DATA in one compiled call per batch and hands the rest
    (gaps, duplicates, SACKs) to the Python path; every message arrives, the ordered ones in order."""
    from clasp_fast.transport import fast_path

    from tests.sctp_pair import FaultyLink, wait_until

    outcomes = {"whole": 0, "rest": 0}
    receive_datagrams = _sctp.receive_datagrams

    def counting(layer, sctp_transport, batch, index, stop, messages):
        result = receive_datagrams(layer, sctp_transport, batch, index, stop, messages)
        outcomes["rest" if result[1] is not None or result[2] is not None else "whole"] += 1
        return result

    monkeypatch.setattr(fast_path._sctp, "receive_datagrams", counting)
    o, a, (ordered, unordered), (remote_ordered, remote_unordered) = await connect_pair(
        True, True, [dict(label="r"), dict(label="u", ordered=False)])
    FaultyLink(o, seed=seed, loss=0.04, reorder=0.04, duplicate=0.03, limit=4000)
    try:
        rng = random.Random(seed)
        sizes = [rng.choice([1, 40, 1100, 1300, 5000, 20_000]) for _ in range(300)]
        got_ordered: list[bytes] = []
        got_unordered: list[bytes] = []
        remote_ordered.on("message", got_ordered.append)
        remote_unordered.on("message", got_unordered.append)
        for number, size in enumerate(sizes):
            body = number.to_bytes(4, "big") * (size // 4 + 1)
            ordered.send(body[:max(size, 4)])
            unordered.send(body[:max(size, 4)])
        await wait_until(lambda: len(got_ordered) == len(got_unordered) == len(sizes), timeout=30)
        assert [int.from_bytes(m[:4], "big") for m in got_ordered] == list(range(len(sizes)))
        assert sorted(int.from_bytes(m[:4], "big") for m in got_unordered) == list(range(len(sizes)))
        assert [len(m) for m in got_ordered] == [max(size, 4) for size in sizes]
        assert outcomes["whole"] > 0 and outcomes["rest"] > 0, outcomes
        assert a.sctp.data_plane is not None and a.sctp.data_plane.layer is not None  # records taken over
    finally:
        await close_pair(o, a)

"""What a peer can make a FastSctpTransport receiver hold is bounded.

The maximum message size the receiver advertises (a=max-message-size) is enforced as fragments
arrive; DATA beyond the receive window or too far ahead is dropped unacknowledged (RFC 4960
section 6.2). Senders are real aiortc peers; the window tests feed hand-made DATA chunks into the
receiver's packet entry point, as a peer that ignores the rules would send them.
"""

from __future__ import annotations

import pytest

from clasp_fast import _sctp, sctp
from clasp_fast.errors import ProtocolError

from tests.sctp_pair import FaultyLink, close_pair, connect_pair, wait_until

MAX = 262_144  # what aiortc 1.16 advertises, and so the fast path enforces
WINDOW = 1024 * 1024  # aiortc's initial receive window (a_rwnd)
AHEAD = 0xFFFF  # the furthest a SACK gap block reaches past the cumulative TSN
FIRST, LAST, UNORDERED = 2, 1, 4



def held(transport) -> int:
    """Bytes the receiver holds for reassembly and reordering."""
    return WINDOW - transport._advertised_rwnd


def measure_held(transport) -> list[int]:
    """What the receiver holds after each packet (in-order chunks never reach _receive_data_chunk)."""
    samples: list[int] = []
    handle_data = transport._handle_data

    async def measuring(data: bytes) -> None:
        await handle_data(data)
        samples.append(held(transport))

    transport._handle_data = measuring
    return samples


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "lossy"])
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
@pytest.mark.parametrize("fast_sender", [True, False], ids=["fast-sender", "stock-sender"])
async def test_a_message_over_the_advertised_maximum_is_refused_and_its_channel_closed(fast_sender, ordered, faults):
    o, a, (big, other), (remote_big, remote_other) = await connect_pair(
        fast_sender, True, [dict(label="big", ordered=ordered), dict(label="other")]
    )
    if faults:
        FaultyLink(o, seed=11, loss=0.03, reorder=0.05, duplicate=0.02, limit=3000)
    try:
        assert f"a=max-message-size:{MAX}" in a.localDescription.sdp
        victim = a.sctp
        samples = measure_held(victim)
        got: list[bytes] = []
        errors: list[Exception] = []
        remote_big.on("message", got.append)
        remote_big.on("error", errors.append)
        after: list[bytes] = []
        remote_other.on("message", after.append)

        big.send(b"small")
        exactly = bytes(range(256)) * (MAX // 256)
        big.send(exactly)  # at the limit: fine
        o.sctp._remote_max_message_size = 0  # the sender ignores what the victim advertised
        big.send(b"x" * (2 * 1024 * 1024))
        await wait_until(lambda: errors)
        other.send(b"after")
        await wait_until(lambda: after and remote_big.readyState == "closed" and big.readyState == "closed")
        assert got == [b"small", exactly]
        (error,) = errors
        assert isinstance(error, ProtocolError)
        assert "'big'" in str(error) and f"{MAX} bytes" in str(error)
        # Without loss never more than one maximum-size message (plus the chunk that crossed it) is
        # held; with loss, fragments past a gap are counted apart, and the receive window bounds them.
        assert max(samples) <= (WINDOW if faults else MAX + sctp.USER_DATA_MAX)
        await wait_until(lambda: held(victim) == 0)  # given back at the latest when the stream resets
        assert after == [b"after"]  # the association and the other channels go on
        assert victim.stats.messages_refused == 1
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast_sender", [True, False], ids=["fast-sender", "stock-sender"])
async def test_messages_up_to_the_maximum_arrive_despite_loss_and_reordering(fast_sender):
    """Counting a message's fragments as they come never refuses one within the limit."""
    o, a, (ordered, unordered), (remote_ordered, remote_unordered) = await connect_pair(
        fast_sender, True, [dict(label="o"), dict(label="u", ordered=False)]
    )
    link = FaultyLink(o, seed=7, loss=0.03, reorder=0.05, duplicate=0.02, limit=3000)
    try:
        sizes = [MAX, 250_000, 1, MAX, 100_000]
        payloads = [bytes([n % 251]) * n for n in sizes]
        got_ordered: list[bytes] = []
        got_unordered: list[bytes] = []
        remote_ordered.on("message", got_ordered.append)
        remote_unordered.on("message", got_unordered.append)
        for payload in payloads:
            ordered.send(payload)
            unordered.send(payload)
        await wait_until(lambda: len(got_ordered) == len(got_unordered) == len(payloads), 60)
        assert got_ordered == payloads
        assert sorted(got_unordered) == sorted(payloads)
        assert link.dropped and link.reordered
        assert a.sctp.stats.messages_refused == 0
    finally:
        await close_pair(o, a)


async def test_without_an_error_listener_the_refusal_is_logged(caplog):
    o, a, (big,), (remote_big,) = await connect_pair(True, True, [dict(label="big")])
    try:
        o.sctp._remote_max_message_size = 0
        big.send(b"x" * (MAX + 1))
        await wait_until(lambda: remote_big.readyState == "closed")
        assert f"refused a message of more than {MAX} bytes" in caplog.text
        assert a.connectionState == "connected"
    finally:
        await close_pair(o, a)


def data_packet(transport, chunks: list) -> bytes:
    return _sctp.build_packet(transport._remote_port, transport._local_port, transport._local_verification_tag, b"",
                              chunks)


def chunk(tsn: int, stream: int, seq: int, flags: int, size: int = 1000) -> object:
    return _sctp.DataChunk(flags, tsn & 0xFFFFFFFF, stream, seq, 53, b"\x00" * size)


async def test_data_too_far_ahead_of_the_cumulative_tsn_is_neither_held_nor_acknowledged():
    o, a, _, _ = await connect_pair(True, True, [dict(label="r")])
    try:
        victim = a.sctp
        cumulative = victim._last_received_tsn
        for i in range(1000):
            tsn = cumulative + AHEAD + 1 + i
            await victim._handle_data(data_packet(victim, [chunk(tsn, 100, 0, FIRST | LAST | UNORDERED, 10)]))
        assert victim._sack_misordered == set()
        assert victim.stats.data_chunks_dropped == 1000
        # Within reach, a TSN after a gap is recorded (and reported in the next SACK).
        await victim._handle_data(data_packet(victim, [chunk(cumulative + 2, 100, 0, FIRST | LAST | UNORDERED, 10)]))
        assert victim._sack_misordered == {(cumulative + 2) & 0xFFFFFFFF}
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize(
    "first, low, high",
    [(2, 0, WINDOW), (1, WINDOW, 2 * WINDOW)],
    ids=["out-of-order", "in-order-skipping-sequence-numbers"],
)
async def test_data_that_cannot_be_delivered_is_bounded_by_the_receive_window(first, low, high):
    """3,000 complete messages of 1,000 bytes that each wait for an earlier stream sequence number.

    Out of order (TSN cumulative+1 missing) at most the window is held; in order, by a peer that
    ignores the window and skips stream sequence numbers, at most twice the window.
    """
    o, a, _, _ = await connect_pair(True, True, [dict(label="r")])
    try:
        victim = a.sctp
        cumulative = victim._last_received_tsn
        for i in range(3000):
            await victim._handle_data(data_packet(victim, [chunk(cumulative + first + i, 100, 5 + i, FIRST | LAST)]))
        assert low < held(victim) <= high
        assert victim.stats.data_chunks_dropped >= 3000 - high // 1000
    finally:
        await close_pair(o, a)


async def test_a_sender_keeps_to_the_window_and_hears_when_it_reopens():
    """RFC 4960 section 6.1 rule A on the sending side; a window update SACK on the receiving side."""
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        sender, victim = o.sctp, a.sctp
        got: list[bytes] = []
        remote.on("message", got.append)
        held_by_application = WINDOW - 20_000
        victim.hold_received(held_by_application)  # what WebRtcTransport does with undecoded data
        local.send(b"x" * 200_000)
        await wait_until(lambda: got)  # delivered within the small window, nothing dropped
        assert victim.stats.data_chunks_dropped == 0
        assert sender._peer_window < WINDOW // 2
        victim.hold_received(-held_by_application)  # the application took its data
        await wait_until(lambda: sender._peer_window == WINDOW)  # told without any DATA to answer
    finally:
        await close_pair(o, a)

"""What an application sees of FastSctpTransport is what aiortc (and the W3C) specify.

Real aiortc peer connections on loopback (tests/sctp_pair.py); the fast path on the side under test.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from clasp_fast import _sctp, sctp
from clasp_fast.messages import Set
from clasp_fast.webrtc import RELIABLE_LABEL

from tests.sctp_pair import close_pair, connect_pair, wait_until
from tests.test_webrtc import connected



@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_buffered_amount_counts_the_message_until_send_returns(fast):
    o, a, (local,), (remote,) = await connect_pair(fast, True, [dict(label="r")])
    try:
        low = asyncio.Event()
        local.on("bufferedamountlow", low.set)
        fired_inside_send = []

        # An idle channel: nothing in flight, so the fast path puts the message on the wire at once.
        local.send(b"x" * 100)
        fired_inside_send.append(low.is_set())
        assert local.bufferedAmount == 100  # W3C: counted until the current task ends
        low.clear()
        await asyncio.wait_for(low.wait(), 5)  # the common pattern must not hang
        assert fired_inside_send == [False]
        assert local.bufferedAmount == 0
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_a_burst_on_two_channels_fires_bufferedamountlow_once_each_and_drains(fast):
    # Messages sent while others are in flight wait in aiortc's queue; the flush releases their
    # bytes per channel: each channel crosses its threshold once and ends at 0, on both paths.
    o, a, (one, two), (far_one, far_two) = await connect_pair(fast, True, [dict(label="1"), dict(label="2")])
    try:
        arrived: list[bytes] = []
        far_one.on("message", arrived.append)
        far_two.on("message", arrived.append)
        fired = {"1": 0, "2": 0}
        for channel in (one, two):
            channel.bufferedAmountLowThreshold = 1000
            channel.on("bufferedamountlow", lambda label=channel.label: fired.__setitem__(label, fired[label] + 1))
        sent = []
        for i in range(60):
            channel = one if i % 3 else two
            data = bytes([i]) * (100 + i)
            channel.send(data)
            sent.append(data)
        assert one.bufferedAmount == sum(len(d) for i, d in enumerate(sent) if i % 3)
        assert two.bufferedAmount == sum(len(d) for i, d in enumerate(sent) if not i % 3)
        await wait_until(lambda: len(arrived) == len(sent), 5)
        assert sorted(arrived) == sorted(sent)
        assert (one.bufferedAmount, two.bufferedAmount) == (0, 0)
        assert fired == {"1": 1, "2": 1}
    finally:
        await close_pair(o, a)


def _sack_packet(transport, cumulative: int, gaps: list[tuple[int, int]]) -> bytes:
    sack = _sctp.build_sack(cumulative, 1 << 20, gaps, [])
    return _sctp.build_packet(transport._remote_port, transport._local_port, transport._local_verification_tag, sack,
                              [])


async def test_a_sack_with_gaps_gives_one_burst_not_two():
    """RFC 4960 section 6.1 rule D: one burst per transmit opportunity, also while recovering."""
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    sender = o.sctp
    packets: list[bytes] = []
    dtls = sender.transport
    real_send = dtls._send_data

    async def swallow(data: bytes) -> None:
        packets.append(data)  # the peer never sees (so never acknowledges) anything from here on

    dtls._send_data = swallow
    try:
        first = sender._local_tsn
        sender._cwnd = 1 << 24  # the window never limits: only the burst rule does
        for i in range(400):
            local.send(bytes([i % 256]) * sender.user_data_max)  # one full chunk per packet
        await wait_until(lambda: len(sender._sent_queue) >= 3)
        bursts = []
        # The peer reports the first chunk missing three times (fast retransmit, then recovery).
        for top in (1, 2, 3, 4):
            before = len(packets)
            await sender._handle_data(_sack_packet(sender, (first - 1) & 0xFFFFFFFF, [(2, 1 + top)]))
            bursts.append((len(packets) - before, sender._fast_recovery_exit is not None))
        outside = [n for n, recovering in bursts if not recovering]
        inside = [n for n, recovering in bursts if recovering]
        assert outside and inside, bursts
        assert max(outside) <= sctp.MAX_BURST_PACKETS, bursts
        # In recovery: the fast retransmission plus a burst of two.
        assert max(inside) <= 1 + 2, bursts
    finally:
        dtls._send_data = real_send
        await close_pair(o, a)


def _handler_failing_on_boom(remote) -> list[bytes]:
    """Record what ``remote`` receives; its message handler raises on b"boom"."""
    got: list[bytes] = []

    def on_message(message: bytes) -> None:
        got.append(message)
        if message == b"boom":
            raise RuntimeError("handler failed")

    remote.on("message", on_message)
    return got


async def _three_in_one_packet(local) -> None:
    # The first message leaves at once; the next three are bundled into one packet.
    local.send(b"zero")
    local.send(b"one")
    local.send(b"boom")
    local.send(b"three")


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_a_failing_handler_with_an_error_listener_loses_and_delays_nothing(fast):
    o, a, (local,), (remote,) = await connect_pair(True, fast, [dict(label="r")])
    try:
        got = _handler_failing_on_boom(remote)
        errors: list[Exception] = []
        remote.on("error", errors.append)
        await _three_in_one_packet(local)
        await wait_until(lambda: len(got) == 4)
        assert got == [b"zero", b"one", b"boom", b"three"]
        assert [str(e) for e in errors] == ["handler failed"]
        assert o.sctp.stats.retransmissions == 0
        assert a.connectionState == "connected"
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_a_failing_handler_without_error_listener_ends_the_connection_as_aiortc_does(fast, caplog):
    """aiortc lets the exception end its DTLS receive loop (logged, connection closed); so does the
    fast path, after delivering the rest of that packet at once (stock aiortc loses it)."""
    o, a, (local,), (remote,) = await connect_pair(True, fast, [dict(label="r")])
    try:
        got = _handler_failing_on_boom(remote)
        with caplog.at_level(logging.WARNING):
            await _three_in_one_packet(local)
            await wait_until(lambda: a.connectionState == "closed")
        assert "handler failed" in caplog.text
        if fast:
            assert got == [b"zero", b"one", b"boom", b"three"]
            assert o.sctp.stats.retransmissions == 0  # "three" came with its packet, not resent
        else:
            assert got == [b"zero", b"one", b"boom"]
    finally:
        await close_pair(o, a)


async def test_a_failing_receiver_callback_reaches_on_error_and_later_messages_arrive():
    async with connected() as (a, b, _, _):
        got: list[object] = []
        errors: list[Exception] = []

        def callback(message) -> None:
            got.append(message)
            if message.value == 1:
                raise RuntimeError("callback failed on 1")

        b.receiver.on_message(callback)
        b.receiver.on_error(errors.append)
        for i in range(5):
            await a.sender.send(Set(address="/x", value=i))
        await wait_until(lambda: len(got) == 5)
        assert [m.value for m in got] == [0, 1, 2, 3, 4]
        assert [str(e) for e in errors] == ["callback failed on 1"]
        assert b.state == "connected"
        assert b.channels[RELIABLE_LABEL].readyState == "open"
        assert b.stats().decode_errors == 0  # not a malformed frame



@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_message_listeners_are_called_as_pyee_calls_them(fast):
    """A coroutine listener runs and its exception reaches the channel's error event; with two
    listeners both get every message, in the order they were added (the fast path calls a single
    listener directly instead of through pyee's emit)."""
    o, a, (local, other), (remote, remote_other) = await connect_pair(True, fast, [dict(label="r"), dict(label="two")])
    try:
        got: list[bytes] = []
        errors: list[Exception] = []

        async def on_message(data: bytes) -> None:
            got.append(data)
            if data == b"boom":
                raise RuntimeError("coroutine failed")

        remote.on("message", on_message)
        remote.on("error", errors.append)
        both: list[tuple[str, bytes]] = []
        remote_other.on("message", lambda data: both.append(("first", data)))
        remote_other.on("message", lambda data: both.append(("second", data)))
        for data in (b"one", b"boom", b"two"):
            local.send(data)
            other.send(data)
        await wait_until(lambda: len(got) == 3 and len(both) == 6 and errors)
        assert got == [b"one", b"boom", b"two"]
        assert [str(e) for e in errors] == ["coroutine failed"]
        assert both == [(which, data) for data in (b"one", b"boom", b"two") for which in ("first", "second")]
        assert a.connectionState == "connected"
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_buffered_amount_counts_text_and_an_oversized_message_is_refused_uncounted(fast):
    o, a, (local,), (remote,) = await connect_pair(fast, True, [dict(label="r")])
    try:
        arrived: list[object] = []
        remote.on("message", arrived.append)
        local.send("hé")  # 3 bytes of UTF-8
        local.send(b"")  # sent as one byte, as aiortc does
        assert local.bufferedAmount == 4
        o.sctp._remote_max_message_size = 1000
        with pytest.raises(ValueError, match="1001 bytes"):
            local.send(b"x" * 1001)
        assert local.bufferedAmount == 4
        local.send(b"y" * 1000)
        assert local.bufferedAmount == 1004
        await wait_until(lambda: len(arrived) == 3, 5)
        assert arrived == ["hé", b"", b"y" * 1000]
        await wait_until(lambda: local.bufferedAmount == 0, 5)
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_a_once_listener_hears_one_message_and_an_on_listener_every_one(fast):
    o, a, (local,), (remote,) = await connect_pair(True, fast, [dict(label="r")])
    try:
        once: list[bytes] = []
        remote.once("message", once.append)
        local.send(b"one")
        await wait_until(lambda: once, timeout=5)
        every: list[bytes] = []
        remote.on("message", every.append)
        local.send(b"two")
        local.send(b"three")
        await wait_until(lambda: len(every) == 2, timeout=5)
        assert once == [b"one"] and every == [b"two", b"three"]
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_bufferedamountlow_listeners_are_called_as_pyee_calls_them(fast):
    # The fast path calls a single "bufferedamountlow" listener's handler itself (no emit()): a
    # once listener hears one crossing, a coroutine handler runs, a failing handler's exception
    # reaches "error" and the channel goes on.
    o, a, (local,), (remote,) = await connect_pair(fast, True, [dict(label="r")])
    try:
        arrived: list[bytes] = []
        remote.on("message", arrived.append)
        once: list[int] = []
        local.once("bufferedamountlow", lambda: once.append(local.bufferedAmount))
        local.send(b"one")
        await wait_until(lambda: once and local.bufferedAmount == 0, timeout=5)

        ran: list[str] = []

        async def handler() -> None:
            await asyncio.sleep(0)
            ran.append("coroutine")

        local.on("bufferedamountlow", handler)
        local.send(b"two")
        await wait_until(lambda: ran == ["coroutine"], timeout=5)
        local.remove_listener("bufferedamountlow", handler)

        def failing() -> None:
            raise RuntimeError("low handler failed")

        errors: list[Exception] = []
        local.on("error", errors.append)
        local.on("bufferedamountlow", failing)
        local.send(b"three")
        await wait_until(lambda: errors, timeout=5)
        local.send(b"four")  # crosses again: fails again
        await wait_until(lambda: len(arrived) == 4 and len(errors) == 2, timeout=5)
        assert once == [0]
        assert [str(e) for e in errors] == ["low handler failed"] * 2
        assert arrived == [b"one", b"two", b"three", b"four"] and local.bufferedAmount == 0
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
async def test_text_empty_and_binary_messages_in_one_packet_arrive_in_order(fast):
    # The fast receiver hands binary messages up at once and the rest (text, empty: other PPIDs)
    # through aiortc's _receive; in one packet they keep their order, and a handler failing after
    # a text message reaches "error" once the packet's other messages were delivered.
    o, a, (local,), (remote,) = await connect_pair(True, fast, [dict(label="r")])
    try:
        got = _handler_failing_on_boom(remote)
        errors: list[Exception] = []
        remote.on("error", errors.append)
        local.send(b"first")  # leaves at once; the rest are bundled into one packet
        sent = [b"a", "text", b"b", b"", "", b"boom", b"c", "é"]
        for message in sent:
            local.send(message)
        await wait_until(lambda: len(got) == 1 + len(sent), timeout=5)
        assert got == [b"first", *sent]
        assert [str(e) for e in errors] == ["handler failed"]
        assert a.connectionState == "connected"
    finally:
        await close_pair(o, a)

"""The WebRTC receive path: what arrived how (Delivery), huge batches, and hostile peers.

Real WebRtcTransports on loopback, signaled in memory; a "hostile" peer is a transport whose
DataChannels are used directly, ignoring what the victim advertised.
"""

from __future__ import annotations

import asyncio

from clasp_fast.transport.webrtc import receive as receive_path
from clasp_fast.codec import encode
from clasp_fast.errors import ProtocolError
from clasp_fast.messages import Publish, Set
from clasp_fast.p2p import Peer, PeerInfo
from clasp_fast.webrtc import (
    RECEIVE_SLICE_FRAMES,
    RELIABLE_LABEL,
    UNRELIABLE_LABEL,
    Delivery,
    WebRtcConfig,
    current_delivery,
)

from tests.sctp_pair import wait_until
from tests.test_webrtc import connected

HUGE_BATCH = 14_000  # frames of 18 bytes: 252,000 bytes, just under the 262,144-byte maximum



def huge_batch(start: int = 0, count: int = HUGE_BATCH) -> bytes:
    return b"".join(encode(Set(address="/h", value=start + i)) for i in range(count))


async def flood(sender, victim, batches: int) -> list[tuple[int, int]]:
    """Send ``batches`` huge batches at once; check all arrive in order. Returns, after each
    DataChannel message the victim received: (undecoded bytes held, SCTP a_rwnd advertised)."""
    got: list[int] = []
    victim.receiver.on_message(lambda message: got.append(message.value))
    samples: list[tuple[int, int]] = []
    receive = victim.receiver.data_received

    def measuring(ch, data) -> None:
        receive(ch, data)
        backlog = sum(c.backlog_bytes for c in victim._channels)
        samples.append((backlog, victim.peer_connection.sctp._advertised_rwnd))

    victim.receiver.data_received = measuring
    dc = sender.channels[RELIABLE_LABEL]
    for n in range(batches):
        dc.send(huge_batch(n * HUGE_BATCH))
    await wait_until(lambda: len(got) == batches * HUGE_BATCH, 60)
    assert got == list(range(batches * HUGE_BATCH))
    return samples


async def test_callbacks_see_the_channel_peer_and_size_of_the_datachannel_message():
    async with connected() as (a, b, _, _):
        seen: list[tuple[object, Delivery | None]] = []
        b.receiver.on_message(lambda message: seen.append((message, current_delivery())))
        for i in range(5):  # one loop iteration: batched into one DataChannel message
            a.sender.send_nowait(Set(address="/batched", value=i))
        await a.sender.send(Publish(address="/fire", signal="stream", value=1.0))
        await wait_until(lambda: len(seen) == 6)
        assert current_delivery() is None  # only while a received message is handled
        batched = [d for m, d in seen if m.address == "/batched"]
        assert len(batched) == 5 and len(set(batched)) == 1
        assert batched[0].peer == "peer-a"
        assert batched[0].channel == RELIABLE_LABEL
        assert batched[0].frames == 5
        assert batched[0].size == sum(len(encode(Set(address="/batched", value=i))) for i in range(5))
        (fire,) = [d for m, d in seen if m.address == "/fire"]
        assert (fire.channel, fire.frames) == (UNRELIABLE_LABEL, 1)


async def test_peer_callbacks_see_the_delivery():
    async with connected() as (a, b, _, _):
        peer = Peer(b, PeerInfo(session_id="peer-a"))
        seen: list[tuple[float, Delivery | None]] = []
        peer.on("/x/**", lambda value, address: seen.append((value, current_delivery())))
        peer.start()
        await a.sender.send(Set(address="/x/y", value=0.5))
        await wait_until(lambda: seen)
        assert seen[0][0] == 0.5
        assert seen[0][1] == Delivery("peer-a", RELIABLE_LABEL, 1, len(encode(Set(address="/x/y", value=0.5))))


async def test_the_iterator_gives_message_and_delivery_pairs_and_queued_messages_go_to_a_late_callback():
    async with connected() as (a, b, _, _):
        for i in range(3):
            a.sender.send_nowait(Set(address="/q", value=i))
        pairs = []
        async for message, delivery in b.receiver.deliveries():
            pairs.append((message.value, delivery.channel, delivery.frames))
            if len(pairs) == 2:
                break
        assert pairs == [(0, RELIABLE_LABEL, 3), (1, RELIABLE_LABEL, 3)]
        late: list[tuple[int, int]] = []
        b.receiver.on_message(lambda message: late.append((message.value, current_delivery().frames)))
        assert late == [(2, 3)]  # it was waiting in the queue


async def test_a_huge_batch_yields_to_the_loop_and_keeps_its_order():
    async with connected() as (a, b, _, _):
        got: list[object] = []
        progress_when_loop_ran: list[int] = []

        def on_first(message) -> None:
            got.append(message)
            if len(got) == 1:
                asyncio.get_running_loop().call_soon(lambda: progress_when_loop_ran.append(len(got)))
            b.receiver.on_message(got.append)

        b.receiver.on_message(on_first)
        dc = a.channels[RELIABLE_LABEL]
        dc.send(huge_batch())
        dc.send(encode(Set(address="/after", value=-1)))  # a later message on the same channel
        await wait_until(lambda: len(got) == HUGE_BATCH + 1, 30)
        assert [m.value for m in got[:HUGE_BATCH]] == list(range(HUGE_BATCH))
        assert got[-1].address == "/after"
        # The loop ran other work after the first slice, long before the batch was through.
        assert progress_when_loop_ran and progress_when_loop_ran[0] <= RECEIVE_SLICE_FRAMES
        assert b.stats().messages_received == HUGE_BATCH + 1


async def test_a_good_peer_is_heard_while_a_hostile_peer_floods_and_nothing_is_lost():
    """The victim holds one connection to a flooding peer and one to a good peer."""
    async with connected() as (hostile, victim_h, _, _), connected() as (good, victim_g, _, _):
        from_hostile: list[int] = []
        from_good: list[int] = []
        order: list[str] = []
        errors: list[Exception] = []
        victim_h.receiver.on_error(errors.append)
        victim_g.receiver.on_error(errors.append)
        batches = 4

        def on_hostile(message) -> None:
            from_hostile.append(message.value)
            order.append("h")
            if len(from_hostile) == 1:
                # The good peer speaks while the first huge batch is being delivered.
                asyncio.get_running_loop().call_soon(good_speaks)

        def good_speaks() -> None:
            for i in range(200):
                good.sender.send_nowait(Set(address="/good", value=i))

        def on_good(message) -> None:
            from_good.append(message.value)
            order.append("g")

        victim_h.receiver.on_message(on_hostile)
        victim_g.receiver.on_message(on_good)
        dc = hostile.channels[RELIABLE_LABEL]
        for n in range(batches):
            dc.send(huge_batch(n * HUGE_BATCH))
        await wait_until(lambda: len(from_hostile) == batches * HUGE_BATCH and len(from_good) == 200, 60)
        assert from_hostile == list(range(batches * HUGE_BATCH))
        assert from_good == list(range(200))
        assert errors == []
        # The good peer's first message was delivered in the middle of the hostile peer's first batch.
        assert order.index("g") < HUGE_BATCH


async def test_a_message_over_the_advertised_maximum_is_refused_and_the_connection_closed():
    async with connected() as (a, b, _, _):
        got: list[object] = []
        errors: list[Exception] = []
        b.receiver.on_message(got.append)
        b.receiver.on_error(errors.append)
        held: list[int] = []
        victim = b.peer_connection.sctp
        receive_chunk = victim._receive_data_chunk

        async def measuring(chunk) -> None:
            await receive_chunk(chunk)
            held.append(victim._receive_window - victim._advertised_rwnd)

        victim._receive_data_chunk = measuring
        await a.sender.send(Set(address="/before", value=1))
        await wait_until(lambda: got)
        # A hostile peer ignores the a=max-message-size the victim advertised.
        a.peer_connection.sctp._remote_max_message_size = 0
        a.channels[RELIABLE_LABEL].send(huge_batch(count=200_000))  # 3.6 MB of valid frames
        await wait_until(lambda: b.state == "closed", 30)
        assert [m.address for m in got] == ["/before"]
        (error,) = errors
        assert isinstance(error, ProtocolError)
        assert RELIABLE_LABEL in str(error) and "262144" in str(error)
        assert b.close_reason is not None and "protocol error" in b.close_reason
        assert max(held) <= 262_144 + 1160
        assert victim.stats.messages_refused == 1


async def test_the_undecoded_backlog_counts_against_the_sctp_receive_window(monkeypatch):
    # Tiny slices: batches arrive faster than they are worked through, and a backlog builds up.
    monkeypatch.setattr(receive_path, "RECEIVE_SLICE_FRAMES", 16)
    async with connected() as (a, b, _, _):
        victim = b.peer_connection.sctp
        window = victim._advertised_rwnd
        samples = await flood(a, b, 12)
        backlog_peak = max(backlog for backlog, _ in samples)
        assert backlog_peak > 2 * len(huge_batch())  # several batches waited at once
        assert all(rwnd <= window - backlog for backlog, rwnd in samples)  # the window shrank by them
        assert backlog_peak <= 2 * window + len(huge_batch())
        await wait_until(lambda: victim._advertised_rwnd == window)  # all given back
        assert victim.stats.data_chunks_dropped == 0  # the sender kept to the window


async def test_without_the_fast_path_the_backlog_has_its_own_bound(monkeypatch):
    monkeypatch.setattr(receive_path, "RECEIVE_SLICE_FRAMES", 16)
    monkeypatch.setattr(receive_path, "RECEIVE_BACKLOG_BYTES", 300_000)
    finished = []
    finish = receive_path.WebRtcReceiver.finish_backlogs
    monkeypatch.setattr(receive_path.WebRtcReceiver, "finish_backlogs",
                        lambda self: finished.append(1) or finish(self))
    stock = WebRtcConfig(host_addresses=["127.0.0.1"], fast_sctp=False)
    async with connected(stock, stock) as (a, b, _, _):
        samples = await flood(a, b, 6)
        assert finished  # the bound was reached and the backlog decoded at once
        assert max(backlog for backlog, _ in samples) <= 300_000 + len(huge_batch())

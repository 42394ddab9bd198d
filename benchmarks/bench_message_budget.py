"""Where one small message's time goes on the P2P path, stage by stage, on a real connection.

Run with ``pytest benchmarks/bench_message_budget.py --benchmark-only -s``; docs/data-plane.md
adds these up against the bench CLI's 32 B targets. Two transports connect through in-memory
signaling over 127.0.0.1 in this process (the real aiortc/clasp_fast stack, data plane on).

* ``budget-send-into-batch``: ``await sender.send(message, reliable=True)`` of the bench's 32-byte
  PUBLISH (built beforehand), the library's whole per-message part on the sending side up to the
  batch (routing, backpressure check, encoding into the pending DataChannel message, counters).
  Every 64 messages the pending batch is taken away as the flush would take it, so no packet
  leaves: that is the next group's work. µs per message = least time of 5 runs / 20,000.
* ``budget-send-many-into-batch``: the same messages handed over 64 at a time with
  ``await sender.send_many(group, reliable=True)``, the pending batch taken away after each call.
* ``budget-receive-from-batch``: a received DataChannel message of 64 such frames handed to the
  connection's receive path as the channel's ``message`` event hands it (counters, decoding,
  delivery to an ``on_message`` callback that counts): the library's per-message part on the
  receiving side. µs per message = least time of 5 runs of 312 batches / 19,968.
* ``budget-packet-round``: one DataChannel message of 64 such frames (3,520 bytes, what the bench's
  batched sender hands over per loop iteration) per loop iteration, until the
  receiving channel has them all: the sender's flush, SCTP, DTLS and ``sendmmsg``, the receiver's
  wake-up, ``recvmmsg``, DTLS, SCTP and its SACK, and the sender's handling of that SACK; 500
  rounds, the least CPU time of 5 runs. Both sides run in this one process, so the CPU time
  covers both; ``extra_info`` has µs per packet round and that divided by 64 (each message's share).
* ``budget-unbatched-round``: the same 64 frames per loop iteration as 64 DataChannel messages
  (the unbatched path: one ``RTCDataChannel.send`` and one DATA chunk each); CPU µs per message,
  both sides.
* ``budget-idle-message``: one 32-byte PUBLISH sent with nothing in flight, delivered, and its SACK
  taken by the sender before the next (what the latency phase of the bench CLI does at 1,000
  msg/s): ``await sender.send(...)``, the flush, SCTP with its T3 and loss-probe timers, DTLS and
  ``sendmmsg``, the receiver's whole path to the callback, its delayed SACK, and the sender's
  handling of it. CPU µs per message for both sides, the least of 5 runs of 500.

The per-message loops of the bench CLI itself are in bench_floors.py. Every loop is bounded (fixed
counts, a 30 s time-out on the deliveries); traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time

from clasp_fast.bench.paths import ADDRESS
from clasp_fast.bench.worker import make_payload
from clasp_fast.codec import encode
from clasp_fast.messages import Publish
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcSender, WebRtcTransport

SEND_MESSAGES = 20_000
BATCH_FRAMES = 64
ROUNDS = 500


async def _connected() -> tuple[WebRtcSender, WebRtcSender]:
    def config() -> WebRtcConfig:
        return WebRtcConfig(host_addresses=["127.0.0.1"], high_water_mark=1 << 30)

    near, far = InMemorySignaling.pair("near", "far")
    (sender, _), (other, _) = await asyncio.wait_for(asyncio.gather(
        WebRtcTransport.connect(config(), near, peer="far"),
        WebRtcTransport.connect(config(), far, role="answerer"),
    ), 20)
    return sender, other


async def _send_into_batch(rounds: int, many: bool = False) -> list[float]:
    sender, other = await _connected()
    try:
        batcher = sender.transport._channels["clasp-reliable"].batcher  # the stage ends here
        send = sender.send
        times = []
        for _ in range(rounds):
            # Built beforehand: their cost is the bench loop's (bench_floors.py), not the library's.
            messages = [Publish(address=ADDRESS, signal="event", value=make_payload(32, 1, sequence))
                        for sequence in range(SEND_MESSAGES)]
            started = time.perf_counter()
            if many:
                for start in range(0, SEND_MESSAGES, BATCH_FRAMES):
                    await sender.send_many(messages[start:start + BATCH_FRAMES], reliable=True)
                    batcher.take()
            else:
                for sequence, message in enumerate(messages):
                    await send(message, reliable=True)
                    if sequence % BATCH_FRAMES == BATCH_FRAMES - 1:
                        batcher.take()
            times.append(time.perf_counter() - started)
            batcher.take()
        return times
    finally:
        await sender.transport.close()
        await other.transport.close()


async def _receive_from_batch(rounds: int) -> list[float]:
    sender, other = await _connected()
    try:
        channel = other.transport._channels["clasp-reliable"]  # the stage starts here
        receiver = other.transport.receiver
        delivered = 0

        def on_message(message: object) -> None:
            nonlocal delivered
            delivered += 1

        receiver.on_message(on_message)
        batch = b"".join(encode(Publish(address=ADDRESS, signal="event", value=make_payload(32, 1, i)))
                         for i in range(BATCH_FRAMES))
        batches = SEND_MESSAGES // BATCH_FRAMES
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(batches):
                receiver.data_received(channel, batch)
            times.append(time.perf_counter() - started)
        assert delivered == rounds * batches * BATCH_FRAMES, delivered
        return times
    finally:
        await sender.transport.close()
        await other.transport.close()


async def _packet_rounds(repeats: int, batched: bool = True) -> tuple[float, float, int]:
    """(least CPU s, its wall s, bytes per round) of ``repeats`` runs of ROUNDS rounds: each one
    DataChannel message of 64 frames (``batched``) or 64 DataChannel messages of one frame."""
    sender, other = await _connected()
    try:
        channel = sender.transport.channels["clasp-reliable"]
        arriving = other.transport.channels["clasp-reliable"]
        arriving.remove_all_listeners("message")  # count DataChannel messages, decode nothing
        arrived = 0
        expected = 0
        done = asyncio.Event()

        def on_message(data: bytes) -> None:
            nonlocal arrived
            arrived += 1
            if arrived == expected:
                done.set()

        arriving.on("message", on_message)
        frames = [encode(Publish(address=ADDRESS, signal="event", value=make_payload(32, 1, i)))
                  for i in range(BATCH_FRAMES)]
        per_round = [b"".join(frames)] if batched else frames
        best = (float("inf"), 0.0)
        for _ in range(repeats):
            expected += ROUNDS * len(per_round)
            done.clear()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(ROUNDS):
                for data in per_round:
                    channel.send(data)
                await asyncio.sleep(0)
            await asyncio.wait_for(done.wait(), 30)
            best = min(best, (time.process_time() - cpu, time.perf_counter() - wall))
        return best[0], best[1], sum(map(len, per_round))
    finally:
        await sender.transport.close()
        await other.transport.close()


async def _idle_messages(repeats: int) -> float:
    """Least CPU s per message of ``repeats`` runs of ROUNDS messages, each one alone in flight."""
    sender, other = await _connected()
    try:
        sctp = sender.transport.peer_connection.sctp
        arrived = asyncio.Event()
        other.transport.receiver.on_message(lambda message: arrived.set())
        messages = [Publish(address=ADDRESS, signal="event", value=make_payload(32, 1, i)) for i in range(ROUNDS)]
        best = float("inf")
        for _ in range(repeats):
            cpu = time.process_time()
            for message in messages:
                arrived.clear()
                await sender.send(message, reliable=True)
                await asyncio.wait_for(arrived.wait(), 10)
                for _ in range(100):  # the SACK comes two loop iterations after the message
                    if not sctp._sent_queue:
                        break
                    await asyncio.sleep(0)
                assert not sctp._sent_queue, "no SACK within 100 loop iterations"
            best = min(best, (time.process_time() - cpu) / ROUNDS)
        return best
    finally:
        await sender.transport.close()
        await other.transport.close()


def bench_budget_send_into_batch(benchmark):
    benchmark.group = "budget-send-into-batch"
    times = benchmark.pedantic(lambda: asyncio.run(_send_into_batch(5)), rounds=1, iterations=1)
    best = min(times) / SEND_MESSAGES
    assert best > 0
    benchmark.extra_info.update(us_per_message=round(best * 1e6, 3), ceiling_msgs_per_s=round(1 / best))


def bench_budget_send_many_into_batch(benchmark):
    benchmark.group = "budget-send-many-into-batch"
    times = benchmark.pedantic(lambda: asyncio.run(_send_into_batch(5, many=True)), rounds=1, iterations=1)
    best = min(times) / SEND_MESSAGES
    assert best > 0
    benchmark.extra_info.update(us_per_message=round(best * 1e6, 3), ceiling_msgs_per_s=round(1 / best))


def bench_budget_receive_from_batch(benchmark):
    benchmark.group = "budget-receive-from-batch"
    times = benchmark.pedantic(lambda: asyncio.run(_receive_from_batch(5)), rounds=1, iterations=1)
    best = min(times) / (SEND_MESSAGES // BATCH_FRAMES * BATCH_FRAMES)
    benchmark.extra_info.update(us_per_message=round(best * 1e6, 3), ceiling_msgs_per_s=round(1 / best))


def bench_budget_packet_round(benchmark):
    benchmark.group = "budget-packet-round"
    cpu, wall, size = benchmark.pedantic(lambda: asyncio.run(_packet_rounds(5)), rounds=1, iterations=1)
    assert size == BATCH_FRAMES * len(encode(Publish(address=ADDRESS, signal="event", value=bytes(32))))
    per_round = cpu / ROUNDS
    benchmark.extra_info.update(batch_bytes=size, cpu_us_per_round_both_sides=round(per_round * 1e6, 1),
                                cpu_us_per_message_both_sides=round(per_round / BATCH_FRAMES * 1e6, 3),
                                rounds_per_s=round(ROUNDS / wall))


def bench_budget_unbatched_round(benchmark):
    benchmark.group = "budget-unbatched-round"
    cpu, wall, size = benchmark.pedantic(lambda: asyncio.run(_packet_rounds(5, batched=False)),
                                         rounds=1, iterations=1)
    assert size == BATCH_FRAMES * len(encode(Publish(address=ADDRESS, signal="event", value=bytes(32))))
    per_message = cpu / ROUNDS / BATCH_FRAMES
    benchmark.extra_info.update(cpu_us_per_message_both_sides=round(per_message * 1e6, 3),
                                messages_per_s=round(ROUNDS * BATCH_FRAMES / wall))


def bench_budget_idle_message(benchmark):
    benchmark.group = "budget-idle-message"
    per_message = benchmark.pedantic(lambda: asyncio.run(_idle_messages(5)), rounds=1, iterations=1)
    benchmark.extra_info.update(cpu_us_per_message_both_sides=round(per_message * 1e6, 1))

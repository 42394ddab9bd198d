"""Floors below which no figure of the bench CLI can go on this machine, whatever the transport.

Run with ``pytest benchmarks/bench_floors.py --benchmark-only -s``; docs/data-plane.md quotes them.

* ``floor-sender-per-message``: what the bench CLI's sender does for each message besides the
  library's own work: stamp the payload, build the ``Publish`` and await one coroutine (a no-op
  stands in for ``sender.send``). One core cannot send faster than 1 / this per second.
* ``floor-receiver-per-message``: decoding one 32-byte PUBLISH frame and reading its stamp, as the
  bench receiver's callback does.
* ``floor-one-way-latency``: one 32-byte UDP datagram per millisecond from this process to a
  child process over 127.0.0.1, 2,000 of them, one-way latency on the shared clock: with an
  asyncio datagram transport (where aiortc starts from; ``asyncio-64k``: reading at most 64 KiB
  per datagram, as clasp_fast makes ICE sockets read), with an asyncio reader of its own into a
  small buffer (``asyncio-reader``: how clasp_fast's data plane reads on asyncio), with a uvloop
  receiver (the ``uvloop`` extra; skipped without it), the last two also with their loop polling
  as ``WebRtcConfig.busy_poll`` makes it (``-polling``), and with a blocking ``recv`` (the
  kernel's and the scheduler's part alone). ``extra_info`` holds p50/p90/p99 in µs.

Every loop is bounded (fixed counts, a 60 s time-out on the child); traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import pytest

from clasp_fast.bench.paths import ADDRESS
from clasp_fast.bench.worker import make_payload, read_payload
from clasp_fast.codec import decode, encode
from clasp_fast.messages import Publish

MESSAGES = 20_000
LATENCY_COUNT = 2_000
LATENCY_RATE = 1_000  # datagrams per second

_RECEIVER = r"""
import asyncio, json, socket, sys, time
mode, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
latencies = []
if mode == "blocking":
    sock.settimeout(30)
    while len(latencies) < count:
        data = sock.recv(64)
        latencies.append(time.time_ns() - int.from_bytes(data[:8], "big"))
else:
    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        poll = None
        if mode.endswith("-polling"):  # the loop polls as WebRtcConfig.busy_poll makes it
            from clasp_fast.runtime.busy_poll import BusyPoll
            poll = BusyPoll(loop, 0.01)
            poll.touch()

        def received(data):
            latencies.append(time.time_ns() - int.from_bytes(data[:8], "big"))
            if poll is not None:
                poll.touch()
            if len(latencies) >= count and not done.done():
                done.set_result(None)

        if "-reader" in mode:
            # As clasp_fast's data plane reads: its own reader, into a small buffer. asyncio's
            # datagram transport allocates 256 KiB for every datagram it reads.
            sock.setblocking(False)

            def readable():
                while True:
                    try:
                        data = sock.recv(64)
                    except BlockingIOError:
                        return
                    received(data)

            loop.add_reader(sock.fileno(), readable)
            await asyncio.wait_for(done, 30)
            loop.remove_reader(sock.fileno())
            return

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data, address):
                received(data)

        transport, _ = await loop.create_datagram_endpoint(Receiver, sock=sock)
        if mode == "asyncio-64k":  # as clasp_fast.ice sets the transports of ICE sockets
            from clasp_fast.ice import MAX_DATAGRAM
            transport.max_size = MAX_DATAGRAM
        await asyncio.wait_for(done, 30)
        transport.close()
    if mode.startswith("uvloop"):
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
latencies.sort()
print(json.dumps({f"p{q}": latencies[min(count - 1, count * q // 100)] / 1000 for q in (50, 90, 99)}), flush=True)
"""


def one_way_latency(mode: str, count: int = LATENCY_COUNT, rate: int = LATENCY_RATE) -> dict[str, float]:
    """p50/p90/p99 (µs) of ``count`` datagrams sent at ``rate``/s to a child receiving in ``mode``."""
    child = subprocess.Popen([sys.executable, "-c", _RECEIVER, mode, str(count)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        started = time.perf_counter()
        # A few extra datagrams: the child stops at ``count``, whatever the first ones met.
        for i in range(count + 20):
            sender.sendto(time.time_ns().to_bytes(8, "big") + bytes(24), ("127.0.0.1", port))
            delay = started + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sender.close()
        out, _ = child.communicate(timeout=60)
        return json.loads(out)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _send_loop(count: int) -> None:
    async def noop(message: Publish) -> None:
        return None

    async def run() -> None:
        for sequence in range(count):
            await noop(Publish(address=ADDRESS, signal="event", value=make_payload(32, 1, sequence)))

    asyncio.run(run())


def bench_floor_sender_per_message(benchmark):
    benchmark.group = "floor-sender-per-message"
    benchmark.pedantic(_send_loop, args=(MESSAGES,), rounds=5, iterations=1)
    per_message = benchmark.stats.stats.median / MESSAGES
    benchmark.extra_info.update(us_per_message=round(per_message * 1e6, 3),
                                ceiling_msgs_per_s=round(1 / per_message))


def bench_floor_receiver_per_message(benchmark):
    benchmark.group = "floor-receiver-per-message"
    frame = encode(Publish(address=ADDRESS, signal="event", value=make_payload(32, 1, 7)))

    def receive(count: int) -> None:
        for _ in range(count):
            stamp, _phase = read_payload(decode(frame).value)  # type: ignore[attr-defined, misc]
            time.time_ns() - stamp

    benchmark.pedantic(receive, args=(MESSAGES,), rounds=5, iterations=1)
    per_message = benchmark.stats.stats.median / MESSAGES
    benchmark.extra_info.update(us_per_message=round(per_message * 1e6, 3),
                                ceiling_msgs_per_s=round(1 / per_message))


@pytest.mark.parametrize("mode", ["asyncio", "asyncio-64k", "asyncio-reader", "asyncio-reader-polling", "uvloop",
                                  "uvloop-polling", "blocking"])
def bench_floor_one_way_latency(benchmark, mode: str):
    if mode.startswith("uvloop"):
        pytest.importorskip("uvloop")
    benchmark.group = "floor-one-way-latency"
    figures = benchmark.pedantic(one_way_latency, args=(mode,), rounds=1, iterations=1)
    assert set(figures) == {"p50", "p90", "p99"} and 0 < figures["p50"] <= figures["p99"]
    benchmark.extra_info.update({f"{key}_us": round(value, 1) for key, value in figures.items()})

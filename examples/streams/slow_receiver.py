"""Where to conflate: a sensor at 10,000 updates/s over 100 addresses, a receiver that takes ~1,000/s.

    python examples/streams/slow_receiver.py [--seconds 3]

Two processes on loopback (the receiver is a child of this script), a real WebRTC connection, and
three ways for the receiver to be slow, each measured in a fresh connection:

* ``fifo``:     received messages wait in a plain queue for a handler that awaits 1 ms per update
                (no conflation);
* ``receiver``: they wait in a LatestValueQueue instead (conflation where the backlog forms);
* ``sender``:   a handler that blocks 1 ms runs on receipt, so the backlog forms in the network and
                at the sender, whose FanoutGroup lane conflates what its DataChannel cannot take yet.

For every update handled, the age of its value is the receiver's clock minus the sender's stamp
(one host, one clock). Prints p50/p99 of that age and how many updates were handled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import deque

from clasp_fast.conflation import ConflationPolicy, LatestValueQueue
from clasp_fast.fanout import FanoutGroup
from clasp_fast.messages import Publish, Set
from clasp_fast.signaling import StreamSignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport

RATE = 10_000
ADDRESSES = 100
HANDLER_SECONDS = 0.001  # the receiver's work per update: ~1,000 updates/s
POLICY = ConflationPolicy("/sensor/**")
STOP = Publish(address="/control/stop", signal="event")


def config() -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_timeout=30.0)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * (len(values) - 1)))]


# -- the receiver (child process) -------------------------------------------------------------

async def receive(port: int, mode: str, seconds: float) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sender, receiver = await WebRtcTransport.connect(config(), StreamSignaling("receiver", reader, writer),
                                                     "sender", role="answerer")
    ages_ms: list[float] = []

    def take(message: Set) -> None:
        ages_ms.append((time.time_ns() - message.value) / 1e6)

    queue: deque | LatestValueQueue = LatestValueQueue() if mode == "receiver" else deque()
    stopped = asyncio.Event()  # the sender's STOP event arrived: it sends no more updates

    def on_message(message: object) -> None:
        if not isinstance(message, Set):
            stopped.set()
        elif mode == "sender":  # the handler blocks the event loop: the network waits too
            take(message)
            time.sleep(HANDLER_SECONDS)
        elif mode == "receiver":
            queue.push(message, message.address, POLICY.kind(message))
        else:
            queue.append(message)

    receiver.on_message(on_message)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopped.is_set():
        if queue:
            take(queue.pop() if mode == "receiver" else queue.popleft())
            await asyncio.sleep(HANDLER_SECONDS)  # the handler's work: the network is read meanwhile
        else:
            await asyncio.sleep(0.0005)
    await sender.transport.close()
    return {"mode": mode, "handled": len(ages_ms), "age_p50_ms": percentile(ages_ms, 0.5),
            "age_p90_ms": percentile(ages_ms, 0.9), "age_p99_ms": percentile(ages_ms, 0.99),
            "age_last_ms": ages_ms[-1] if ages_ms else None,
            "waiting_at_end": len(queue)}


# -- the sender (this process) ------------------------------------------------------------------

async def measure(mode: str, seconds: float) -> dict:
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(lambda r, w: accepted.done() or accepted.set_result((r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", mode, "--port", str(port), "--seconds", str(seconds + 30),
        stdout=subprocess.PIPE, env=dict(os.environ))
    reader, writer = await asyncio.wait_for(accepted, 20)
    transport = WebRtcTransport(config(), StreamSignaling("sender", reader, writer), "receiver")
    await transport.start()
    group = FanoutGroup(POLICY, max_buffered=4096)
    group.add("receiver", transport.sender)
    sent = 0
    started = time.perf_counter()
    while transport.state == "connected" and time.perf_counter() - started < seconds:
        due = int((time.perf_counter() - started) * RATE)
        while sent < due:
            message = Set(address=f"/sensor/{sent % ADDRESSES}", value=time.time_ns())
            if mode == "sender":
                group.send(message)
            else:
                await transport.sender.send(message)
            sent += 1
        await asyncio.sleep(0.001)
    await transport.sender.send(STOP)
    result = json.loads(await asyncio.wait_for(child.stdout.readline(), seconds + 30))
    await transport.close()
    await child.wait()
    server.close()
    result["sent"] = sent
    result["sender_conflated"] = sum(s.conflated for s in group.stats())
    return result


async def main(seconds: float) -> None:
    for mode in ("fifo", "receiver", "sender"):
        result = await measure(mode, seconds)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--child", choices=("fifo", "receiver", "sender"))
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(receive(args.port, args.child, args.seconds))), flush=True)
    else:
        asyncio.run(main(args.seconds))

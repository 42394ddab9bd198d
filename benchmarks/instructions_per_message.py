"""CPU instructions per small message on a real connection, counted by valgrind: a figure that,
unlike time, does not move with this virtual machine's speed.

``python -m benchmarks.instructions_per_message`` runs each scenario twice under
``valgrind --tool=cachegrind`` (with ``--count`` and three times that many messages) and prints
the difference in instructions divided by the difference in messages: start-up, the handshake and
imports cancel out. Needs valgrind on the PATH; ``--no-valgrind`` runs the scenarios once without
it (a check that they work).

Scenarios (two transports in this process, connected through in-memory signaling over
127.0.0.1, data plane on; both sides' instructions are counted):

* ``unbatched``: ``await sender.send(message, reliable=True)`` with batching off (one DataChannel
  message each), a loop yield every 64, until the receiver's callback has every message;
* ``batched``: the same loop with batching on (the bench CLI's ``p2p_batched``);
* ``send_many``: ``await sender.send_many(group, reliable=True)`` of 64 messages per loop
  iteration (the bench CLI's ``p2p_send_many`` cadence);
* ``alone``: one message at a time with nothing in flight, delivered, and its SACK taken by the
  sender before the next (the bench CLI's latency phase).

The messages are the bench's 32-byte PUBLISH, built before the count starts. Every loop is bounded
(a fixed count, 30 s per delivery wait).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys

from clasp_fast.bench.paths import ADDRESS
from clasp_fast.bench.worker import make_payload
from clasp_fast.messages import Publish
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport

SCENARIOS = ("unbatched", "batched", "send_many", "alone")
GROUP = 64


async def run_scenario(scenario: str, count: int) -> None:
    """Connect two transports and send ``count`` messages the scenario's way, twice (the first
    pass warms up; both are counted, so the caller divides by 2 × count)."""

    def config() -> WebRtcConfig:
        return WebRtcConfig(host_addresses=["127.0.0.1"], high_water_mark=1 << 30,
                            batching=scenario != "unbatched")

    near, far = InMemorySignaling.pair("near", "far")
    (sender, _), (other, _) = await asyncio.wait_for(asyncio.gather(
        WebRtcTransport.connect(config(), near, peer="far"),
        WebRtcTransport.connect(config(), far, role="answerer"),
    ), 30)
    sctp = sender.transport.peer_connection.sctp
    arrived = 0
    expected = 0
    done = asyncio.Event()

    def on_message(message: object) -> None:
        nonlocal arrived
        arrived += 1
        if arrived >= expected:
            done.set()

    other.transport.receiver.on_message(on_message)
    messages = [Publish(address=ADDRESS, signal="event", value=make_payload(32, 1, i)) for i in range(count)]
    try:
        for _ in range(2):
            if scenario == "alone":
                for message in messages:
                    expected += 1
                    done.clear()
                    await sender.send(message, reliable=True)
                    await asyncio.wait_for(done.wait(), 30)
                    for _ in range(100):  # the SACK comes a few loop iterations later
                        if not sctp._sent_queue:
                            break
                        await asyncio.sleep(0)
                continue
            expected += count
            done.clear()
            if scenario == "send_many":
                for start in range(0, count, GROUP):
                    await sender.send_many(messages[start:start + GROUP], reliable=True)
                    await asyncio.sleep(0)
            else:
                for index, message in enumerate(messages):
                    await sender.send(message, reliable=True)
                    if index % GROUP == GROUP - 1:
                        await asyncio.sleep(0)
            await asyncio.wait_for(done.wait(), 30)
    finally:
        await sender.transport.close()
        await other.transport.close()
    if arrived != expected:
        raise RuntimeError(f"{scenario}: {arrived} of {expected} messages arrived")


def _instructions(scenario: str, count: int) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, "-m", "benchmarks.instructions_per_message", "--run", scenario, "--count", str(count)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run of {scenario} failed:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, action="append",
                        help="scenario to count (repeatable; default: all)")
    parser.add_argument("--count", type=int, default=None,
                        help="messages of the smaller run (default: 6,400; 200 for alone)")
    parser.add_argument("--no-valgrind", action="store_true", help="run each scenario once, uncounted")
    parser.add_argument("--run", choices=SCENARIOS, help=argparse.SUPPRESS)  # one run, inside valgrind
    args = parser.parse_args(argv)
    if args.run:
        asyncio.run(run_scenario(args.run, args.count))
        return 0
    if not args.no_valgrind and shutil.which("valgrind") is None:
        parser.error("valgrind is not on the PATH (use --no-valgrind to only run the scenarios)")
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dictionary layouts in both runs
    for scenario in args.scenario or SCENARIOS:
        count = args.count or (200 if scenario == "alone" else 6400)
        if args.no_valgrind:
            asyncio.run(run_scenario(scenario, count))
            print(f"{scenario:10s} ran {2 * count} messages")
            continue
        small, large = _instructions(scenario, count), _instructions(scenario, 3 * count)
        print(f"{scenario:10s} {(large - small) / (2 * 2 * count):>10,.0f} instructions per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A P2P peer in its own process, for the two-process P2P and hybrid tests.

Run as ``python -m tests.p2p_peer_process --relay URL --id ID --mode MODE``. It prints one JSON line
``{"ready": session_id}`` once connected, then

* ``echo`` (a ``ClaspP2P`` peer): accepts connections and sends every SET and PUBLISH it receives back
  under ``/echo`` + address, as the same kind of message; prints ``{"received": n, "reason": ...}``
  and exits when the first connection closes or after --seconds;
* ``sink`` (a hybrid client): collects the values of ``/peer/{id}/seq`` from either route, and prints
  ``{"values": [...], "stats": {...}}`` after --count distinct values or --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from clasp_fast import ClaspBuilder, ClaspP2P
from clasp_fast.messages import Publish, Set
from clasp_fast.webrtc import WebRtcConfig


def config(args: argparse.Namespace) -> WebRtcConfig:
    return WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=args.keepalive_interval,
                        keepalive_timeout=args.keepalive_timeout, connection_timeout=10.0)


def say(payload: dict) -> None:
    print(json.dumps(payload), flush=True)


async def echo(args: argparse.Namespace) -> None:
    async with ClaspP2P(args.relay, client_id=args.id, rtc_config=config(args), presence_interval=0.5) as p2p:
        received = 0

        @p2p.on_connection
        def connected(peer):
            # Registered here, the handler sees every message (iterating incoming() may start later).
            def bounce(value, address, message):
                nonlocal received
                received += 1
                if type(message) is Set:
                    reply = Set(address="/echo" + address, value=value)
                else:
                    reply = Publish(address="/echo" + address, signal=message.signal, value=message.value,
                                    samples=message.samples, id=message.id, phase=message.phase)
                asyncio.ensure_future(peer.send(reply))

            peer.on("/**", bounce)

        say({"ready": p2p.session_id})
        try:
            peer = await asyncio.wait_for(p2p.incoming().__anext__(), args.seconds)
        except asyncio.TimeoutError:
            say({"received": 0, "reason": "no connection"})
            return
        closed = asyncio.ensure_future(peer.wait_closed())
        await asyncio.wait({closed}, timeout=args.seconds)
        say({"received": received, "reason": peer.transport.close_reason, "params": sorted(peer.params)})


async def sink(args: argparse.Namespace) -> None:
    client = await (ClaspBuilder(args.relay)
                    .with_p2p(client_id=args.id, rtc_config=config(args), presence_interval=0.5)
                    .connect())
    try:
        say({"ready": client.session_id})
        values: list[int] = []
        client.on(f"/peer/{args.id}/seq", lambda value, address: values.append(value))
        deadline = time.monotonic() + args.seconds
        # The source sends "end" through the relay once its lost link has closed and it re-sent
        # what that link did not deliver: nothing can follow it (the sentinel).
        while "end" not in values and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        say({"values": [v for v in values if v != "end"], "stats": client.stats()})
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--relay", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--mode", choices=("echo", "sink"), required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--keepalive-interval", type=float, default=0.2)
    parser.add_argument("--keepalive-timeout", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(echo(args) if args.mode == "echo" else sink(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""A WebRTC peer in its own process whose clock runs ``--shift-us`` µs ahead, for the clock tests.

Run as ``python -m tests.clock_peer --port P --mode clock --shift-us N``: it connects to the parent's signaling
server on 127.0.0.1:P, answers the parent's offer, answers the parent's SYNC requests and sends its
own (every --interval s) over the ``clasp`` DataChannel, with a clock that is the wall clock plus N
µs. When the parent closes the connection (or after --seconds) it prints one JSON line: its estimate
of the parent's clock.

``--mode control``: the transport's own estimate instead (``WebRtcConfig(clock=...)``: SYNC on the
control channel in place of the keepalive PINGs); ``--no-clock`` makes it a peer that does not offer
``"clock"`` (as an older peer or the browser module).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from dataclasses import asdict

from clasp_fast.clock import ClockSync, wall_clock_us
from clasp_fast.errors import TransportError
from clasp_fast.messages import Sync
from clasp_fast.signaling import StreamSignaling
from clasp_fast.webrtc import WebRtcTransport

from .webrtc_peer import CHILD, PARENT, loopback_config, spawn_peer


def attach_clock_sync(transport: WebRtcTransport, clock) -> ClockSync:
    """A ClockSync over ``transport``: SYNC leaves on ``clasp`` (its QoS is Fire), received SYNCs are
    stamped on arrival and handled, every other message is ignored."""
    sync = ClockSync(transport.sender.send_nowait, clock=clock)

    def on_message(message: object) -> None:
        if isinstance(message, Sync):
            sync.handle(message, clock())

    transport.receiver.on_message(on_message)
    return sync


async def _run(args: argparse.Namespace) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    signaling = StreamSignaling(CHILD, reader, writer)
    if args.mode == "control":
        return await _run_control(args, signaling)
    sender, _ = await WebRtcTransport.connect(loopback_config(), signaling, PARENT, role="answerer")
    transport = sender.transport
    shift = args.shift_us
    sync = attach_clock_sync(transport, lambda: wall_clock_us() + shift)
    exchanging = asyncio.ensure_future(sync.run(args.interval, burst=0))
    deadline = time.monotonic() + args.seconds
    try:
        while transport.state == "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        exchanging.cancel()
        # When the parent closes first, a request can meet the closed connection: the exchange then
        # ended with its TransportError, which says nothing about the estimate.
        with contextlib.suppress(asyncio.CancelledError, TransportError):
            await exchanging
        await transport.close()
    estimate = sync.peer_clock
    return {"estimate": None if estimate is None else asdict(estimate), "replies_sent": sync.replies_sent}


async def _run_control(args: argparse.Namespace, signaling: StreamSignaling) -> dict:
    shift = args.shift_us
    config = loopback_config(clock=lambda: wall_clock_us() + shift, clock_sync=not args.no_clock,
                             keepalive_interval=args.interval, keepalive_timeout=max(5.0, args.interval * 5))
    sender, _ = await WebRtcTransport.connect(config, signaling, PARENT, role="answerer")
    transport = sender.transport
    deadline = time.monotonic() + args.seconds
    try:
        while transport.state == "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        estimate = transport.clock
    finally:
        await transport.close()
    return {"estimate": None if estimate is None else asdict(estimate), "features": list(transport.remote_features)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["clock", "control"], default="clock")
    parser.add_argument("--no-clock", action="store_true")
    parser.add_argument("--shift-us", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args))), flush=True)


def spawn_shifted_peer(shift_us: int, timeout: float = 20.0):
    """Start a child whose clock is ``shift_us`` ahead and connect to it; yields (transport, process)."""
    return spawn_peer("clock", "--shift-us", str(shift_us), "--seconds", str(timeout), timeout=timeout,
                      module="tests.clock_peer")


if __name__ == "__main__":
    main()

"""A peer's clock from SYNC exchanges: ``python examples/streams/peer_clock.py [--shift-ms 1500]``.

Two WebRTC peers on loopback in one process; peer B's clock is shifted by ``--shift-ms`` (standing
in for another machine's clock). Each side runs a ClockSync over the connection and prints what it
knows about the other's clock, then turns a timestamp B stamped into A's time.
(tests/test_clock.py does the same between two processes.)
"""

from __future__ import annotations

import argparse
import asyncio

from clasp_fast.clock import ClockSync, wall_clock_us
from clasp_fast.messages import Sync
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport


def attach(transport: WebRtcTransport, clock) -> ClockSync:
    sync = ClockSync(transport.sender.send_nowait, clock=clock)
    transport.receiver.on_message(lambda m: sync.handle(m, clock()) if isinstance(m, Sync) else None)
    return sync


async def main(shift_us: int, seconds: float) -> None:
    config = WebRtcConfig(host_addresses=["127.0.0.1"])
    sig_a, sig_b = InMemorySignaling.pair("a", "b")
    (a, _), (b, _) = await asyncio.gather(WebRtcTransport.connect(config, sig_a, peer="b"),
                                          WebRtcTransport.connect(config, sig_b, role="answerer"))
    b_clock = lambda: wall_clock_us() + shift_us  # noqa: E731
    sync_a = attach(a.transport, wall_clock_us)
    sync_b = attach(b.transport, b_clock)
    tasks = [asyncio.ensure_future(s.run(interval=0.1)) for s in (sync_a, sync_b)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    for name, sync in (("A about B", sync_a), ("B about A", sync_b)):
        c = sync.peer_clock
        print(f"{name}: offset {c.offset_us / 1000:+.3f} ms ± {c.uncertainty_us / 1000:.3f} ms, "
              f"rtt {c.rtt_us / 1000:.3f} ms (min {c.min_rtt_us / 1000:.3f}), {c.samples} samples")
    stamp = b_clock()  # a PUBLISH timestamp B would send now
    print(f"B's stamp {stamp} µs is {sync_a.peer_clock.to_local(stamp):.0f} µs on A's clock "
          f"(A's clock reads {wall_clock_us()} µs)")
    await a.close()
    await b.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--shift-ms", type=float, default=1500.0)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(int(args.shift_ms * 1000), args.seconds))

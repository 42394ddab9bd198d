"""Run a relay that serves the example page, plus a Python peer streaming live values to it.

    python examples/browser/serve.py            # then open http://127.0.0.1:7330/

The Python peer (client id ``py-sensor``) accepts browser peers. To each it streams a sine wave
(``/sensor/wave``, 32 samples every 50 ms, unreliable channel) and sets ``/sensor/temperature``
every half second (reliable channel). The page sends control values back: ``/control/gain``
scales the wave and is confirmed with ``/sensor/gain``; ``/control/button`` events are counted
and confirmed with ``/sensor/presses``.

Everything stays on 127.0.0.1: the relay listens there and ICE uses loopback host candidates only.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path

from clasp_fast.p2p import ClaspP2P, Peer
from clasp_fast.relay import Relay
from clasp_fast.webrtc import WebRtcConfig

HERE = Path(__file__).resolve().parent


def watch_controls(peer: Peer, state: dict) -> None:
    """Handle the page's control values (registered as the connection opens, so none is missed)."""

    async def on_gain(value, address):
        state["gain"] = float(value)
        await peer.set("/sensor/gain", state["gain"])

    async def on_button(value, address):
        state["presses"] += 1
        await peer.set("/sensor/presses", state["presses"])

    peer.on("/control/gain", on_gain)
    peer.on("/control/button", on_button)


async def feed(peer: Peer, state: dict) -> None:
    """Stream to one browser peer until its connection ends."""
    phase = 0.0
    tick = 0
    while peer.connected:
        samples = [state["gain"] * math.sin(phase + i * 2 * math.pi / 32) for i in range(32)]
        phase += 0.3
        await peer.stream("/sensor/wave", samples, rate=640)
        if tick % 10 == 0:
            await peer.set("/sensor/temperature", round(21.0 + 2.0 * math.sin(tick / 40), 2))
        tick += 1
        await asyncio.sleep(0.05)


async def run_sensor(relay_url: str, stop: asyncio.Event, client_id: str = "py-sensor") -> None:
    """The Python peer: accept browser peers and feed each one until ``stop`` is set."""
    p2p = ClaspP2P(relay_url, client_id=client_id, rtc_config=WebRtcConfig(host_addresses=["127.0.0.1"]),
                   presence_interval=1.0)
    feeds: set[asyncio.Task] = set()

    @p2p.on_connection
    def connected(peer: Peer) -> None:
        state = {"gain": 1.0, "presses": 0}
        watch_controls(peer, state)
        task = asyncio.ensure_future(feed(peer, state))
        feeds.add(task)
        task.add_done_callback(feeds.discard)

    await p2p.connect()
    try:
        await stop.wait()
    finally:
        for task in list(feeds):
            task.cancel()
        await p2p.close()


async def main(port: int) -> None:
    async with Relay(host="127.0.0.1", port=port, static_dir=HERE) as relay:
        print(f"relay {relay.url}; open http://127.0.0.1:{relay.port}/ in a browser (Ctrl-C stops)")
        await run_sensor(relay.url, asyncio.Event())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7330)
    try:
        asyncio.run(main(parser.parse_args().port))
    except KeyboardInterrupt:
        pass

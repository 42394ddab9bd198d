"""One sensor, several viewers, one of them stalled: ``python examples/streams/fanout.py [--viewers 4]``.

A hub and its viewers on loopback in one process. The hub sends 3,000 SETs over 10 addresses plus
an event every 100 through a FanoutGroup (each message encoded once). The last viewer stops reading
its sockets for the first part (as a peer whose event loop is busy would): the others keep getting
everything, the stalled one's lane conflates; when it reads again it catches up with the latest value
of every address and every event.
"""

from __future__ import annotations

import argparse
import asyncio

from clasp_fast.conflation import ConflationPolicy
from clasp_fast.fanout import FanoutGroup
from clasp_fast.messages import Publish, Set
from clasp_fast.signaling import InMemorySignaling
from clasp_fast.webrtc import WebRtcConfig, WebRtcTransport


async def main(viewers: int) -> None:
    config = WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_timeout=15.0)
    hubs, views = [], []
    for i in range(viewers):
        sig_hub, sig_viewer = InMemorySignaling.pair("hub", f"viewer-{i}")
        (hub, _), (view, _) = await asyncio.gather(
            WebRtcTransport.connect(config, sig_hub, peer=f"viewer-{i}"),
            WebRtcTransport.connect(config, sig_viewer, role="answerer"))
        hubs.append(hub.transport)
        views.append(view.transport)
    received = [0] * viewers
    latest: list[dict] = [{} for _ in range(viewers)]
    events = [0] * viewers
    for i, view in enumerate(views):
        def on_message(message, i=i) -> None:
            received[i] += 1
            if isinstance(message, Set):
                latest[i][message.address] = message.value
            else:
                events[i] += 1
        view.receiver.on_message(on_message)

    group = FanoutGroup(ConflationPolicy("/sensor/**"), max_buffered=4096)
    for i, hub in enumerate(hubs):
        group.add(f"viewer-{i}", hub.sender)
    views[-1].pause_reading()  # a stand-in for a viewer too busy to read
    final = {}
    for n in range(3000):
        if n % 100 == 99:
            group.send(Publish(address="/sensor/cue", signal="event", value=n))
        else:
            final[f"/sensor/{n % 10}"] = n
            group.send(Set(address=f"/sensor/{n % 10}", value=n))
        if n % 20 == 0:
            await asyncio.sleep(0)
    for _ in range(200):  # until the others have everything (10 s at most)
        if all(count == 3000 for count in received[:-1]):
            break
        await asyncio.sleep(0.05)
    print(f"sent 3,000 messages, {group.frames_encoded} encodes")
    for s in group.stats():
        print(f"  {s.member} {s.channel}: handed over {s.sent}, waiting {s.waiting}, conflated {s.conflated}")
    print(f"while viewer-{viewers - 1} was stalled: received {received}")
    views[-1].pause_reading(False)
    for _ in range(200):
        if latest[-1] == final and events[-1] == 30:
            break
        await asyncio.sleep(0.05)
    print(f"after it read again: received {received}; every latest value: {latest[-1] == final}, "
          f"every event: {events[-1] == 30}")
    for transport in (*hubs, *views):
        await transport.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.viewers))

"""The integrated stream features on two real P2P endpoints: ``python examples/streams/stream_peers.py``.

A hub and two viewers on loopback in one process (no relay: in-memory signaling). It shows
``peer.clock``, ``ClaspP2P.group`` (encode once, one lane per viewer), a viewer whose handler is
slower than the stream behind a latest-value queue, and the hub's metrics scraped over HTTP
(needs the ``metrics`` extra, prometheus_client).
"""

from __future__ import annotations

import asyncio
import urllib.request

from clasp_fast import ClaspP2P, ConflationPolicy, InMemorySignaling, WebRtcConfig
from clasp_fast.messages import Publish, Set
from clasp_fast.p2p import PeerInfo, StaticDiscovery


async def main() -> None:
    rtc = WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=0.2)
    hub_signaling = InMemorySignaling("hub")
    hub = ClaspP2P(hub_signaling, client_id="hub", rtc_config=rtc,
                   discovery=StaticDiscovery([PeerInfo("fast", "fast"), PeerInfo("slow", "slow")]))
    fast = ClaspP2P(hub_signaling.join("fast"), client_id="fast", rtc_config=rtc)
    slow = ClaspP2P(hub_signaling.join("slow"), client_id="slow", rtc_config=rtc)
    async with hub, fast, slow:
        server = await hub.serve_metrics(0)  # http://127.0.0.1:<free port>/metrics
        to_fast = await hub.connect_to_peer("fast")
        await hub.connect_to_peer("slow")
        fast_side = await anext(aiter(fast.incoming()))
        slow_side = await anext(aiter(slow.incoming()))

        # The fast viewer counts every value; the slow one takes 5 ms per update, behind a
        # latest-value queue: it skips values that a newer one replaced while it worked.
        seen = {"fast": 0}
        latest: dict[str, int] = {}
        fast_side.on("/sensor/**", lambda value, address: seen.__setitem__("fast", seen["fast"] + 1))

        async def slow_handler(message) -> None:
            if isinstance(message, Set):
                latest[message.address] = message.value
            await asyncio.sleep(0.005)

        queue = slow_side.transport.receiver.on_message(slow_handler, conflate=ConflationPolicy("/sensor/**"))

        group = hub.group(["fast", "slow"], policy="/sensor/**")
        for i in range(2000):
            group.send(Set(address=f"/sensor/{i % 4}", value=i))
            if i % 200 == 0:
                await asyncio.sleep(0.01)
        group.send(Publish(address="/sensor/done", signal="event", value=1))
        group.flush()
        for _ in range(500):
            if seen["fast"] >= 2001 and len(queue) == 0 and latest.get("/sensor/3") == 1999:
                break
            await asyncio.sleep(0.02)
        print(f"group: {group.frames_encoded} encodes for 2 viewers")
        print(f"fast viewer: {seen['fast']} messages")
        print(f"slow viewer: handled {queue.handled}, skipped {queue.conflated} older values, latest {latest}")

        while to_fast.clock is None:
            await asyncio.sleep(0.05)
        clock = to_fast.clock
        print(f"clock of 'fast' seen by the hub: offset {clock.offset_us / 1000:+.3f} ms "
              f"± {clock.uncertainty_us / 1000:.3f} ms, rtt {clock.rtt_us / 1000:.3f} ms")

        body = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url, timeout=5).read().decode())
        sent = [line for line in body.splitlines()
                if line.startswith("clasp_messages_total{") and 'direction="sent"' in line and "clasp-reliable" in line]
        print("scraped:", *sent, sep="\n  ")
        print("clasp_peers:", hub.stats()["clasp_peers"][0]["value"])


if __name__ == "__main__":
    asyncio.run(main())

"""Metrics of a relay on a Prometheus endpoint: ``python examples/streams/relay_metrics.py [--metrics-port 9464]``.

Starts a relay on 127.0.0.1, serves its figures at http://127.0.0.1:PORT/metrics, lets two clients
talk through it, scrapes the endpoint once and prints the clasp_* lines next to the same figures
from ``Metrics.snapshot()``. With ``--seconds N`` it keeps serving N seconds for your own scraper.
Needs the ``metrics`` extra (prometheus_client).
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.request

from clasp_fast.client import ClaspClient
from clasp_fast.metrics import Metrics, relay_source
from clasp_fast.relay import Relay


async def main(port: int, seconds: float) -> None:
    async with Relay(port=0) as relay:
        metrics = Metrics()
        metrics.add_source(relay_source(relay))
        async with await metrics.serve(port) as server:
            print(f"metrics at {server.url}")
            sensor = await ClaspClient.connect(relay.url, name="sensor", reconnect=False)
            viewer = await ClaspClient.connect(relay.url, name="viewer", reconnect=False)
            await viewer.subscribe("/sensor/**", lambda value, address: None)
            for i in range(100):
                await sensor.set(f"/sensor/{i % 10}", i)
            await sensor.ping()
            await viewer.ping()
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url, timeout=5).read().decode())
            print("scraped:")
            for line in body.splitlines():
                if line.startswith("clasp_") and not line.split("{")[0].endswith("_created"):
                    print("  " + line)
            print("snapshot():")
            for name, series in metrics.snapshot().items():
                for entry in series:
                    print(f"  {name} {entry['labels']} {entry['value']}")
            await asyncio.sleep(seconds)
            await sensor.close()
            await viewer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=0.0, help="keep serving this long")
    args = parser.parse_args()
    asyncio.run(main(args.metrics_port, args.seconds))

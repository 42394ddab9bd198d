"""P2P and hybrid mode between two processes (tests/p2p_peer_process.py), and the ``peer`` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sys
import time
from pathlib import Path

import numpy as np

from clasp_fast import ClaspBuilder, ClaspP2P
from clasp_fast.webrtc import WebRtcConfig

from .test_p2p import relay_running, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20


@contextlib.asynccontextmanager
async def child(*args: str):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.p2p_peer_process", *args, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
        assert "ready" in ready, ready
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def last_line(process) -> dict:
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    assert line, (await process.stderr.read()).decode()[-2000:]
    return json.loads(line)


async def test_every_operation_crosses_to_another_process_and_back() -> None:
    async with relay_running() as relay:
        async with child("--relay", relay.url, "--id", "far", "--mode", "echo", "--seconds", "20") as process:
            config = WebRtcConfig(host_addresses=["127.0.0.1"])
            async with ClaspP2P(relay.url, client_id="near", rtc_config=config, presence_interval=0.5) as p2p:
                # "far" connected first: found through its presence param.
                peer = await asyncio.wait_for(p2p.connect_to_peer("far"), TIMEOUT)
                echoed: list = []
                peer.on("/echo/**", lambda value, address: echoed.append((address, value)))
                await peer.set("/p", 1.5)
                await peer.emit("/e", "hello")
                await peer.stream("/s", np.array([1.0, 2.0]))
                await peer.gesture("/g", 3, "end", {"x": 1})
                await wait_until(lambda: len(echoed) == 4, TIMEOUT, "four echoes")
                by_address = dict(echoed)
                assert by_address["/echo/p"] == 1.5 and by_address["/echo/e"] == "hello"
                assert by_address["/echo/s"].tolist() == [1.0, 2.0] and by_address["/echo/g"] == {"x": 1}
                assert await peer.get("/p") == 1.5  # held by the other process
                assert await peer.get("/echo/p") == 1.5  # the echo SET, held by the process that sent it
                await peer.close()
            result = await last_line(process)
    assert result["received"] == 4
    # The disconnected signal (via the relay) and the channel close (direct) race each other.
    assert result["reason"] in ("User requested disconnect", "reliable channel closed")
    assert result["params"] == ["/echo/p", "/p"]


async def test_failover_between_processes_delivers_each_message_once() -> None:
    count = 1500
    async with relay_running() as relay:
        async with child("--relay", relay.url, "--id", "sink", "--mode", "sink", "--count", str(count),
                         "--seconds", "40") as process:
            config = WebRtcConfig(host_addresses=["127.0.0.1"], keepalive_interval=0.2, keepalive_timeout=1.0)
            client = await (ClaspBuilder(relay.url)
                            .with_p2p(client_id="source", rtc_config=config, retry_interval=30.0,
                                      presence_interval=0.5)
                            .connect())
            try:
                await asyncio.wait_for(client.connect_to_peer("sink"), TIMEOUT)
                routes = []
                lost = None
                deadline = time.monotonic() + 40
                for i in range(count):
                    assert time.monotonic() < deadline
                    routes.append(await client.set("/peer/sink/seq", i))
                    if i == 400:
                        # The network under this connection dies (this side hears nothing any more).
                        lost = client.p2p.connection("sink")
                        for protocol in lost.transport.ice_connection()._protocols:
                            protocol.datagram_received = lambda data, addr: None
                    await asyncio.sleep(0.002)
                # The sentinel: once the lost link has closed and its messages were re-sent, "end"
                # through the relay comes after everything else (one sender's messages stay in order).
                await asyncio.wait_for(lost.wait_closed(), TIMEOUT)
                await wait_until(lambda: all(link.fallback is None or link.fallback.done()
                                             for link in client._links.values()), TIMEOUT, "the re-sends")
                await client.relay.emit("/peer/sink/seq", "end")
                result = await last_line(process)
                stats = client.stats()
            finally:
                await client.close()
    values = result["values"]
    assert sorted(values) == list(range(count)) and len(values) == count
    assert "relay" in routes and routes[0] == "p2p"
    assert stats["fallbacks"] >= 1
    assert result["stats"]["received"]["p2p"] > 0 and result["stats"]["received"]["relay"] > 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_peer_cli_streams_to_a_watcher_over_p2p_with_an_embedded_relay() -> None:
    port = str(free_port())
    streamer = None
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clasp_fast", "peer", "--id", "viewer", "--watch", "/sensor/**", "--port", port,
        "--seconds", "9", cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        first = (await asyncio.wait_for(watcher.stdout.readline(), TIMEOUT)).decode()
        assert f"started the embedded relay on ws://127.0.0.1:{port}" in first
        streamer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clasp_fast", "peer", "--id", "sensor-1", "--stream", "/sensor/accel",
            "--rate", "200", "--port", port, "--seconds", "4", cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(streamer.communicate(), TIMEOUT)
        assert streamer.returncode == 0, err.decode()[-2000:]
        assert "started the embedded relay" not in out.decode()  # it found the watcher's relay
        sent = re.search(r"done: sent (\d+) messages, p2p (\d+), relay (\d+)", out.decode())
        assert sent, out.decode()
        out, err = await asyncio.wait_for(watcher.communicate(), TIMEOUT)
        assert watcher.returncode == 0, err.decode()[-2000:]
    finally:
        for process in (streamer, watcher):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    text = out.decode()
    assert re.search(r"\d+ msg/s  latency p50 [\d.]+ ms  p99 [\d.]+ ms  p2p \d+  relay \d+", text), text
    received = re.search(r"done: received (\d+) messages, p2p (\d+), relay (\d+)", text)
    assert received, text
    total, p2p, relay = map(int, received.groups())
    assert p2p > 0 and total == p2p + relay
    assert total <= int(sent.group(1))

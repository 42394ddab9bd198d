"""ClaspP2P against werift, a WebRTC stack written in TypeScript (tests/node/werift_peer.mjs), through the
embedded relay, in both roles: each side sends 500 SETs on clasp-reliable and 500 stream PUBLISHes on
clasp, then its ``disconnected`` at once (ours through ``close()``) and waits for the other's.

Every SET must arrive, in order, both ways; the stream PUBLISHes may lose some (unreliable channel).
Without Node or werift the test skips, or fails when CLASP_REQUIRE_NODE=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import clasp_fast
from clasp_fast import ClaspP2P, Peer
from clasp_fast.ice import is_loopback
from clasp_fast.messages import Publish, Set
from clasp_fast.webrtc import WebRtcConfig

from .test_p2p import relay_running, wait_until

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "werift_peer.mjs"
MODULE = Path(clasp_fast.__file__).resolve().parent / "browser" / "clasp-p2p.js"  # the package under test
COUNT = 500
TIMEOUT = 30


def _require_werift() -> None:
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "werift").exists():
        missing = "werift is not installed; run `npm ci` in tests/node"
    if missing is None:
        return
    if os.environ.get("CLASP_REQUIRE_NODE") == "1":
        pytest.fail(f"CLASP_REQUIRE_NODE=1 but the werift test cannot run: {missing}", pytrace=False)
    pytest.skip(missing)


async def read_event(process: asyncio.subprocess.Process, name: str) -> dict:
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        if not line:
            stderr = (await process.stderr.read()).decode(errors="replace")
            raise AssertionError(f"werift peer exited before {name!r}: {stderr[-2000:]}")
        event = json.loads(line)
        if event["event"] == "error":
            raise AssertionError(f"werift peer failed: {event['error']}")
        if event["event"] == name:
            return event


@pytest.mark.parametrize("werift_role", ["offer", "answer"])
async def test_abrupt_disconnected_both_ways_with_werift(werift_role: str) -> None:
    _require_werift()
    async with relay_running() as relay:
        # A generous bound: on a loaded machine werift can be slow to acknowledge; the test is about
        # order and completeness, which hold whenever the bound is not reached.
        config = WebRtcConfig(host_addresses=["127.0.0.1"], close_timeout=15.0)
        async with ClaspP2P(relay.url, client_id="fast", rtc_config=config, presence_interval=0.5) as p2p:
            peers: list[Peer] = []
            reliable: list[int] = []
            streamed: list[int] = []
            closed = asyncio.get_running_loop().create_future()
            p2p.on_disconnection(lambda peer, reason: closed.done() or closed.set_result(reason))

            @p2p.on_connection
            def send_everything(peer: Peer) -> None:
                # Runs as the connection opens, before any later signal (werift's "disconnected"
                # may follow its data at once) is looked at.
                peers.append(peer)
                peer.on("/werift/rel", lambda value, address: reliable.append(int(value)))
                peer.on("/werift/stream", lambda value, address: streamed.append(int(value)))
                for i in range(COUNT):
                    peer.transport.sender.send_nowait(Set(address="/fast/rel", value=i))
                    peer.transport.sender.send_nowait(Publish(address="/fast/stream", signal="stream", value=i))

            process = await asyncio.create_subprocess_exec(
                "node", str(SCRIPT), relay.url, werift_role, p2p.session_id if werift_role == "offer" else "-",
                str(COUNT), cwd=str(NODE_DIR), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**os.environ, "CLASP_P2P_JS": str(MODULE)})
            try:
                werift = (await read_event(process, "ready"))["session"]
                if werift_role == "answer":
                    await asyncio.wait_for(p2p.connect_to_peer(werift), TIMEOUT)
                await wait_until(lambda: peers, TIMEOUT, what="the connection")
                peer = peers[0]
                pair = peer.transport.selected_candidate_pair()
                assert is_loopback(pair.local_address[0]) and is_loopback(pair.remote_address[0])
                connected = await read_event(process, "connected")
                # werift learned clasp_fast's candidates (loopback host candidates) from the signals.
                assert connected["remoteCandidates"] and all(
                    is_loopback(c.split()[4]) and " typ host" in c for c in connected["remoteCandidates"])
                await peer.close()  # drain, disconnected, wait until werift's side has closed
                done = await read_event(process, "done")
                assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert reliable == list(range(COUNT)), f"{len(reliable)} of {COUNT} SETs from werift"
            assert done["reliable"] == list(range(COUNT)), f"{len(done['reliable'])} of {COUNT} SETs at werift"
            assert len(set(streamed)) == len(streamed) <= COUNT and done["unreliable"] <= COUNT
            assert done["reason"] in ("User requested disconnect", "closed by the peer")
            assert closed.result() in ("User requested disconnect", "werift done")
            print(f"werift {werift_role}s: stream PUBLISHes received {len(streamed)}/{COUNT} here, "
                  f"{done['unreliable']}/{COUNT} at werift")

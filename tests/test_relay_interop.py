"""The official clients against the embedded relay, and ClaspClient talking to them through it.

* JS: ``@clasp-to/core`` 3.3.2 under Node, driven by ``tests/node/relay_peer.mjs``.
* Python: ``clasp-to`` 4.2.0, within what it can do: it cannot decode ACK, so its receive
  loop stops at the first ACK after its own ``set()`` (docs/protocol.md §11.6); the test checks what
  it does before that and that the relay and the other sessions are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from clasp_fast.client import ClaspClient
from clasp_fast.relay import Relay

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")


class JsPeer:
    """The official JS client in a Node subprocess, commanded over stdin, reporting on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict] = []

    @classmethod
    async def start(cls) -> "JsPeer":
        if NODE is None or not (NODE_DIR / "node_modules" / "@clasp-to" / "core").exists():
            reason = "Node or tests/node/node_modules missing (run npm ci in tests/node)"
            if os.environ.get("CLASP_REQUIRE_NODE") == "1":
                pytest.fail(f"CLASP_REQUIRE_NODE=1 but {reason}", pytrace=False)
            pytest.skip(reason)
        process = await asyncio.create_subprocess_exec(
            NODE, str(NODE_DIR / "relay_peer.mjs"), cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(process)

    async def command(self, **command) -> None:
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def expect(self, event: str, timeout: float = 5.0, **fields) -> dict:
        """Wait for the next event of kind ``event`` whose fields match; earlier others are kept."""
        for seen in self.events:
            if seen["event"] == event and all(seen.get(k) == v for k, v in fields.items()):
                self.events.remove(seen)
                return seen
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), max(deadline - loop.time(), 0.01))
            if not line:
                raise AssertionError(f"JS peer exited while waiting for {event} {fields}; saw {self.events}")
            seen = json.loads(line)
            if seen["event"] == event and all(seen.get(k) == v for k, v in fields.items()):
                return seen
            self.events.append(seen)

    async def close(self) -> None:
        if self.process.returncode is None:
            try:
                await self.command(op="close")
                await asyncio.wait_for(self.process.wait(), 3.0)
            except (asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
                self.process.kill()
                await self.process.wait()


async def wait_for_subscriber(relay: Relay, session_id: str, address: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while session_id not in {s.id for s in relay.router.subscribers(address, None)}:
        assert loop.time() < deadline, f"{session_id} never subscribed to {address}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def js():
    peer = await JsPeer.start()
    yield peer
    await peer.close()


async def test_js_client_handshake_subscribe_set_get_publish(relay, js):
    await js.command(op="connect", url=relay.url, name="js-peer")
    session = (await js.expect("connected"))["session"]
    assert session in relay.sessions and relay.sessions[session].name == "js-peer"

    async with await ClaspClient.connect(relay.url, name="py") as py:
        # ClaspClient -> JS: SET echo and PUBLISH delivered to the JS subscriber.
        await js.command(op="subscribe", pattern="/js/**")
        await js.expect("subscribed")
        # The JS client sends SUBSCRIBE without any confirmation: wait until the relay has it.
        await wait_for_subscriber(relay, session, "/js/gain")
        await py.set("/js/gain", 0.25)
        got = await js.expect("value", address="/js/gain")
        assert got["value"] == 0.25
        await py.emit("/js/cue", "go")
        assert (await js.expect("value", address="/js/cue"))["value"] == "go"

        # JS -> ClaspClient: its SET (echo to us) and its emit.
        received: list[tuple] = []
        done = asyncio.Event()

        def collect(value, address):
            received.append((address, value))
            if len(received) == 2:
                done.set()

        await py.subscribe("/py/**", collect)
        await py.ping()
        await js.command(op="set", address="/py/level", value=0.5)
        await js.command(op="emit", address="/py/bang", value={"n": 7})
        await asyncio.wait_for(done.wait(), 5.0)
        assert received == [("/py/level", 0.5), ("/py/bang", {"n": 7.0})]  # JS numbers are f64
        assert await py.get("/py/level") == 0.5

        # JS get of a param it never saw (not in its cache): answered by the relay's SNAPSHOT.
        await py.set("/other/name", "stage")
        await js.command(op="get", address="/other/name")
        assert (await js.expect("got", address="/other/name"))["value"] == "stage"


async def test_js_late_joiner_gets_snapshot(relay, js):
    async with await ClaspClient.connect(relay.url) as py:
        await py.set("/late/a", 1)
        await py.set("/late/b", [1, 2.5, True])
        await js.command(op="connect", url=relay.url)
        await js.expect("connected")
        await js.command(op="subscribe", pattern="/late/**")
        a = await js.expect("value", address="/late/a")
        b = await js.expect("value", address="/late/b")
        assert a["value"] == 1 and b["value"] == [1, 2.5, True]


async def test_official_python_client_within_its_limits(relay):
    import clasp  # clasp-to is a test dependency (pyproject's test extra): missing it is a failure
    async with await ClaspClient.connect(relay.url, name="fast") as fast:
        await fast.set("/pyo/known", "hello")
        official = clasp.Clasp(relay.url, name="official-py", reconnect=False)
        await official.connect()
        try:
            assert official.session_id in relay.sessions
            # GET: answered with a SNAPSHOT, which this client decodes.
            assert await official.get("/pyo/known", timeout=3.0) == "hello"
            # SUBSCRIBE + SET echo from another session.
            values: list[tuple] = []
            arrived = asyncio.Event()
            official.subscribe("/pyo/**", lambda value, address: (values.append((address, value)), arrived.set()))
            await wait_for_subscriber(relay, official.session_id, "/pyo/x")
            await fast.set("/pyo/x", 3)
            await asyncio.wait_for(arrived.wait(), 3.0)
            assert ("/pyo/x", 3) in values
            # Its PUBLISH and SET reach ClaspClient (it goes deaf after the ACK of its own SET).
            got: list[tuple] = []
            both = asyncio.Event()
            await fast.subscribe("/from-official/**", lambda v, a: (got.append((a, v)), len(got) == 2 and both.set()))
            await fast.ping()
            await official.emit("/from-official/ev", "ping")
            await official.set("/from-official/p", 1.5)
            await asyncio.wait_for(both.wait(), 3.0)
            assert got == [("/from-official/ev", "ping"), ("/from-official/p", 1.5)]
            assert await fast.get("/from-official/p") == 1.5
        finally:
            await official.close()
        # The relay and other sessions are fine after the official client went away.
        assert await fast.ping() < 1.0

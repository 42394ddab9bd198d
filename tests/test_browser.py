"""Real headless Chromium against clasp_fast: the browser module (clasp-p2p.js) served by the
embedded relay talks WebRTC with a Python ``ClaspP2P`` peer and with another page.

One Chromium run (module fixture) holds every page at once, to keep the cost of the browser low:

* ``offer``: the page offers to the Python peer and opens an extra unreliable channel;
* ``answer``: the Python peer offers to the page;
* ``b2b-a`` / ``b2b-b``: two pages connect to each other (signaling through the relay);
* ``example``: examples/browser/index.html against the example's Python peer; screenshot saved to
  ``artifacts/browser-example.png``;
* ``lifecycle`` (tests/browser/lifecycle_peer.js), both roles: as the connection opens each side sends
  500 SETs and 500 stream PUBLISHes, then its ``disconnected`` at once, and closes; every SET must
  arrive, in order, both ways.

A separate Chromium run repeats the lifecycle exchange (3,000 SETs each way) over a lossy link: the
Python side's outgoing DTLS records dropped, duplicated and reordered below DTLS (seeded).

Each pair exchanges SETs, events (map values with an i64 beyond 2^53 and bytes), streams and GETs in
both directions. Everything runs on 127.0.0.1; the pages rewrite their host candidates to 127.0.0.1.
Without Chromium the tests skip, or fail with the install command when CLASP_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

import clasp_fast
from clasp_fast.messages import Publish, Set
from clasp_fast.p2p import ClaspP2P, Peer
from clasp_fast.relay import Relay
from clasp_fast.webrtc import WebRtcConfig

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "tests" / "browser"
EXAMPLE = ROOT / "examples" / "browser"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("CLASP_CHROMIUM", "/usr/bin/chromium")
PUPPETEER = ROOT / "tests" / "node" / "node_modules" / "puppeteer-core"
LIFECYCLE_COUNT = 500
INSTALL_HINT = ("install it with: apt-get update && apt-get install -y chromium "
                "(and `npm ci` in tests/node for puppeteer-core)")


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM}; {INSTALL_HINT}"
    if shutil.which("node") is None:
        return "node is not installed"
    if not PUPPETEER.exists():
        return f"puppeteer-core is not installed in tests/node; run `npm ci` there ({INSTALL_HINT})"
    return None


def _require_browser() -> None:
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("CLASP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CLASP_REQUIRE_BROWSER=1 but the browser tests cannot run: {missing}", pytrace=False)
    pytest.skip(missing)


def _load_example():
    spec = importlib.util.spec_from_file_location("clasp_example_serve", EXAMPLE / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _exchange(peer: Peer, me: str = "py", other: str = "web") -> dict:
    """The Python half of the page's exchange (tests/browser/p2p_peer.js)."""
    got: dict = {"set": None, "event": None, "streams": [], "extra": {}, "go": 0, "get": None}
    done = asyncio.Event()
    sent = False

    async def send_all() -> None:
        nonlocal sent
        await peer.emit(f"/{me}/go", True)
        if sent:
            return
        sent = True
        await peer.set(f"/{me}/set", 2.5)
        await peer.emit(f"/{me}/event", {"n": 7, "s": "héllo", "big": 2**60, "bytes": b"\x00\xff"})
        for i in range(5):
            await peer.stream(f"/{me}/stream", [0.25, 0.5, float(i)])
            await asyncio.sleep(0.04)

    async def fetch() -> None:
        got["get"] = await peer.get(f"/{other}/set", timeout=10)
        check()

    def check() -> None:
        if got["set"] is not None and got["event"] is not None and got["streams"] and got["get"] is not None:
            done.set()

    def on_message(value, address, message):
        if address == f"/{other}/go":
            got["go"] += 1
            if got["go"] == 1:
                return send_all()
        elif address == f"/{other}/set":
            got["set"] = value
            asyncio.ensure_future(fetch())
        elif address == f"/{other}/event":
            got["event"] = value
        elif address == f"/{other}/stream":
            got["streams"].append((list(map(float, value)), message.signal))
        else:
            got["extra"][address] = value
        check()
        return None

    peer.on(f"/{other}/**", on_message)
    await peer.emit(f"/{me}/go", True)
    await asyncio.wait_for(done.wait(), 45)
    await asyncio.sleep(0.3)
    return got


def _remote_hosts(peer: Peer) -> set[str]:
    """Addresses of the ICE candidates the browser sent (aioice's remote candidate list)."""
    return {c.host for c in peer.transport.ice_connection()._remote_candidates}


async def _drive(pages: list[dict], timeout_ms: int = 60000) -> list[dict]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(PAGES / "drive.mjs"), json.dumps({"pages": pages, "timeoutMs": timeout_ms}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(PAGES))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_ms / 1000 + 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the Chromium driver did not finish in time") from None
    assert proc.returncode == 0, f"drive.mjs failed ({proc.returncode}): {err.decode()[-3000:]}"
    return json.loads(out)


@pytest.fixture(scope="module")
def run():
    """Run every page in one Chromium against one relay and Python peers; return what each side saw."""
    _require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "browser-example.png"
    if screenshot.exists():
        screenshot.unlink()
    example = _load_example()

    async def scenario() -> dict:
        rtc = WebRtcConfig(host_addresses=["127.0.0.1"])
        async with Relay(port=0, static_dir=PAGES) as relay, Relay(port=0, static_dir=EXAMPLE) as example_relay:
            base = f"http://127.0.0.1:{relay.port}/p2p_peer.html?relay={relay.url}"
            py = ClaspP2P(relay.url, client_id="py-peer", rtc_config=rtc, presence_interval=1.0, discovery_timeout=40)
            await py.connect()
            stop_example = asyncio.Event()
            sensor = asyncio.ensure_future(example.run_sensor(example_relay.url, stop_example))

            async def python_answers() -> dict:
                peer = await asyncio.wait_for(py.incoming().__anext__(), 60)
                got = await _exchange(peer)
                for _ in range(100):  # the browser answers the SYNCs of the keepalive (1 s apart)
                    if peer.clock is not None:
                        break
                    await asyncio.sleep(0.05)
                return {"got": got, "client_id": peer.client_id, "batching": peer.transport.batching,
                        "remote_hosts": _remote_hosts(peer), "clock": peer.clock,
                        "features": list(peer.features), "stats": peer.stats()}

            async def python_offers() -> dict:
                peer = await py.connect_to_peer("web-answer", timeout=40)
                got = await _exchange(peer)
                pair = peer.transport.selected_candidate_pair()
                return {"got": got, "role": peer.transport.role, "pair": pair, "stats": peer.stats(),
                        "remote_hosts": _remote_hosts(peer)}

            life = ClaspP2P(relay.url, client_id="py-life", presence_interval=1.0,
                            rtc_config=WebRtcConfig(host_addresses=["127.0.0.1"], close_timeout=15.0),
                            discovery_timeout=40)
            lifecycle: dict[str, dict] = {}

            life.on_connection(_send_everything_then_close(lifecycle, LIFECYCLE_COUNT))

            async def python_lifecycle() -> dict:
                try:  # a failure here fails the lifecycle tests only
                    await life.connect()
                    await asyncio.wait_for(life.connect_to_peer("web-life-answer", timeout=40), 60)
                    while len(lifecycle) < 2 or any("closing" not in seen for seen in lifecycle.values()):
                        await asyncio.sleep(0.05)
                    for seen in lifecycle.values():
                        await asyncio.wait_for(seen.pop("closing"), 30)
                except Exception as exc:
                    lifecycle["error"] = repr(exc)
                return lifecycle

            life_base = f"http://127.0.0.1:{relay.port}/lifecycle_peer.html?relay={relay.url}&count={LIFECYCLE_COUNT}"
            pages = [
                {"url": f"{base}&client=web-offer&role=offer&peer=py-peer&channel=/web/fast"},
                {"url": f"{base}&client=web-answer&role=answer"},
                {"url": f"{base}&client=b2b-a&role=offer&peer=b2b-b&me=a&other=b"},
                {"url": f"{base}&client=b2b-b&role=answer&me=b&other=a"},
                {"url": f"http://127.0.0.1:{example_relay.port}/?gain=0.3&press=1", "screenshot": str(screenshot),
                 "ready": "window.__example && window.__example.frames > 30 && window.__example.gainAck === 0.3"
                          " && window.__example.temperature !== null && window.__example.presses === 1",
                 "resultExpr": "window.__example"},
                {"url": f"{life_base}&client=web-life-offer&role=offer&peer=py-life"},
                {"url": f"{life_base}&client=web-life-answer&role=answer"},
            ]
            try:
                browser, answered, offered, lifecycle_result = await asyncio.gather(
                    _drive(pages), python_answers(), python_offers(), python_lifecycle())
            finally:
                stop_example.set()
                await asyncio.wait_for(sensor, 15)
                await py.close()
                await life.close()
            return {"pages": browser, "answered": answered, "offered": offered, "screenshot": screenshot,
                    "lifecycle": lifecycle_result}

    return asyncio.run(scenario())


def _send_everything_then_close(lifecycle: dict, count: int, before=None):
    """The Python side of the lifecycle pages: as the connection opens (before the page's
    "disconnected" can be looked at), record what arrives, send ``count`` SETs and stream
    PUBLISHes, and close. ``before(peer)`` runs first."""

    def send_everything(peer: Peer) -> None:
        if before is not None:
            before(peer)
        seen = lifecycle.setdefault(peer.client_id or peer.session_id, {"reliable": [], "streamed": 0})
        peer.on("/web/rel", lambda value, address: seen["reliable"].append(int(value)))
        peer.on("/web/stream", lambda value, address: seen.__setitem__("streamed", seen["streamed"] + 1))
        peer.on_close(lambda peer, reason: seen.update(reason=reason, stats=peer.stats()))
        for i in range(count):
            peer.transport.sender.send_nowait(Set(address="/py/rel", value=i))
            peer.transport.sender.send_nowait(Publish(address="/py/stream", signal="stream", value=i))
        seen["closing"] = asyncio.ensure_future(peer.close())

    return send_everything


def _page(run, index: int) -> dict:
    entry = run["pages"][index]
    result = entry["result"]
    assert result and result.get("ok", True), f"page failed: {result}\nconsole: {entry['console']}"
    return result


def _check_browser_side(result: dict, other_set: float, role: str) -> None:
    got = result["got"]
    assert result["role"] == role
    assert got["set"] == other_set and got["get"] == other_set
    event = got["event"]
    assert event["n"] == 7 and event["s"] == "héllo"
    assert event["big"] in (str(2**60), 2**60)   # an i64 beyond 2^53 arrives as a BigInt (page stringifies it)
    assert event["bytes"] == [0, 255]
    assert got["streams"] and all(s["signal"] == "stream" for s in got["streams"])
    assert got["streams"][0]["samples"][:2] == [0.25, 0.5]
    # peer.set() with a value it cannot encode threw and stored nothing (as Peer.set in Python).
    assert got["unsendable"] == "ClaspEncodeError" and got["unsendableStored"] is False
    channels = result["stats"]["channels"]
    # Both default channels carried traffic in both directions.
    assert channels["clasp"]["framesSent"] >= 5 and channels["clasp"]["framesReceived"] >= 1
    assert channels["clasp-reliable"]["framesSent"] >= 3 and channels["clasp-reliable"]["framesReceived"] >= 3
    assert result["errors"] == []


def _check_python_side(got: dict) -> None:
    assert got["set"] == 1.5 and got["get"] == 1.5
    event = got["event"]
    assert event["n"] == 7.0 and isinstance(event["n"], float)   # a JS number travels as f64
    assert event["big"] == 2**60 and isinstance(event["big"], int)  # a BigInt travels as i64
    assert event["s"] == "héllo" and bytes(event["bytes"]) == b"\x00\xff"
    assert got["streams"] and got["streams"][0][0][:2] == [0.25, 0.5]
    assert all(signal == "stream" for _, signal in got["streams"])


def test_browser_offers_to_python_peer(run):
    result = _page(run, 0)
    _check_browser_side(result, 2.5, "offerer")
    answered = run["answered"]
    assert answered["remote_hosts"] == {"127.0.0.1"}    # host candidates rewritten, nothing else sent
    assert answered["client_id"] == "web-offer"          # found through presence/announce
    assert answered["batching"] and "batch" in answered["features"]
    # The page answers clock probes: the Python side knows the browser's clock (same host: near 0).
    clock = answered["clock"]
    assert clock is not None and abs(clock.offset_us) <= clock.uncertainty_us + 50_000
    _check_python_side(answered["got"])
    # The extra unreliable channel opened by the page carried its prefix's SET.
    assert answered["got"]["extra"].get("/web/fast/x") == 42.0
    assert result["stats"]["channels"]["clasp/web/fast"]["framesSent"] == 5
    assert result["stats"]["channels"]["clasp/web/fast"]["framesReceived"] == 0


def test_python_peer_offers_to_browser(run):
    result = _page(run, 1)
    _check_browser_side(result, 2.5, "answerer")
    offered = run["offered"]
    assert offered["role"] == "offerer"
    assert offered["remote_hosts"] == {"127.0.0.1"}
    _check_python_side(offered["got"])
    pair = offered["pair"]
    assert pair.local_address[0] == "127.0.0.1" and pair.remote_address[0] == "127.0.0.1"


def test_browser_to_browser(run):
    a, b = _page(run, 2), _page(run, 3)
    assert a["remote"] == b["session"] and b["remote"] == a["session"]
    for result, role in ((a, "offerer"), (b, "answerer")):
        _check_browser_side(result, 1.5, role)
        assert result["stats"]["batching"] is True


def test_example_page_shows_live_values(run):
    state = run["pages"][4]["result"]
    assert state["frames"] > 30 and state["gainAck"] == 0.3 and state["presses"] == 1
    assert 18.0 < state["temperature"] < 24.0
    assert abs(state["last"]) <= 0.3 + 1e-9      # the wave is scaled by the gain the page sent
    shot = run["screenshot"]
    assert shot.exists() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_relay_serves_the_module_with_a_javascript_content_type():
    async def fetch() -> tuple[str, bytes]:
        async with Relay(port=0) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"GET /clasp-p2p.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return data.decode("utf-8", "replace"), data

    text, data = asyncio.run(fetch())
    head, _, body = text.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    assert "content-type: text/javascript" in head.lower()
    assert "export class ClaspP2P" in body
    assert body.encode() == (Path(clasp_fast.__file__).parent / "browser" / "clasp-p2p.js").read_bytes()


@pytest.mark.parametrize("page, client", [(5, "web-life-offer"), (6, "web-life-answer")])
def test_abrupt_disconnected_both_ways_with_the_browser(run, page: int, client: str):
    assert "error" not in run["lifecycle"], run["lifecycle"]["error"]
    result = _page(run, page)
    python_side = run["lifecycle"][client]
    assert python_side["reliable"] == list(range(LIFECYCLE_COUNT)), f"{len(python_side['reliable'])} SETs from the page"
    assert result["reliable"] == list(range(LIFECYCLE_COUNT)), (
        f"{len(result['reliable'])} SETs at the page ({result['streamed']} stream PUBLISHes, close reason "
        f"{result['closeReason']!r} after {result['closeMs']:.0f} ms, errors {result['errors']}, "
        f"channels {result.get('channels')}, events {result.get('events')}); "
        f"Python side: {python_side.get('stats')}")
    assert python_side["streamed"] <= LIFECYCLE_COUNT and result["streamed"] <= LIFECYCLE_COUNT
    assert python_side["reason"] in ("web done", "User requested disconnect")
    assert result["closeReason"] in ("web done", "User requested disconnect")
    assert result["errors"] == []
    print(f"{client}: stream PUBLISHes {python_side['streamed']}/{LIFECYCLE_COUNT} at Python, "
          f"{result['streamed']}/{LIFECYCLE_COUNT} at the page; page close took {result['closeMs']:.0f} ms")


LOSSY_COUNT = 3000


def _lossy_exchange(page_count: int, python_count: int, **faults: float) -> tuple[dict, dict, dict]:
    """The lifecycle exchange with the page offering while the Python side's outgoing DTLS
    application records (its DATA, SACKs and stream resets) meet ``faults`` below DTLS (seeded);
    the page sends ``page_count`` SETs, Python ``python_count``. Returns (page, lifecycle, link)."""
    from tests.sctp_pair import DatagramFaults

    async def scenario() -> tuple[dict, dict, dict]:
        link: dict = {}
        lifecycle: dict = {}

        def lossy(peer: Peer) -> None:
            pc = peer.transport._pc
            link.update(faults=DatagramFaults(pc, seed=17, **faults), sctp=pc.sctp.stats)

        async with Relay(port=0, static_dir=PAGES) as relay:
            py = ClaspP2P(relay.url, client_id="py-lossy", presence_interval=1.0, discovery_timeout=40,
                          rtc_config=WebRtcConfig(host_addresses=["127.0.0.1"], close_timeout=15.0))
            py.on_connection(_send_everything_then_close(lifecycle, python_count, before=lossy))
            await py.connect()
            url = (f"http://127.0.0.1:{relay.port}/lifecycle_peer.html?relay={relay.url}&count={page_count}"
                   "&client=web-lossy&role=offer&peer=py-lossy")
            try:
                (page,) = await _drive([{"url": url}])
                for seen in lifecycle.values():
                    await asyncio.wait_for(seen.pop("closing"), 30)
            finally:
                await py.close()
        return page, lifecycle, link

    return asyncio.run(scenario())


def test_nothing_reliable_is_lost_to_the_browser_over_a_lossy_link():
    """The lifecycle exchange with the page offering, while 4 % of the DTLS application records
    the Python side sends (its DATA and its SACKs) are dropped, 2 % duplicated and 2 % reordered
    below DTLS (seeded): Chromium's SCTP and the fast path's loss recovery (fast retransmission,
    loss probes, T3) between them deliver every SET, in order, both ways."""
    _require_browser()
    page, lifecycle, link = _lossy_exchange(LOSSY_COUNT, LOSSY_COUNT, loss=0.04, duplicate=0.02, reorder=0.02)
    result = page["result"]
    assert result and result.get("ok", True), f"page failed: {result}\nconsole: {page['console']}"
    python_side = lifecycle["web-lossy"]
    faults = link["faults"]
    assert faults.dropped and faults.duplicated and faults.reordered
    assert python_side["reliable"] == list(range(LOSSY_COUNT)), (
        f"{len(python_side['reliable'])} SETs from the page (Python side closed: {python_side.get('reason')!r}; "
        f"page close took {result.get('closeMs')} ms, reason {result.get('closeReason')!r}; "
        f"{python_side.get('stats')}; {link['sctp']})")
    assert result["reliable"] == list(range(LOSSY_COUNT)), (
        f"{len(result['reliable'])} SETs at the page (close reason {result['closeReason']!r}, errors "
        f"{result['errors']}); Python side: {python_side.get('stats')}")
    assert result["errors"] == []
    print(f"lossy link: {faults.dropped} records dropped, {faults.duplicated} duplicated, "
          f"{faults.reordered} reordered; page close took {result['closeMs']:.0f} ms; {link['sctp']}")


QUEUED_COUNT = 50_000


def test_what_the_browser_still_queues_when_python_closes_arrives():
    """The page says ``disconnected`` at once with 50,000 SETs still queued in Chromium, while 20 %
    of the Python side's records (its SACKs) are dropped, so Chromium's send queue drains slowly and
    stalls on its retransmission timer. Chromium discards every message it has not started sending
    when its stream is reset, so Python resets only once the page has sent nothing new for a while
    (its SACK going out again meanwhile): every SET arrives. (With a fixed delay after our own data
    was acknowledged, 27,000-34,000 of the 50,000 arrived.)"""
    _require_browser()
    page, lifecycle, link = _lossy_exchange(QUEUED_COUNT, 200, loss=0.2)
    result = page["result"]
    assert result and result.get("ok", True), f"page failed: {result}\nconsole: {page['console']}"
    python_side = lifecycle["web-lossy"]
    assert link["faults"].dropped
    assert len(python_side["reliable"]) == QUEUED_COUNT, (
        f"{len(python_side['reliable'])} of {QUEUED_COUNT} SETs from the page (page close took "
        f"{result.get('closeMs')} ms; {link['sctp']})")
    assert python_side["reliable"] == list(range(QUEUED_COUNT))
    assert result["reliable"] == list(range(200))
    assert result["errors"] == []

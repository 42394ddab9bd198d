"""Replay the reference router's recorded conversations against the embedded relay.

``router_transcripts.json`` holds 11 scenarios recorded against the reference Rust router.
Each step sends the recorded client frames (with the recorded session ids replaced by the
relay's), then checks what every client receives: the decoded messages in the reference's
canonical form, with placeholders for run-dependent fields (``<A.session>``, times), the frame
QoS, and silence where the reference sent nothing.

The relay deliberately differs in a few steps; ``DELIBERATE`` lists them with the reason and
what clasp_fast sends instead.
"""

from __future__ import annotations

import asyncio
import re
import struct

import pytest
from websockets.asyncio.client import connect

from clasp_fast.codec import decode_frame
from clasp_fast.messages import MISSING
from clasp_fast.relay import Relay

from .spec_data import load_json

TRANSCRIPTS = load_json("router_transcripts.json")
SCENARIOS = {s["name"]: s for s in TRANSCRIPTS["scenarios"]}

SETTLE = 2.0  # seconds to wait for the expected frames of one step
QUIET = 0.08  # seconds of extra listening that must stay silent after them

# (scenario, action prefix) -> (expected message types per client instead of the recording, reason)
DELIBERATE = {
    ("02 subscribe", "C: SET /s2/m/x = false (old pattern of id 2)"): (
        {"A": [], "B": [], "C": ["ACK"]},
        "re-using a subscription id replaces the old subscription (the reference keeps the old "
        "pattern alive, docs/protocol.md §8.2 [QUIRK])",
    ),
    ("02 subscribe", "C: SET /s2/m/x = true after UNSUBSCRIBE id=2 (old pattern)"): (
        {"A": [], "B": [], "C": ["ACK"]},
        "the replaced subscription is gone (see above)",
    ),
    ("03b ttl-expiry", "B: GET /ttl/abs1 after its TTL elapsed"): (
        {"A": [], "B": []},
        "an expired param is never served; the reference serves it until its 60 s sweep (docs/protocol.md §11.1)",
    ),
    ("04 publish", "A: PUBLISH gesture /s4/touch id=7 phase=move x3"): (
        {"A": [], "B": ["PUBLISH"], "C": []},
        "the coalesced move is not sent back to its sender (docs/protocol.md §11.1: the reference's flush "
        "timer includes the sender)",
    ),
    ("04 publish", "A: PUBLISH gesture /s4/swipe id=1 start, then (after 100 ms) one move"): (
        {"A": [], "B": ["PUBLISH", "PUBLISH"], "C": []},
        "the coalesced move is not sent back to its sender (docs/protocol.md §11.1)",
    ),
}

LONG_WAIT_ACTION = "(wait 58.5 s"  # replaced: this relay sweeps expired params every ttl_sweep_interval


def deliberate_for(scenario: str, action: str):
    for (name, prefix), override in DELIBERATE.items():
        if name == scenario and action.startswith(prefix):
            return override
    return None


# -- canonical form of a decoded message (the transcripts' "decoded.message") -----------------

def _float_bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def canonical_value(value):
    if value is None:
        return {"t": "null"}
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, int):
        return {"t": "int", "v": value}
    if isinstance(value, float):
        return {"t": "float", "bits": _float_bits(value)}
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if isinstance(value, (bytes, bytearray)):
        return {"t": "bytes", "hex": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return {"t": "array", "v": [canonical_value(v) for v in value]}
    if isinstance(value, dict):
        return {"t": "map", "v": {k: canonical_value(v) for k, v in value.items()}}
    raise TypeError(f"no canonical form for {value!r}")


def _ttl(ttl):
    if ttl.mode == "never":
        return {"mode": "never"}
    return {"mode": ttl.mode, "secs": ttl.secs}


def canonical(message) -> dict:
    """The reference harness's canonical dict for the messages a router sends."""
    kind = type(message).__name__
    if kind == "Welcome":
        out = {"type": "WELCOME", "version": message.version, "session": message.session,
               "name": message.name, "features": list(message.features), "time": message.time}
        if message.token:
            out["token"] = message.token
        return out
    if kind == "Snapshot":
        params = []
        for p in message.params:
            item = {"address": p.address, "value": canonical_value(p.value), "revision": p.revision}
            if p.writer is not None:
                item["writer"] = p.writer
            if p.timestamp is not None:
                item["timestamp"] = p.timestamp
            params.append(item)
        return {"type": "SNAPSHOT", "params": sorted(params, key=lambda p: p["address"])}
    if kind == "Set":
        out = {"type": "SET", "address": message.address, "value": canonical_value(message.value),
               "lock": message.lock, "unlock": message.unlock}
        if message.revision is not None:
            out["revision"] = message.revision
        if message.ttl is not None:
            out["ttl"] = _ttl(message.ttl)
        return out
    if kind == "Publish":
        out = {"type": "PUBLISH", "address": message.address, "signal": message.signal, "phase": message.phase}
        if message.value is not MISSING:
            out["value"] = canonical_value(message.value)
        if message.samples is not None:
            out["samples"] = [_float_bits(float(x)) for x in message.samples]
        for field in ("timestamp", "id", "rate"):
            if getattr(message, field) is not None:
                out[field] = getattr(message, field)
        return out
    if kind == "Ack":
        out = {"type": "ACK"}
        for field in ("address", "revision", "locked", "holder", "correlation_id"):
            if getattr(message, field) is not None:
                out[field] = getattr(message, field)
        return out
    if kind == "Error":
        out = {"type": "ERROR", "code": message.code, "message": message.message}
        if message.address is not None:
            out["address"] = message.address
        if message.correlation_id is not None:
            out["correlation_id"] = message.correlation_id
        return out
    if kind == "Result":
        signals = []
        for s in message.signals:
            item = {"address": s.address, "signal_type": s.signal_type}
            if s.datatype is not None:
                item["datatype"] = s.datatype
            if s.access is not None:
                item["access"] = s.access
            signals.append(item)
        return {"type": "RESULT", "signals": sorted(signals, key=lambda s: s["address"])}
    if kind == "Sync":
        out = {"type": "SYNC", "t1": message.t1}
        if message.t2 is not None:
            out["t2"] = message.t2
        if message.t3 is not None:
            out["t3"] = message.t3
        return out
    if kind in ("Pong", "Ping"):
        return {"type": kind.upper()}
    raise TypeError(f"the relay sent an unexpected {kind}: {message!r}")


# -- placeholders -------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"<[^<>]+>")
TIME_PLACEHOLDER = re.compile(r"^<([A-Z]\.welcome_time\d*|ts:.*|[A-Z]\.sync_router_now)>$")


def learn_placeholders(recorded, normalized, found: dict[str, str]) -> None:
    """Walk a decoded message beside its normalized copy and record placeholder -> recorded text."""
    if isinstance(normalized, dict) and isinstance(recorded, dict):
        for key, value in normalized.items():
            if key in recorded:
                learn_placeholders(recorded[key], value, found)
    elif isinstance(normalized, list) and isinstance(recorded, list) and len(normalized) == len(recorded):
        for a, b in zip(recorded, normalized, strict=True):
            learn_placeholders(a, b, found)
    elif isinstance(normalized, str) and isinstance(recorded, str) and PLACEHOLDER.search(normalized):
        # Placeholders already learned (session ids from WELCOME) stand for their known text,
        # so a UUID's own hyphens cannot confuse the split of e.g. "<A.session>-<B.session>-<corr.uuid>".
        names = PLACEHOLDER.findall(normalized)
        parts = PLACEHOLDER.split(normalized)
        regex = re.escape(parts[0])
        unknown = []
        for name, part in zip(names, parts[1:], strict=True):
            if name in found:
                regex += re.escape(found[name])
            else:
                regex += "(.+?)"
                unknown.append(name)
            regex += re.escape(part)
        match = re.fullmatch(regex, recorded, re.S)
        if match:
            for name, text in zip(unknown, match.groups(), strict=True):
                found.setdefault(name, text)


def to_placeholders(obj, replacements: dict[str, str]):
    """Our canonical message with our session ids (and other known values) as placeholders."""
    if isinstance(obj, dict):
        return {k: to_placeholders(v, replacements) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_placeholders(v, replacements) for v in obj]
    if isinstance(obj, str):
        for actual, placeholder in replacements.items():
            obj = obj.replace(actual, placeholder)
    return obj


def matches(expected, actual, path="message") -> list[str]:
    """Differences between an expected normalized message and ours (time placeholders match any int)."""
    if isinstance(expected, str) and TIME_PLACEHOLDER.match(expected):
        return [] if isinstance(actual, int) and actual > 0 else [f"{path}: expected a time, got {actual!r}"]
    if isinstance(expected, dict) and isinstance(actual, dict):
        problems = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                problems.append(f"{path}.{key}: missing (expected {expected[key]!r})")
            elif key not in expected:
                problems.append(f"{path}.{key}: unexpected {actual[key]!r}")
            else:
                problems.extend(matches(expected[key], actual[key], f"{path}.{key}"))
        return problems
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}: {actual!r}"]
        problems = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problems.extend(matches(e, a, f"{path}[{i}]"))
        return problems
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def message_type(canon: dict) -> str:
    return f"ERROR({canon['code']})" if canon["type"] == "ERROR" else canon["type"]


# -- the replay ---------------------------------------------------------------------------

class Peer:
    """A raw WebSocket client that records every frame it receives."""

    def __init__(self, name: str, ws) -> None:
        self.name = name
        self.ws = ws
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for data in self.ws:
            self.received.append(data)
            self.arrived.set()

    def take(self) -> list[bytes]:
        frames, self.received = self.received, []
        return frames


async def wait_for_counts(peers: dict[str, Peer], counts: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE
    while loop.time() < deadline:
        if all(len(peers[name].received) >= n for name, n in counts.items()):
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(QUIET)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_transcript(name: str) -> None:
    scenario = SCENARIOS[name]
    recorded_values: dict[str, str] = {}  # placeholder -> value in the recording
    for step in scenario["steps"]:
        for frame in step["frames"]:
            learn_placeholders(frame["decoded"]["message"], frame["decoded_normalized"]["message"], recorded_values)

    relay = await Relay.start(host="127.0.0.1", port=0, name="CLASP Router", ttl_sweep_interval=0.1)
    peers: dict[str, Peer] = {}
    ours: dict[str, str] = {}  # placeholder -> value in this run (session ids)
    problems: list[str] = []
    try:
        for number, step in enumerate(scenario["steps"]):
            action = step["action"]
            where = f"step {number} {action!r}"
            for entry in step.get("connected") or []:
                ws = await connect(relay.url, subprotocols=["clasp"])
                assert ws.subprotocol == entry["subprotocol"] == "clasp", where
                peers[entry["client"]] = Peer(entry["client"], ws)

            if action.startswith(LONG_WAIT_ACTION):
                await asyncio.sleep(1.0)  # > the 2 s sliding TTL since its SET, plus several sweeps
            elif not step["frames"] and action.startswith("(wait"):
                await asyncio.sleep(step["wait_ms"] / 1000)

            sends = [f for f in step["frames"] if f["dir"] == "send"]
            for i, frame in enumerate(sends):
                data = bytes.fromhex(frame["frame_hex"])
                for placeholder, value in ours.items():
                    if placeholder in recorded_values:
                        data = data.replace(recorded_values[placeholder].encode(), value.encode())
                if i and "(after 100 ms)" in action:
                    await asyncio.sleep(0.1)
                await peers[frame["client"]].ws.send(data)

            expected = {c: [] for c in peers}
            for frame in step["frames"]:
                if frame["dir"] == "recv":
                    expected[frame["client"]].append(frame)
            override = deliberate_for(name, action)
            await wait_for_counts(peers, {c: len(f) for c, f in expected.items()} if override is None
                                  else {c: len(t) for c, t in override[0].items()})

            for client, peer in peers.items():
                got = []
                for data in peer.take():
                    frame = decode_frame(data)
                    canon = canonical(frame.message)
                    if canon["type"] == "WELCOME":
                        key = f"<{client}.session>" if f"<{client}.session>" not in ours else f"<{client}.session2>"
                        ours[key] = canon["session"]
                    got.append((frame, canon))
                if override is not None:
                    types = [message_type(c) for _, c in got]
                    if types != override[0].get(client, []):
                        problems.append(f"{where}: client {client} got {types}, clasp_fast should send "
                                        f"{override[0].get(client, [])} ({override[1]})")
                    continue
                want = expected[client]
                types = [message_type(c) for _, c in got]
                want_types = [message_type(f["decoded_normalized"]["message"]) for f in want]
                if types != want_types:
                    problems.append(f"{where}: client {client} got {types}, the reference sent {want_types}")
                    continue
                replacements = {v: k for k, v in ours.items()}
                for placeholder in ("<unknown.session>", "<corr.uuid>"):
                    if placeholder in recorded_values:  # sent as recorded, so echoed as recorded
                        replacements[recorded_values[placeholder]] = placeholder
                for (frame, canon), record in zip(got, want, strict=True):
                    normalized = record["decoded_normalized"]
                    actual = to_placeholders(canon, replacements)
                    wanted = normalized["message"]
                    if wanted["type"] == "ERROR" and wanted["code"] == 202:
                        # The pattern error text comes from clasp_fast's validator, not the reference's.
                        assert actual["message"].startswith("invalid address: "), actual
                        actual = {**actual, "message": wanted["message"]}
                    for problem in matches(wanted, actual):
                        problems.append(f"{where}: client {client}: {problem}")
                    if frame.qos != normalized["frame"]["qos"] or frame.timestamp is not None:
                        problems.append(f"{where}: client {client}: frame qos {frame.qos} / timestamp "
                                        f"{frame.timestamp}, reference qos {normalized['frame']['qos']}, no timestamp")
    finally:
        for peer in peers.values():
            await peer.ws.close()
            peer.task.cancel()
        await relay.close()
    assert not problems, "\n".join(problems)


def test_deliberate_differences_name_real_steps() -> None:
    """Every deliberate difference must refer to a step that exists in the recording."""
    for name, prefix in DELIBERATE:
        actions = [s["action"] for s in SCENARIOS[name]["steps"]]
        assert any(a.startswith(prefix) for a in actions), (name, prefix)
    assert any(s["action"].startswith(LONG_WAIT_ACTION) for s in SCENARIOS["03b ttl-expiry"]["steps"])

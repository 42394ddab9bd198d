"""The browser module's own codec (clasp_fast/browser/clasp-p2p.js) against the conformance vectors.

Every frame of the four vector files is decoded by clasp-p2p.js (under Node) and by clasp_fast's
compiled codec; the results must agree after the documented JavaScript number rule (a JS number is
an f64; an i64 arrives as a number when it is a safe integer, as a BigInt beyond 2^53). Every frame
the JS side decodes is re-encoded by it and must decode (with clasp_fast) to the same message.
Malformed frames must be rejected with a ClaspDecodeError naming the offset and field, never crash.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import os

import pytest

import clasp_fast
from clasp_fast.codec import decode
from clasp_fast.errors import DecodeError
from clasp_fast.wire.neutral import to_neutral

from .spec_data import load_json

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "browser" / "codec_check.mjs"
# The copy of the module that ships in the package under test (source tree or installed wheel).
MODULE = Path(clasp_fast.__file__).resolve().parent / "browser" / "clasp-p2p.js"
FILES = ["reference_rust", "official_js", "official_py", "handcrafted"]
SAFE = 2**53 - 1

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None and os.environ.get("CLASP_REQUIRE_NODE") != "1",
    reason="node is not installed (CLASP_REQUIRE_NODE=1 makes this a failure)")


def _is_v0(frame: bytes) -> bool:
    header = 12 if len(frame) > 1 and frame[1] & 0x20 else 4
    return len(frame) > header and (0x80 <= frame[header] <= 0x8F or frame[header] in (0xDE, 0xDF))


def _float_key(bits: str):
    x = struct.unpack(">d", bytes.fromhex(bits))[0]
    return ("nan",) if math.isnan(x) else ("float", bits)


def js_view(node):
    """A neutral message as JavaScript sees it: ints become floats unless beyond 2^53; NaNs compare equal."""
    if isinstance(node, dict):
        if node.get("t") == "int" and isinstance(node.get("v"), int):
            v = node["v"]
            return _float_key(struct.pack(">d", float(v)).hex()) if abs(v) <= SAFE else ("int", v)
        if node.get("t") == "int" and isinstance(node.get("v"), dict):
            return ("int", int(node["v"]["$int"]))
        if node.get("t") == "float":
            return _float_key(node["bits"])
        if set(node) == {"$int"}:
            return int(node["$int"])
        return {k: js_view(v) for k, v in node.items()}
    if isinstance(node, list):
        return [js_view(v) for v in node]
    if isinstance(node, str) and len(node) == 16 and all(c in "0123456789abcdef" for c in node):
        return _float_key(node)  # samples, epsilon and range are f64 bit strings
    return node


@pytest.fixture(scope="module")
def cases():
    frames = []
    for name in FILES:
        for entry in load_json(f"vectors/{name}.json"):
            frames.append((f"{name}:{entry['name']}", bytes.fromhex(entry["frame_hex"])))
    result = subprocess.run(["node", str(SCRIPT)], input=json.dumps([f.hex() for _, f in frames]),
                            capture_output=True, text=True, timeout=60, check=True,
                            env={**os.environ, "CLASP_P2P_JS": str(MODULE)})
    return list(zip(frames, json.loads(result.stdout), strict=True))


def test_every_vector_frame_is_handled(cases):
    assert len(cases) >= 290
    crashes = [(name, r["crash"]) for (name, _), r in cases if "crash" in r]
    assert crashes == []


def test_decoding_agrees_with_clasp_fast(cases):
    checked = 0
    mismatches = []
    for (name, frame), result in cases:
        if _is_v0(frame):
            continue
        try:
            expected = to_neutral(decode(frame))
        except DecodeError:
            continue
        if "neutral" not in result:
            mismatches.append((name, "JS rejected", result))
            continue
        checked += 1
        if js_view(result["neutral"]) != js_view(expected):
            mismatches.append((name, result["neutral"], expected))
    assert mismatches == []
    assert checked >= 250


def test_malformed_frames_are_rejected_with_offset_and_field(cases):
    rejected = 0
    for (name, frame), result in cases:
        if _is_v0(frame):
            continue
        try:
            decode(frame)
        except DecodeError:
            assert "error" in result, f"{name}: clasp_fast rejects it, clasp-p2p.js decoded {result}"
            assert isinstance(result["offset"], int) and 0 <= result["offset"] <= len(frame)
            assert result["field"] and "offset" in result["error"]
            rejected += 1
    assert rejected >= 10


def test_legacy_msgpack_payloads_are_refused_clearly(cases):
    v0 = [(name, r) for (name, frame), r in cases if _is_v0(frame)]
    assert v0, "the vectors contain v0 payloads"
    for name, result in v0:
        assert "legacy MessagePack" in result.get("error", ""), name


def test_reencoding_round_trips_through_clasp_fast(cases):
    checked = 0
    for (name, _frame), result in cases:
        if "reencoded" not in result:
            continue
        again = to_neutral(decode(bytes.fromhex(result["reencoded"])))
        assert js_view(again) == js_view(result["neutral"]), name
        checked += 1
    assert checked >= 250


def test_i64_rule_at_the_2_53_boundary(cases):
    by_name = {name: r for (name, _), r in cases}
    exact = by_name["reference_rust:rs_set_int_2pow53_plus1"]["neutral"]["value"]
    assert exact == {"t": "int", "v": {"$int": "9007199254740993"}}  # a BigInt, not rounded
    small = by_name["reference_rust:rs_set_int_42"]["neutral"]["value"]
    assert small["t"] == "float" and struct.unpack(">d", bytes.fromhex(small["bits"]))[0] == 42.0  # a number
    # Re-encoding keeps a BigInt an i64 and sends a number as f64 (the official JS rule).
    assert by_name["reference_rust:rs_set_int_2pow53_plus1"]["reencoded"].endswith("0020000000000001")
    assert by_name["reference_rust:rs_set_int_42"]["reencoded"][10:12] == "07"

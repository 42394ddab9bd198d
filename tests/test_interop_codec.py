"""Live codec interop with the official clients (docs/protocol.md §11).

* JS: ``@clasp-to/core`` 3.3.2 under Node, through ``tests/node/codec_peer.mjs`` (one process
  for the module, JSON lines on stdin/stdout).
* Python: ``clasp-to`` 4.2.0, whose codec lives in ``Clasp._encode`` / ``Clasp._decode``
  (no connection is made).

Both directions: frames the official client encodes decode in clasp_fast to the same message,
and frames clasp_fast encodes decode in the official client to the same message, within what
each client supports. The documented disagreements are asserted as such.

Without Node (or without ``npm ci`` in tests/node) the JS tests skip, unless
``CLASP_REQUIRE_NODE=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from clasp_fast import codec
from clasp_fast.wire import neutral
from clasp_fast.errors import DecodeError
from clasp_fast.messages import (
    MISSING,
    Ack,
    Bundle,
    Error,
    FederationSync,
    Hello,
    Ping,
    Publish,
    Query,
    Replay,
    Result,
    Set,
    SignalInfo,
    Snapshot,
    Subscribe,
    SubscribeOptions,
    Sync,
    Ttl,
    Unsubscribe,
    Welcome,
    Get,
    Param,
    Pong,
)
from tests.spec_data import load_json

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"
JS_VECTORS = load_json("vectors/official_js.json")
RUST_VECTORS = load_json("vectors/reference_rust.json")
HANDCRAFTED = {v["name"]: v for v in load_json("vectors/handcrafted.json")}


# --- the Node peer -------------------------------------------------------------------------


class NodeCodecPeer:
    """``codec_peer.mjs`` in a Node subprocess; every call waits at most ``timeout`` seconds."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.process = subprocess.Popen(
            [shutil.which("node"), "codec_peer.mjs"], cwd=NODE_DIR, text=True, encoding="utf-8",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(json.loads(line))
        self.replies.put(None)

    def call(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        try:
            reply = self.replies.get(timeout=self.timeout)
        except queue.Empty:
            raise AssertionError(f"Node codec peer did not answer {request} in {self.timeout} s") from None
        if reply is None:
            raise AssertionError(f"Node codec peer exited: {self.process.stderr.read()}")
        return reply

    def encode(self, message: dict, options: dict | None = None) -> bytes:
        reply = self.call(op="encode", message=message, options=options or {})
        assert reply["ok"], f"JS could not encode {message}: {reply['error']}"
        return bytes.fromhex(reply["frame_hex"])

    def decode(self, frame: bytes) -> dict:
        """``{"ok", "flags", "message", "timestamp"?}`` or ``{"ok": False, "error"}``."""
        return self.call(op="decode", frame_hex=frame.hex())

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture(scope="module")
def js():
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@clasp-to" / "core").is_dir():
        message = "Node or tests/node/node_modules missing (run `npm ci` in tests/node)"
        if os.environ.get("CLASP_REQUIRE_NODE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    peer = NodeCodecPeer()
    assert peer.call(op="version") == {"ok": True, "package": "@clasp-to/core", "version": "3.3.2"}
    yield peer
    peer.close()


# --- clasp_fast messages in the JS client's shape ------------------------------------------
# Built on clasp_fast.wire.neutral: the neutral form, re-shaped the way @clasp-to/core decodes it
# (camelCase names, plain numbers, absent-or-false fields left out, $-markers as in
# official_js.json). Numbers are compared as JS numbers (f64): see js_numbers().


def js_value(tagged: dict) -> Any:
    kind = tagged["t"]
    if kind == "float":
        return js_float(neutral.float_from_bits(tagged["bits"]))
    if kind == "bytes":
        return {"$bytes": tagged["hex"]}
    if kind == "array":
        return [js_value(item) for item in tagged["v"]]
    if kind == "map":
        return {key: js_value(item) for key, item in tagged["v"].items()}
    return tagged.get("v")  # null, bool, int, str


def js_float(x: float) -> Any:
    if math.isnan(x):
        return {"$float": "NaN"}
    if math.isinf(x):
        return {"$float": "Infinity" if x > 0 else "-Infinity"}
    if x == 0 and math.copysign(1.0, x) < 0:
        return {"$float": "-0"}
    return x


def js_signal(info: dict) -> dict:
    out = {"address": info["address"], "type": info["signal_type"]}
    out.update({k: info[k] for k in ("datatype", "access") if k in info})
    if "meta" in info:
        meta = dict(info["meta"])
        if "range" in meta:
            meta["range"] = [neutral.float_from_bits(bits) for bits in meta["range"]]
        if "default" in meta:
            meta["default"] = js_value(meta["default"])
        out["meta"] = meta
    return out


JS_FEATURES = ("param", "event", "stream", "gesture", "timeline")  # JS knows no "federation"


def to_js(n: dict) -> dict:
    """What @clasp-to/core's decoder yields for the message whose neutral form is ``n``."""
    kind = n["type"]
    out: dict = {"type": kind}
    if kind == "SET":  # JS has no TTL (docs/protocol.md §11.3); lock/unlock only when true
        out.update(address=n["address"], value=js_value(n["value"]))
        out.update({k: n[k] for k in ("revision",) if k in n})
        out.update({k: True for k in ("lock", "unlock") if n.get(k)})
    elif kind == "PUBLISH":
        # The wire always carries a signal and a phase; encoders fill event / start (§6.7).
        out.update(signal="event", phase="start")
        out.update({k: n[k] for k in ("address", "signal", "phase", "timestamp", "id", "rate")
                    if k in n})
        if "value" in n:
            out["value"] = js_value(n["value"])
        if "samples" in n:
            out["samples"] = [js_float(neutral.float_from_bits(b)) for b in n["samples"]]
    elif kind in ("HELLO", "WELCOME"):
        out.update({k: v for k, v in n.items() if k not in ("type", "features")})
        out["features"] = [f for f in n["features"] if f in JS_FEATURES]
    elif kind == "ANNOUNCE":
        out.update(namespace=n["namespace"], signals=[js_signal(s) for s in n["signals"]])
    elif kind == "RESULT":
        out["signals"] = [js_signal(s) for s in n["signals"]]
    elif kind == "SUBSCRIBE":
        out.update(id=n["id"], pattern=n["pattern"])
        if n["types"]:
            out["types"] = n["types"]
        options = n.get("options") or {}
        renamed = {"max_rate": "maxRate", "epsilon": "epsilon", "history": "history",
                   "window": "window"}
        js_options = {renamed[k]: v for k, v in options.items()}
        if "epsilon" in js_options:
            js_options["epsilon"] = neutral.float_from_bits(js_options["epsilon"])
        if js_options:
            out["options"] = js_options
    elif kind == "SNAPSHOT":
        out["params"] = [dict(p, value=js_value(p["value"])) for p in n["params"]]
    elif kind == "BUNDLE":
        out["messages"] = [to_js(m) for m in n["messages"]]
        out.update({k: n[k] for k in ("timestamp",) if k in n})
    elif kind in ("ACK", "ERROR"):
        out.update({("correlationId" if k == "correlation_id" else k): v
                    for k, v in n.items() if k != "type"})
    else:  # UNSUBSCRIBE, GET, QUERY, SYNC, PING, PONG: same names, plain fields
        out.update({k: v for k, v in n.items() if k != "type"})
    return out


def js_numbers(value: Any) -> Any:
    """Every number as a JS number (f64): ints beyond 2**53 round, like Number(BigInt)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [js_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: js_numbers(item) for key, item in value.items()}
    return value


def assert_same_in_js(decoded_by_js: dict, message) -> None:
    assert js_numbers(decoded_by_js) == js_numbers(to_js(neutral.to_neutral(message)))


def js_supports(neutral_message: dict) -> bool:
    """JS has no REPLAY or FEDERATION_SYNC (docs/protocol.md §11.5)."""
    return neutral_message["type"] not in ("REPLAY", "FEDERATION_SYNC")


# --- JS -> clasp_fast ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", JS_VECTORS, ids=[v["name"] for v in JS_VECTORS])
def test_js_encoded_frames_decode_in_clasp_fast(js, vector):
    frame = js.encode(vector["message"], vector.get("options"))
    assert frame.hex() == vector["frame_hex"]  # the live client still encodes as recorded

    decoded = codec.decode_frame(frame)
    by_js = js.decode(frame)

    assert by_js["ok"]
    assert_same_in_js(by_js["message"], decoded.message)
    assert decoded.qos == by_js["flags"]["qos"]
    assert decoded.size == len(frame)
    if "timestamp" in by_js:
        assert decoded.timestamp == int(by_js["timestamp"])
    else:
        assert decoded.timestamp is None
    # Nothing lost on the way in: clasp_fast re-encodes the JS frame byte for byte.
    assert codec.encode(decoded.message, qos=decoded.qos, timestamp=decoded.timestamp) == frame


def test_js_integers_arrive_as_f64(js):
    frame = js.encode({"type": "SET", "address": "/n", "value": 42})
    message = codec.decode(frame)
    assert message.value == 42.0 and type(message.value) is float  # §4.1: JS has no int types
    nested = codec.decode(js.encode({"type": "SET", "address": "/n", "value": {"list": [1, -2]}}))
    assert nested.value == {"list": [1.0, -2.0]}
    assert all(type(x) is float for x in nested.value["list"])


def test_js_bigint_value_arrives_as_null(js):
    frame = js.encode({"type": "SET", "address": "/b", "value": {"$bigint": "5"}})
    assert codec.decode(frame) == Set("/b", None)  # §4.1: BigInt is encoded as null


def test_js_ttl_never_reaches_the_wire(js):
    frame = js.encode({"type": "SET", "address": "/ttl", "value": 1, "ttl": 30})
    assert codec.decode(frame) == Set("/ttl", 1.0)  # §11.3: ttl silently dropped


def test_js_drops_the_federation_feature(js):
    frame = js.encode({"type": "HELLO", "version": 1, "name": "n",
                       "features": ["param", "federation"]})
    assert codec.decode(frame).features == ["param"]  # §11.4


def test_js_null_payload_is_a_value_and_no_payload_is_none(js):
    null = codec.decode(js.encode({"type": "PUBLISH", "address": "/c", "signal": "event",
                                   "payload": None}))
    bare = codec.decode(js.encode({"type": "PUBLISH", "address": "/c", "signal": "event"}))
    assert null.value is None  # indicator 1 + null (§11.10)
    assert bare.value is MISSING  # indicator 0


def test_js_default_qos_differs_for_timeline_and_unsignalled_publish(js):
    # §2.1: the JS encoder puts QoS 1 where clasp_fast (like Rust) puts 2 / 0; the router ignores it.
    cases = [({"type": "PUBLISH", "address": "/t", "signal": "timeline"},
              Publish("/t", signal="timeline"), 2),
             ({"type": "PUBLISH", "address": "/x", "value": 1}, Publish("/x", value=1), 0)]
    for js_message, ours, our_qos in cases:
        assert codec.decode_frame(js.encode(js_message)).qos == 1
        assert codec.default_qos(ours) == our_qos
        assert codec.decode_frame(codec.encode(ours)).qos == our_qos


def test_js_cannot_encode_replay_or_federation_sync(js):
    for message in [{"type": "REPLAY", "pattern": "/a/**"},
                    {"type": "FEDERATION_SYNC", "op": 1}]:
        reply = js.call(op="encode", message=message)
        assert reply["ok"] is False
        assert "Unknown message type" in reply["error"]


# --- clasp_fast -> JS ----------------------------------------------------------------------

OURS = [neutral.from_neutral(v["message"]) for v in RUST_VECTORS] + [
    Set("/a/int", 7),
    Set("/a/map", {"k": [1, 2.5, "s", b"\x00\xff", None, True, {}]}),
    Set("/lock", "x", revision=3, lock=True, unlock=True),
    Publish("/audio", signal="stream", samples=[0.0, -1.5, 1e-300], rate=48000, timestamp=9),
    Publish("/touch/0", signal="gesture", phase="move", id=4, value={"x": 1.5}),
    Publish("/cue", signal="event", value=None),
    Hello("js-peer", features=["param", "event"], token="tok"),
    Welcome("6f1c2d3e-0000-4000-8000-000000000001", "Clasp Router",
            ["param", "event", "stream", "gesture", "timeline"], 1_700_000_000_000_000),
    Subscribe(5, "/lumen/**", types=["param", "gesture"],
              options=SubscribeOptions(max_rate=30, epsilon=0.25)),
    Subscribe(6, "/x"),
    Unsubscribe(5),
    Get("/a"),
    Snapshot([Param("/a", 1.5, 2, writer="s", timestamp=3), Param("/b", [1], 4)]),
    Bundle([Set("/l/1", 1.0), Bundle([Ping()])], timestamp=42),
    Sync(1, 2, 3),
    Sync(1, t3=3),
    Ping(),
    Pong(),
    Ack(locked=False),
    Error(404, "not found", address="/x", correlation_id=7),
    Query("/a/*"),
    Result([SignalInfo("/a", "stream", datatype="f64"), SignalInfo("/b", "gesture", access="r")]),
]
OURS_SUPPORTED = [m for m in OURS if js_supports(neutral.to_neutral(m))]


@pytest.mark.parametrize("message", OURS_SUPPORTED, ids=repr)
def test_clasp_fast_frames_decode_in_js(js, message):
    frame = codec.encode(message)
    by_js = js.decode(frame)

    assert by_js["ok"], by_js
    assert_same_in_js(by_js["message"], message)
    assert by_js["flags"] == {"qos": codec.default_qos(message), "hasTimestamp": False,
                              "encrypted": False, "compressed": False, "version": 1}


def test_clasp_fast_frame_timestamp_and_qos_reach_js(js):
    by_js = js.decode(codec.encode(Set("/ts", 1.0), qos=2, timestamp=1_700_000_000_000_000))
    assert by_js["timestamp"] == "1700000000000000"
    assert by_js["flags"]["qos"] == 2 and by_js["flags"]["hasTimestamp"] is True


@pytest.mark.parametrize("value", [2**53 + 1, 2**63 - 1, -(2**63)])
def test_clasp_fast_i64_beyond_2pow53_loses_precision_in_js(js, value):
    by_js = js.decode(codec.encode(Set("/big", value)))
    assert by_js["message"]["value"] != value  # §11.2: i64 -> Number rounds
    assert float(by_js["message"]["value"]) == float(value)


def test_clasp_fast_ttl_is_ignored_by_js(js):
    by_js = js.decode(codec.encode(Set("/ttl", 0.5, revision=7, ttl=Ttl.sliding(35))))
    assert by_js["message"] == {"type": "SET", "address": "/ttl", "value": 0.5, "revision": 7}


def test_clasp_fast_federation_feature_is_dropped_by_js(js):
    by_js = js.decode(codec.encode(Hello("n", features=["param", "federation"])))
    assert by_js["message"]["features"] == ["param"]


@pytest.mark.parametrize("message", [m for m in OURS if m not in OURS_SUPPORTED], ids=repr)
def test_js_cannot_decode_replay_or_federation_sync(js, message):
    by_js = js.decode(codec.encode(message))
    assert by_js["ok"] is False
    assert f"Unknown message type: 0x{type(message).TYPE:x}" in by_js["error"]


def test_invalid_utf8_is_replaced_by_js_and_rejected_by_clasp_fast(js):
    frame = bytes.fromhex(HANDCRAFTED["hc_invalid_utf8_string"]["frame_hex"])
    by_js = js.decode(frame)
    assert by_js["ok"] and "\ufffd" in json.dumps(by_js["message"], ensure_ascii=False)
    with pytest.raises(DecodeError):  # §3: conforming decoders reject
        codec.decode(frame)


# --- the Python client (clasp-to) ----------------------------------------------------------


@pytest.fixture(scope="module")
def py():
    """clasp-to's codec: methods of an unconnected client."""
    from clasp import Clasp

    return Clasp("ws://127.0.0.1:9", reconnect=False)


# (message as clasp-to takes it, what clasp_fast must decode from clasp-to's frame)
PY_TO_CLASP_FAST = [
    ({"type": "SET", "address": "/v", "value": 42}, Set("/v", 42)),
    ({"type": "SET", "address": "/v", "value": -(2**63)}, Set("/v", -(2**63))),
    ({"type": "SET", "address": "/v", "value": 0.1}, Set("/v", 0.1)),
    ({"type": "SET", "address": "/v", "value": "h\u00e9"}, Set("/v", "h\u00e9")),
    ({"type": "SET", "address": "/v", "value": b"\x00\x01"}, Set("/v", b"\x00\x01")),
    ({"type": "SET", "address": "/v", "value": [1, [True, None], {"k": 2.5}]},
     Set("/v", [1, [True, None], {"k": 2.5}])),
    ({"type": "SET", "address": "/v", "value": None, "revision": 2**64 - 1, "lock": True},
     Set("/v", None, revision=2**64 - 1, lock=True)),
    ({"type": "SET", "address": "/v", "value": 1, "ttl": 30}, Set("/v", 1, ttl=Ttl.sliding(30))),
    ({"type": "SET", "address": "/v", "value": 1, "ttl": 5, "absolute": True},
     Set("/v", 1, ttl=Ttl.absolute(5))),
    ({"type": "SET", "address": "/v", "value": 1, "ttl": 0}, Set("/v", 1, ttl=Ttl.never())),
    ({"type": "PUBLISH", "address": "/e", "signal": "event", "payload": {"cue": "go"}},
     Publish("/e", signal="event", phase="start", value={"cue": "go"})),
    ({"type": "PUBLISH", "address": "/g", "signal": "gesture", "phase": "end", "id": 3,
      "timestamp": 10, "payload": {"x": 1.0}},
     Publish("/g", signal="gesture", phase="end", id=3, timestamp=10, value={"x": 1.0})),
    ({"type": "HELLO", "name": "py", "features": ["param", "gesture"], "token": "t"},
     Hello("py", features=["param", "gesture"], token="t")),
    ({"type": "SUBSCRIBE", "id": 9, "pattern": "/a/**", "types": ["param", "stream"],
      "options": {"maxRate": 10, "epsilon": 0.5, "history": 4}},
     Subscribe(9, "/a/**", types=["param", "stream"],
               options=SubscribeOptions(max_rate=10, epsilon=0.5, history=4))),
    ({"type": "UNSUBSCRIBE", "id": 9}, Unsubscribe(9)),
    ({"type": "GET", "address": "/a"}, Get("/a")),
    ({"type": "PING"}, Ping()),
    ({"type": "PONG"}, Pong()),
    # Sent as legacy v0 MessagePack inside a version-1 frame (§7.3):
    ({"type": "QUERY", "pattern": "/a/*"}, Query("/a/*")),
    ({"type": "SYNC", "t1": 5}, Sync(5)),
    ({"type": "BUNDLE", "timestamp": None,
      "messages": [{"type": "SET", "address": "/x", "value": 1, "lock": False, "unlock": False}]},
     Bundle([Set("/x", 1)])),
]


@pytest.mark.parametrize("message, expected", PY_TO_CLASP_FAST,
                         ids=[f"{m['type']}-{i}" for i, (m, _) in enumerate(PY_TO_CLASP_FAST)])
def test_python_client_frames_decode_in_clasp_fast(py, message, expected):
    frame = py._encode(message)
    assert frame[1] == 0x01  # clasp-to's fixed flags byte (§11.11)
    assert codec.decode(frame) == expected


def test_python_client_drops_gesture_and_timeline_types_and_window(py):
    # §11.9: ["gesture"] becomes mask 0x00, which means "all types"; window is never sent.
    frame = py._encode({"type": "SUBSCRIBE", "id": 1, "pattern": "/t/**", "types": ["gesture"],
                        "options": {"window": 500}})
    assert codec.decode(frame) == Subscribe(1, "/t/**", types=[])


def test_python_client_cannot_send_samples_or_rate(py):
    frame = py._encode({"type": "PUBLISH", "address": "/s", "signal": "stream",
                        "samples": [1.0, 2.0], "rate": 48000})
    assert codec.decode(frame) == Publish("/s", signal="stream", phase="start")  # §11.7


def test_python_client_tuple_is_sent_as_null(py):
    assert codec.decode(py._encode({"type": "SET", "address": "/t", "value": (1, 2)})).value is None


# (clasp_fast message, what clasp-to's decoder returns for clasp_fast's frame)
CLASP_FAST_TO_PY = [
    (Set("/v", 42), {"type": "SET", "address": "/v", "value": 42, "revision": None,
                     "lock": False, "unlock": False, "ttl": None, "absolute": False}),
    (Set("/v", {"a": [1.5, "x", b"\x01", None]}, revision=2**64 - 1, unlock=True,
         ttl=Ttl.absolute(9)),
     {"type": "SET", "address": "/v", "value": {"a": [1.5, "x", b"\x01", None]},
      "revision": 2**64 - 1, "lock": False, "unlock": True, "ttl": 9, "absolute": True}),
    (Publish("/g", signal="gesture", phase="cancel", id=2, timestamp=7, value=3),
     {"type": "PUBLISH", "address": "/g", "signal": "gesture", "value": 3, "timestamp": 7,
      "id": 2, "phase": "cancel"}),
    (Welcome("sess", "Router", ["param", "timeline"], 123, token="tok"),
     {"type": "WELCOME", "version": 1, "session": "sess", "name": "Router",
      "features": ["param", "timeline"], "time": 123, "token": "tok"}),
    (Snapshot([Param("/a", True, 1, writer="w", timestamp=2), Param("/b", -1, 5)]),
     {"type": "SNAPSHOT", "params": [
         {"address": "/a", "value": True, "revision": 1, "writer": "w", "timestamp": 2},
         {"address": "/b", "value": -1, "revision": 5, "writer": None, "timestamp": None}]}),
    (Error(400, "conflict", address="/a"),
     {"type": "ERROR", "code": 400, "message": "conflict", "address": "/a"}),
    (Result([SignalInfo("/a", "param", datatype="f32", access="rw")]),
     {"type": "RESULT", "signals": [
         {"address": "/a", "type": "param", "datatype": "f32", "access": "rw"}]}),
    (Query("/a/**"), {"type": "QUERY", "pattern": "/a/**"}),
    (Ping(), {"type": "PING"}),
    (Pong(), {"type": "PONG"}),
]


@pytest.mark.parametrize("message, expected", CLASP_FAST_TO_PY, ids=[repr(m) for m, _ in CLASP_FAST_TO_PY])
def test_clasp_fast_frames_decode_in_python_client(py, message, expected):
    assert py._decode(codec.encode(message)) == expected


@pytest.mark.parametrize("message", [
    Ack(address="/a", revision=1), Sync(1, 2, 3), Bundle([Ping()]), Hello("x"),
    Subscribe(1, "/a"), Unsubscribe(1), Get("/a"), Replay("/a/**"), FederationSync(2),
], ids=repr)
def test_python_client_cannot_decode(py, message):
    # §11.6: including ACK, which the router sends after every SET.
    from clasp.client import ClaspError

    with pytest.raises(ClaspError, match=f"Unknown message type: 0x{type(message).TYPE:02x}"):
        py._decode(codec.encode(message))


def test_python_client_ignores_error_correlation_id(py):
    decoded = py._decode(codec.encode(Error(401, "held", address="/a", correlation_id=9)))
    assert decoded == {"type": "ERROR", "code": 401, "message": "held", "address": "/a"}


def test_python_client_misreads_samples(py):
    # §11.7: indicator 2 is not understood; the sample bytes are read as timestamp/id.
    message = Publish("/s", signal="stream", samples=[1.5], timestamp=1000, id=1)
    decoded = py._decode(codec.encode(message))
    assert decoded["value"] is None
    assert decoded["timestamp"] != 1000

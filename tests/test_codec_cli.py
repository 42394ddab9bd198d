"""The ``encode`` / ``decode`` subcommands, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clasp_fast import codec
from clasp_fast.messages import Publish, Set
from clasp_fast.wire.neutral import from_neutral, to_neutral

from .spec_data import load_json

RUST = {v["name"]: v for v in load_json("vectors/reference_rust.json")}


def run(*args, stdin: bytes | str = b""):
    if isinstance(stdin, str):
        stdin = stdin.encode()
    return subprocess.run([sys.executable, "-m", "clasp_fast", *args], input=stdin,
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("strict", [[], ["--neutral"]])
def test_encode_prints_the_reference_frame(strict):
    vector = RUST["rs_set_ttl_sliding_rev"]
    result = run("encode", *strict, stdin=json.dumps(vector["message"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == vector["frame_hex"]


def test_encode_options_set_qos_and_timestamp():
    vector = RUST["rs_set_with_frame_timestamp_commit"]
    result = run("encode", "--qos", "2", "--timestamp", str(0x0102030405060708),
                 stdin=json.dumps(vector["message"]))
    assert result.stdout.decode().strip() == vector["frame_hex"]


def test_decode_hex_argument_stdin_raw_and_file(tmp_path):
    vector = RUST["rs_snapshot_router"]
    by_arg = run("decode", "--neutral", vector["frame_hex"])
    by_stdin = run("decode", "--neutral", stdin=vector["frame_hex"] + "\n")
    raw = bytes.fromhex(vector["frame_hex"])
    by_raw = run("decode", "--neutral", "--raw", stdin=raw)
    path = tmp_path / "frame.bin"
    path.write_bytes(raw)
    by_file = run("decode", "--neutral", "--file", str(path))
    outputs = {r.stdout for r in (by_arg, by_stdin, by_raw, by_file)}
    assert len(outputs) == 1
    decoded = json.loads(outputs.pop())
    assert decoded == vector["message"]


def test_decode_header_and_all():
    frames = codec.encode(Set("/a", 1), timestamp=7) + codec.encode(Set("/b", 2.5))
    result = run("decode", "--all", "--header", frames.hex())
    out = json.loads(result.stdout)
    assert [f["message"]["address"] for f in out] == ["/a", "/b"]
    assert out[0]["timestamp"] == 7 and out[1]["timestamp"] is None and out[0]["qos"] == 1


@pytest.mark.parametrize(
    "args, stdin, words",
    [
        (("decode", "5341000a210800022f680002fffe"), "", ["UTF-8", "byte offset 12", "value"]),
        (("decode", "zz"), "", ["not hex"]),
        (("decode", "--file", "/nonexistent/frame.bin"), "", ["cannot read"]),
        (("encode",), "{not json", ["not JSON"]),
        (("encode",), '{"type": "SET"}', ["address"]),
        (("encode",), '{"type": "NOPE"}', ["NOPE"]),
        (("encode", "--neutral"), '{"type": "SET", "address": "/a", "value": 5}', ["tagged value"]),
        (("encode",), '{"type": "SET", "address": "/a", "value": {"$bytes": "zz"}}', ["$bytes", "hex"]),
        (("encode",), '{"type": "PUBLISH", "address": "/a", "samples": ["x"]}', ["samples"]),
        (("encode",), '{"type": "SET", "address": "/a", "value": {"t": "int", "v": 1e30}}',
         ["int"]),
        (("encode",), '{"type": "SET", "address": "/a", "value": {"t": "int", "v": '
                      + str(2**64) + '}}', ["i64"]),
    ],
)
def test_bad_input_is_a_clear_error_and_exit_1(args, stdin, words):
    result = run(*args, stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == b""
    err = result.stderr.decode()
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_encode_reads_plain_json_values():
    result = run("encode", stdin='{"type":"SET","address":"/a","value":0.5}')
    assert result.returncode == 0, result.stderr
    assert codec.decode(bytes.fromhex(result.stdout.decode())) == Set("/a", 0.5)
    # JSON keeps int and float apart; bytes are {"$bytes": hex}; nested values are plain too.
    value = {"n": 5, "x": 5.0, "b": {"$bytes": "00ff"}, "list": [True, None, "s"]}
    result = run("encode", stdin=json.dumps({"type": "SET", "address": "/a", "value": value}))
    assert result.returncode == 0, result.stderr
    decoded = codec.decode(bytes.fromhex(result.stdout.decode()))
    assert decoded.value == {"n": 5, "x": 5.0, "b": b"\x00\xff", "list": [True, None, "s"]}
    assert type(decoded.value["n"]) is int and type(decoded.value["x"]) is float


def test_decode_prints_plain_values_unless_neutral():
    frame = codec.encode(Publish("/s", signal="stream", samples=[1.0, 2.5]))
    plain = json.loads(run("decode", frame.hex()).stdout)
    assert plain["samples"] == [1.0, 2.5]
    frame = codec.encode(Set("/a", {"gain": 0.5, "raw": b"\x01", "n": 3}))
    plain = json.loads(run("decode", frame.hex()).stdout)
    assert plain["value"] == {"gain": 0.5, "raw": {"$bytes": "01"}, "n": 3}
    neutral = json.loads(run("decode", "--neutral", frame.hex()).stdout)
    assert neutral["value"]["t"] == "map"
    assert neutral["value"]["v"]["gain"] == {"t": "float", "bits": "3fe0000000000000"}


@pytest.mark.parametrize("name", sorted(RUST))
def test_plain_form_round_trips_every_reference_message(name):
    # What `decode` prints (through JSON text, as a user would copy it) reads back as the same message.
    message = codec.decode(bytes.fromhex(RUST[name]["frame_hex"]))
    text = json.dumps(to_neutral(message, plain=True))
    assert from_neutral(json.loads(text), plain=True) == message


def test_decode_output_piped_into_encode_gives_the_frame_back():
    vector = RUST["rs_set_ttl_sliding_rev"]
    plain = run("decode", vector["frame_hex"])
    again = run("encode", stdin=plain.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode().strip() == vector["frame_hex"]

"""Ordinary mistakes on the command line: one line on stderr that names the fix, a non-zero exit status,
and nothing started (no relay, no peer connection)."""

from __future__ import annotations

import socket
import time

import pytest

from .cli_process import free_port, run_cli

PEER = ("peer", "--id", "viewer", "--watch", "/sensor/**")


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (("peer", "--id", "v", "--watch", "/a", "--relay", "127.0.0.1:7330"), ["--relay", "ws://127.0.0.1:7330"]),
        (("peer", "--id", "v", "--watch", "/a", "--relay", "http://127.0.0.1:7330"), ["ws://127.0.0.1:7330"]),
        (("peer", "--id", "v", "--watch", "/a", "--relay", "https://relay.example.org"), ["wss://relay.example.org"]),
        (("peer", "--id", "v", "--watch", "/a", "--relay", "ws://127.0.0.1:99999"), ["99999", "1 to 65535"]),
        (("peer", "--id", "v", "--watch", "/a//b"), ["--watch", "empty segment", "/a//b"]),
        (("peer", "--id", "v", "--watch", "no-slash"), ["--watch", "start with '/'"]),
        (("peer", "--id", "v", "--stream", "sensor/accel"), ["--stream", "start with '/'"]),
        (("peer", "--id", "a/b", "--watch", "/a"), ["--id", "one address segment", "'a-b'"]),
        (("peer", "--id", "", "--watch", "/a"), ["--id", "empty"]),
        (("peer", "--id", "s", "--stream", "/a", "--to", "x/y"), ["--to", "one address segment"]),
        (("peer", "--id", "s", "--stream", "/a", "--rate", "0"), ["--rate", "greater than 0"]),
        (("peer", "--id", "s", "--stream", "/a", "--seconds", "-1"), ["--seconds", "0 or more"]),
        (("peer", "--id", "s", "--stream", "/a", "--port", "0"), ["--port", "1 to 65535"]),
        (("peer", "--id", "s", "--stream", "/a", "--busy-poll", "-2"), ["--busy-poll", "0 or more"]),
        (("relay", "--port", "70000"), ["--port", "0 to 65535"]),
        (("bench", "--busy-poll", "-1"), ["--busy-poll", "0 or more"]),
        (("bench", "--relay", "127.0.0.1:7330"), ["--relay", "ws://127.0.0.1:7330"]),
        (("bench", "--paths", "p2p_fast"), ["--paths", "p2p_fast", "p2p_batched"]),
        (("encode", "--timestamp", "-5"), ["--timestamp", "0 or more"]),
    ],
)
def test_a_bad_argument_is_one_line_naming_the_fix(args, words):
    started = time.monotonic()
    result = run_cli(*args, timeout=60)
    line = one_error_line(result)
    assert result.returncode == 2
    assert result.stdout == ""  # nothing started, nothing printed
    assert line.startswith(f"clasp-fast {args[0]}: error: ")
    for word in words:
        assert word in line, line
    assert time.monotonic() - started < 30  # a liveness bound: nothing waited for a network


def test_relay_on_a_port_in_use_is_one_line():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("relay", "--port", str(port))
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith("clasp-fast relay: error: ")
    assert f"port {port}" in line and "in use" in line and "--port" in line


def test_peer_whose_default_port_is_taken_by_something_else_is_one_line():
    # Not a relay and not free: the peer can neither use it nor host a relay there.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(*PEER, "--port", str(port), timeout=90)
    line = one_error_line(result)
    assert result.returncode == 1
    assert f"ws://127.0.0.1:{port}" in line and "in use" in line


def test_peer_against_a_relay_url_where_nothing_listens_is_one_line():
    result = run_cli(*PEER, "--relay", f"ws://127.0.0.1:{free_port()}", timeout=90)
    line = one_error_line(result)
    assert result.returncode == 1
    assert "cannot connect" in line


def test_busy_poll_of_the_peer_command_reaches_its_webrtc_config():
    from clasp_fast.cli import build_parser
    from clasp_fast.cli.peer import _rtc_config

    args = build_parser().parse_args([*PEER, "--busy-poll", "2"])
    assert _rtc_config(args).busy_poll == 0.002
    assert _rtc_config(build_parser().parse_args(list(PEER))).busy_poll == 0.0

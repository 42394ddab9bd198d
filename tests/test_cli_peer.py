"""The ``peer`` command as a user runs it: who hosts the relay, losing and regaining the relay, bounded
runs at any rate, a warning when nobody listens, and a summary on Ctrl-C."""

from __future__ import annotations

import re
import signal
import time

from .cli_process import CliProcess, free_port

PER_SECOND = r"^\d+ msg/s  latency p50 [\d.]+ ms  p99 [\d.]+ ms  p2p (\d+)  relay \d+"


def test_peers_keep_their_p2p_link_while_the_relay_is_gone_and_reconnect_when_it_returns():
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    relay = CliProcess("relay", "--port", str(port))
    watcher = streamer = None
    try:
        relay.wait_for("listening on", 30)
        watcher = CliProcess("peer", "--id", "viewer", "--watch", "/sensor/**", "--relay", url, "--seconds", "90")
        watcher.wait_for("session", 30)
        streamer = CliProcess("peer", "--id", "sensor-1", "--stream", "/sensor/accel", "--rate", "100",
                              "--relay", url, "--to", "viewer", "--seconds", "90")
        streamer.wait_for("P2P link up: viewer", 30)
        watcher.wait_for("P2P link up: sensor-1", 30)

        assert relay.stop(signal.SIGINT) in (0, 130)
        lost = watcher.wait_for(r"^relay lost \(.*\): P2P links stay up, retrying$", 30)
        streamer.wait_for(r"^relay lost", 30)
        # Two more full seconds over P2P without any relay.
        first = watcher.wait_for(PER_SECOND, 10, start=lost + 1)
        second = watcher.wait_for(PER_SECOND, 10, start=first + 1)
        for index in (first, second):
            assert int(re.match(PER_SECOND, watcher.lines[index]).group(1)) > 0, watcher.lines[index]

        relay = CliProcess("relay", "--port", str(port))
        relay.wait_for("listening on", 30)
        watcher.wait_for(rf"^relay back: reconnected to {url}$", 30, start=lost)
        streamer.wait_for(r"^relay back", 30)
        for process in (streamer, watcher):  # the link stayed up all along
            assert not [line for line in process.lines if "P2P link down" in line], process.lines

        assert streamer.stop(signal.SIGINT) == 0
        assert watcher.stop(signal.SIGINT) == 0
    finally:
        for process in (streamer, watcher, relay):
            if process is not None:
                process.close()
    for process in (streamer, watcher):
        assert not [line for line in process.err if "Traceback" in line], process.err
    sent = re.search(r"done: sent (\d+) messages, p2p (\d+), relay (\d+)", "\n".join(streamer.lines))
    received = re.search(r"done: received (\d+) messages, p2p (\d+), relay (\d+)", "\n".join(watcher.lines))
    assert sent and received
    assert int(received.group(1)) > 0 and int(received.group(2)) > 0


def test_the_hosting_peer_says_so_and_ctrl_c_prints_the_summary():
    port = free_port()
    with CliProcess("peer", "--id", "viewer", "--watch", "/sensor/**", "--port", str(port)) as watcher:
        watcher.wait_for(rf"^started the embedded relay on ws://127.0.0.1:{port} \(this peer hosts it\)$", 30)
        watcher.wait_for("the others keep their P2P links", 5)
        watcher.wait_for(r"^0 msg/s  latency -  p2p 0  relay 0$", 30)
        assert watcher.stop(signal.SIGINT) == 0
    assert re.search(r"^done: received 0 messages, p2p 0, relay 0$", "\n".join(watcher.lines), re.M)
    assert watcher.lines[-1] == f"stopping the embedded relay on ws://127.0.0.1:{port}"
    assert not [line for line in watcher.err if line.strip()], watcher.err


def test_seconds_bound_a_slow_stream_and_sending_to_nobody_is_announced():
    # One message every 20 s, for 1 s: the run ends after about a second, not after the next message.
    started = time.monotonic()
    with CliProcess("peer", "--id", "sensor-1", "--stream", "/sensor/accel", "--rate", "0.05", "--seconds", "1",
                    "--port", str(free_port())) as streamer:
        assert streamer.finish(60) == 0
    elapsed = time.monotonic() - started
    out = "\n".join(streamer.lines)
    assert "warning: no watcher known; streaming to relay subscribers of /sensor/accel" in out
    done = re.search(r"done: sent (\d+) messages, p2p 0, relay (\d+) in ([\d.]+) s", out)
    assert done, out
    assert done.group(1) == done.group(2) == "1"
    assert float(done.group(3)) < 1.5
    assert elapsed < 15, elapsed  # start-up included; the old loop slept 20 s before looking at --seconds

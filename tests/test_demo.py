"""The README's first command: ``python -m clasp_fast demo`` streams over P2P through the embedded relay,
labels every peer line, ends with a summary, fits 80 columns, and SIGTERM stops everything it started."""

import re
import signal
import subprocess
import sys
import time

from .cli_process import REPO_ROOT, CliProcess, descendants, running


def test_demo_streams_over_p2p_and_tells_the_story():
    result = subprocess.run(
        [sys.executable, "-m", "clasp_fast", "demo", "--seconds", "3", "--rate", "500", "--no-bench"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert all(len(line) <= 80 for line in out.splitlines()), max(out.splitlines(), key=len)
    # Every line a peer printed carries its name.
    sensor = [line.split("| ", 1)[1] for line in out.splitlines() if line.startswith("sensor-1 | ")]
    viewer = [line.split("| ", 1)[1] for line in out.splitlines() if line.startswith("viewer   | ")]
    assert any(line.startswith("peer sensor-1 on ws://127.0.0.1:") for line in sensor)
    assert any(line.startswith("peer viewer on ws://127.0.0.1:") for line in viewer)
    assert not [line for line in out.splitlines() if re.match(r"\d+ msg/s|sent \d+ messages", line)]
    sent = re.search(r"done: sent (\d+) messages, p2p (\d+), relay (\d+)", "\n".join(sensor))
    assert sent, out
    total, over_p2p, over_relay = map(int, sent.groups())
    assert total > 0 and over_p2p + over_relay == total
    assert over_p2p > 0, "no message travelled over the DataChannel"
    received = re.search(r"done: received (\d+) messages, p2p (\d+), relay (\d+)", "\n".join(viewer))
    assert received, out
    assert sum(int(n) for n in re.findall(r"msg/s .* p2p (\d+) ", "\n".join(viewer))) > 0
    # The summary: sent and received per route, and P2P against the relay in one sentence.
    summary = out[out.index("summary: "):]
    assert f"sensor-1 sent {total:,} messages: {over_p2p:,} over P2P, {over_relay:,} through the relay" in summary
    got, got_p2p, got_relay = map(int, received.groups())
    assert f"viewer received {got:,}: {got_p2p:,} over P2P, {got_relay:,} through the relay" in summary
    assert re.search(r"P2P carried \d+% of what arrived", summary)
    # The first-second relay -> P2P switch is explained, and kept out of the summary's latency.
    assert "first second" in out and "Latency after the first 1 s" in " ".join(summary.split())


def test_sigterm_stops_the_demo_and_the_bench_it_started():
    with CliProcess("demo", "--seconds", "1", "--rate", "100",
                    "--bench-args", "--paths p2p_batched --duration 10 --timeout 90") as demo:
        demo.wait_for(r"^== 3\.", 90)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = descendants(demo.process.pid)
            workers = [pid for pid in started if b"bench.worker" in _cmdline(pid)]
            if len(workers) >= 3:  # relay, sender, receiver
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the bench workers did not start")
        demo.process.send_signal(signal.SIGTERM)
        assert demo.process.wait(60) != 0
        # The bench runs three 10 s phases: left alone it would outlive this bound by far.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(running(pid) for pid in started):
            time.sleep(0.2)
        assert [pid for pid in started if running(pid)] == []


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""

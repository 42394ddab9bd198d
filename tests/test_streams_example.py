"""The runnable examples of docs/streams.md (examples/streams/) run and show what they promise."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "streams" / name), *args],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_slow_receiver_example_bounds_the_backlog_with_conflation_only() -> None:
    runs = {r["mode"]: r for r in map(json.loads, run_example("slow_receiver.py", "--seconds", "1.5").splitlines())}
    assert set(runs) == {"fifo", "receiver", "sender"}
    # 10,000 updates/s against a handler of ~1,000/s: a plain queue keeps thousands waiting, the
    # latest-value queue at most one per address (100); the sender-side lane conflated too.
    assert runs["fifo"]["waiting_at_end"] > 1_000
    assert runs["receiver"]["waiting_at_end"] <= 100
    assert runs["sender"]["sender_conflated"] > 0
    assert all(r["handled"] > 0 and r["sent"] > 1_000 for r in runs.values())


def test_the_peer_clock_example_finds_the_shift_within_its_bound() -> None:
    out = run_example("peer_clock.py", "--shift-ms", "1500", "--seconds", "1")
    found = re.search(r"A about B: offset \+([\d.]+) ms ± ([\d.]+) ms", out)
    assert found, out
    offset, bound = map(float, found.groups())
    assert abs(offset - 1500) <= bound
    assert re.search(r"B about A: offset -1[45]\d\d\.\d+ ms", out), out


def test_the_relay_metrics_example_scrapes_what_the_snapshot_says() -> None:
    out = run_example("relay_metrics.py")
    assert re.search(r'^  clasp_sessions 2\.0$', out, re.M), out
    assert re.search(r'^  clasp_sessions \{\} 2$', out, re.M), out
    scraped = re.search(r'clasp_messages_total\{[^}]*direction="received"[^}]*\} (\d+)\.0', out)
    snapshot = re.search(r"clasp_messages_total \{[^}]*'direction': 'received'\} (\d+)", out)
    assert scraped and snapshot and scraped.group(1) == snapshot.group(1) and int(scraped.group(1)) >= 100


def test_the_fanout_example_keeps_the_others_going_and_catches_the_stalled_viewer_up() -> None:
    out = run_example("fanout.py", "--viewers", "3")
    assert "sent 3,000 messages, 3000 encodes" in out
    assert "while viewer-2 was stalled: received [3000, 3000, 0]" in out
    assert "every latest value: True, every event: True" in out


def test_the_stream_peers_example_shows_group_conflation_clock_and_metrics() -> None:
    out = run_example("stream_peers.py")
    assert "group: 2001 encodes for 2 viewers" in out
    assert "fast viewer: 2001 messages" in out
    skipped = re.search(r"slow viewer: handled (\d+), skipped (\d+) older values, latest (.*)$", out, re.M)
    assert skipped and int(skipped.group(2)) > 0, out
    assert "'/sensor/3': 1999" in skipped.group(3)
    assert re.search(r"clock of 'fast' seen by the hub: offset [+-][\d.]+ ms ± [\d.]+ ms", out), out
    assert 'peer="slow",route="p2p"} 2001.0' in out and "clasp_peers: 2" in out

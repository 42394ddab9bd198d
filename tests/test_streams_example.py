"""examples/streams/slow_receiver.py runs, and the receiver's backlog stays bounded only with conflation."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_slow_receiver_example_bounds_the_backlog_with_conflation_only() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "streams" / "slow_receiver.py"), "--seconds", "1.5"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {r["mode"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(runs) == {"fifo", "receiver", "sender"}
    # 10,000 updates/s against a handler of ~1,000/s: a plain queue keeps thousands waiting, the
    # latest-value queue at most one per address (100); the sender-side lane conflated too.
    assert runs["fifo"]["waiting_at_end"] > 1_000
    assert runs["receiver"]["waiting_at_end"] <= 100
    assert runs["sender"]["sender_conflated"] > 0
    assert all(r["handled"] > 0 and r["sent"] > 1_000 for r in runs.values())

"""The README's first command: ``python -m clasp_fast demo`` streams over P2P through the embedded relay."""

import re
import subprocess
import sys


def test_demo_streams_over_p2p_between_two_peer_processes():
    result = subprocess.run(
        [sys.executable, "-m", "clasp_fast", "demo", "--seconds", "3", "--rate", "500", "--no-bench"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"done: sent (\d+) messages, p2p (\d+), relay (\d+)", result.stdout)
    assert summary, result.stdout
    sent, over_p2p, over_relay = map(int, summary.groups())
    assert sent > 0 and over_p2p + over_relay == sent
    assert over_p2p > 0, "no message travelled over the DataChannel"
    # The watcher's per-second lines count what arrived by route; some arrived over P2P.
    received_p2p = [int(n) for n in re.findall(r"msg/s .* p2p (\d+) ", result.stdout)]
    assert sum(received_p2p) > 0, result.stdout

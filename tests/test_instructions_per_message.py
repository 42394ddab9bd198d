"""benchmarks/instructions_per_message.py: its scenarios run and deliver every message.

The counting itself needs valgrind and minutes per scenario, so it is not run here; this checks
that what it would count works (every message arrives, or the scenario raises) and that the
command refuses to count without valgrind rather than printing nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks" / "instructions_per_message.py").exists(),
                                reason="benchmarks/ is not beside the tests (a copy of tests/ runs the wheel)")


@pytest.mark.parametrize("scenario", ["unbatched", "batched", "send_many", "alone"])
def test_scenario_runs_and_delivers_every_message(scenario):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.instructions_per_message", "--no-valgrind", "--scenario", scenario,
         "--count", "70"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [scenario, "ran", "140", "messages"]


def test_counting_without_valgrind_is_refused(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no valgrind on this PATH
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.instructions_per_message", "--scenario", "alone"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 2
    assert "valgrind is not on the PATH" in result.stderr

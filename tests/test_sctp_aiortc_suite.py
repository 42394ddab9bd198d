"""aiortc's own SCTP and peer-connection tests, run against the fast SCTP data path.

The suites come from aiortc's sdist, which ``.ci/run`` downloads and names in ``CLASP_AIORTC_SDIST``
(nothing is fetched at test time); without it the run is skipped. ``tests/aiortc_suite`` holds the
runner and its list of expected failures, each with its reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aiortc_suite import run_aiortc_suite as runner

SDIST = os.environ.get("CLASP_AIORTC_SDIST")


@pytest.mark.skipif(not SDIST, reason="set CLASP_AIORTC_SDIST to aiortc's sdist (.ci/run downloads it)")
def test_aiortc_suites_fail_exactly_the_listed_tests_on_the_fast_path():
    result = subprocess.run(
        [sys.executable, str(Path(runner.__file__)), str(SDIST)], capture_output=True, text=True, timeout=900
    )
    summary = "\n".join(line for line in result.stdout.splitlines() if not line.startswith(" "))
    assert result.returncode == 0, summary[-6000:] + result.stderr[-2000:]
    assert "OK: exactly the listed tests fail" in result.stdout


def test_the_comparison_catches_every_kind_of_drift():
    listed = {"t.py::A::a": "reason a", "t.py::A::b": "reason b"}
    results = {"t.py::A::a": "failed", "t.py::A::b": "failed", "t.py::A::c": "passed"}
    assert runner.compare("exact", results, listed) == []
    problems = runner.compare(
        "drift", {"t.py::A::a": "passed", "t.py::A::c": "failed", "t.py::A::d": "skipped"}, listed
    )
    assert problems == [
        "UNEXPECTED FAILURE: t.py::A::c",
        "EXPECTED FAILURE NOW PASSES (remove it from the list): t.py::A::a",
        "LISTED TEST NOT RUN (renamed or removed?): t.py::A::b",
    ]


def test_every_expected_failure_has_a_reason_and_the_adapted_ones_are_among_them():
    assert all(reason.strip() for reason in runner.EXPECTED_FAILURES.values())
    assert set(runner.ADAPTED_EXPECTED_FAILURES) <= set(runner.EXPECTED_FAILURES)

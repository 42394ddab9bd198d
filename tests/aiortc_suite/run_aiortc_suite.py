"""Run aiortc's own SCTP and peer-connection tests against clasp_fast's fast SCTP data path.

    python tests/aiortc_suite/run_aiortc_suite.py AIORTC_SDIST [--junit-dir DIR]

AIORTC_SDIST is aiortc's source distribution (``pip download aiortc==1.16.0 --no-binary :all:
--no-deps``), as a .tar.gz or unpacked; its version must be the installed aiortc's. Nothing is
downloaded here. The runner copies the sdist's ``tests/`` into a temporary folder with
``fast_conftest.py`` as its conftest (it substitutes ``FastPeerConnection`` / ``FastSctpTransport``
for aiortc's classes and keeps every connection on loopback) and runs pytest -- inside a fresh
network namespace holding only ``lo`` when ``unshare -n`` works -- twice:

1. :data:`SUITES` as they are; exactly :data:`EXPECTED_FAILURES` may fail;
2. those expected failures again with the private seams they drive adapted
   (``fast_conftest.adapt_private_seams``); exactly :data:`ADAPTED_EXPECTED_FAILURES` may fail.

Exit status 0 only when both runs fail exactly the listed tests: an unexpected failure, an
expected failure that now passes, or a listed test that no longer exists is printed and gives 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import aiortc

HERE = Path(__file__).resolve().parent
SCTP_SUITE = "tests/test_rtcsctptransport.py"
SUITES = (SCTP_SUITE, "tests/test_rtcpeerconnection.py")

_SEAMS = (
    "drives a transport whose association never started and captures what it sends by replacing "
    "the private _send_chunk; the fast path builds whole packets in compiled code (it never calls "
    "_send_chunk) and sends DATA only on an established association"
)
_WINDOW = (
    _SEAMS + "; it also expects flight size and cwnd in user-data bytes, where the fast path counts "
    "each chunk's 16-byte header and padding"
)
_T3 = _SEAMS + "; its assertions on the T3 timer follow from nothing having been sent"

#: aiortc tests that fail on the fast path, with the reason; pytest node ids.
EXPECTED_FAILURES: dict[str, str] = {
    f"{SCTP_SUITE}::RTCSctpTransportTest::{name}": reason
    for name, reason in {
        "test_maybe_abandon": _SEAMS,
        "test_maybe_abandon_max_retransmits": _WINDOW,
        "test_receive_sack_abandoned_fragments_flight_size": _WINDOW,
        "test_receive_sack_abandoned_queued_fragments": _SEAMS,
        "test_receive_sack_abandoned_then_acked": _WINDOW,
        "test_receive_sack_forward_tsn_acked_stream": _SEAMS,
        "test_receive_sack_forward_tsn_lost": _SEAMS,
        "test_receive_sack_gap_acked_after_retransmit": _WINDOW,
        "test_receive_sack_struck_again_before_retransmit": _WINDOW,
        "test_send_data": _T3,
        "test_send_data_congestion_control": _WINDOW,
        "test_send_data_slow_start": _WINDOW,
        "test_send_data_then_close": _SEAMS,
        "test_send_data_unordered": _T3,
        "test_send_data_with_gap": _WINDOW,
        "test_send_data_with_gap_1_retransmit": _WINDOW,
        "test_send_data_with_gap_2_retransmit": _WINDOW,
        "test_send_data_with_gap_3_retransmit": _WINDOW,
        "test_send_sack": _SEAMS,
        "test_send_sack_with_duplicates": _SEAMS,
        "test_send_sack_with_gaps": _SEAMS,
        "test_t3_expired": _T3,
        "test_t3_expired_abandoned_queued_fragments": _SEAMS,
        "test_t3_expired_forward_tsn_lost": _SEAMS,
        "test_t3_expired_forward_tsn_lost_stream_reset": _SEAMS,
        "test_t3_expired_gap_acked": _WINDOW,
    }.items()
}

_RWND = (
    "feeds SACKs built with SackChunk(), whose a_rwnd is 0, and expects new data to go out anyway "
    "(aiortc ignores the peer's receive window); the fast path keeps new data within it (RFC 4960 "
    "section 6.1 rule A) and sends one chunk at a time into a closed window"
)

#: Of those, the ones that still fail once the private seams are adapted, with the reason.
ADAPTED_EXPECTED_FAILURES: dict[str, str] = {
    **{
        f"{SCTP_SUITE}::RTCSctpTransportTest::{name}": _RWND
        for name in (
            "test_receive_sack_abandoned_queued_fragments",
            "test_send_data_congestion_control",
            "test_send_data_slow_start",
            "test_send_data_with_gap",
            "test_send_data_with_gap_1_retransmit",
            "test_send_data_with_gap_2_retransmit",
            "test_send_data_with_gap_3_retransmit",
        )
    },
    f"{SCTP_SUITE}::RTCSctpTransportTest::test_receive_sack_abandoned_fragments_flight_size": (
        "expects a burst of 4 chunks (aiortc's Max.Burst) with room for 8; the fast path's burst is "
        "MAX_BURST_PACKETS = 8 packets outside loss recovery"
    ),
    f"{SCTP_SUITE}::RTCSctpTransportTest::test_send_data_then_close": (
        "expects a second message to stay in the data channel queue until the first has left the "
        "outbound queue; the fast path moves messages into SCTP as soon as the window has room "
        "(the stream reset still follows the channel's last message)"
    ),
}


def unpack(sdist: Path, into: Path) -> Path:
    """The sdist's root folder (unpacked into ``into`` when ``sdist`` is an archive)."""
    if sdist.is_dir():
        return sdist
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    roots = [p for p in into.iterdir() if p.is_dir()]
    if len(roots) != 1:
        sys.exit(f"{sdist}: expected one top-level folder, found {[p.name for p in roots]}")
    return roots[0]


def sdist_version(root: Path) -> str:
    for line in (root / "PKG-INFO").read_text().splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    sys.exit(f"{root}/PKG-INFO names no version")


def network_namespace_prefix() -> list[str]:
    """``unshare -n`` with loopback up, when this process may create a network namespace."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if unshare is None or ip is None:
        return []
    probe = subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"], capture_output=True)
    if probe.returncode != 0:
        return []
    return [unshare, "-n", "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh"]


def outcomes(junit: Path) -> dict[str, str]:
    """pytest node id -> "passed" / "failed" / "skipped", from a JUnit XML report."""
    result = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        # classname "tests.test_x.Class" + name -> node id "tests/test_x.py::Class::name".
        parts = case.get("classname", "").split(".")
        node = "::".join(["/".join(parts[:2]) + ".py", *parts[2:], case.get("name", "")])
        if case.find("failure") is not None or case.find("error") is not None:
            result[node] = "failed"
        elif case.find("skipped") is not None:
            result[node] = "skipped"
        else:
            result[node] = "passed"
    return result


def run_pytest(suite: Path, tests: list[str], junit: Path, count: Path, adapt: bool) -> dict[str, str]:
    env = {**os.environ, "CLASP_AIORTC_SUITE_COUNT": str(count), "CLASP_AIORTC_SUITE_ADAPT": "1" if adapt else "0"}
    command = [*network_namespace_prefix(), sys.executable, "-m", "pytest", "-q", "--tb=short",
               "-p", "no:cacheprovider", "-p", "no:benchmark", f"--junitxml={junit}", *tests]
    subprocess.run(command, cwd=suite, env=env)
    if not junit.exists():
        sys.exit("pytest wrote no report")
    return outcomes(junit)


def compare(title: str, results: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Print the comparison; return the problems (empty when exactly ``expected`` failed)."""
    failed = {node for node, outcome in results.items() if outcome == "failed"}
    problems = [f"UNEXPECTED FAILURE: {node}" for node in sorted(failed - expected.keys())]
    problems += [f"EXPECTED FAILURE NOW PASSES (remove it from the list): {node}"
                 for node in sorted(expected) if results.get(node) == "passed"]
    problems += [f"LISTED TEST NOT RUN (renamed or removed?): {node}"
                 for node in sorted(expected) if node not in results]
    print(f"== {title}")
    for path in sorted({node.split("::")[0] for node in results}):
        ran = [n for n in results if n.startswith(path + "::")]
        print(f"{path}: {sum(results[n] == 'passed' for n in ran)}/{len(ran)} passed")
    for node in sorted(failed & expected.keys()):
        print(f"expected failure: {node}\n    {expected[node]}")
    for problem in problems:
        print(problem)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="aiortc sdist (.tar.gz or unpacked folder)")
    parser.add_argument("--junit-dir", type=Path, help="keep the two JUnit XML reports here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="clasp_aiortc_suite_") as temp:
        work = Path(temp)
        root = unpack(args.sdist.resolve(), work / "sdist")
        version = sdist_version(root)
        if version != aiortc.__version__:
            sys.exit(f"the sdist is aiortc {version} but aiortc {aiortc.__version__} is installed")
        suite = work / "suite"
        shutil.copytree(root / "tests", suite / "tests")
        shutil.copy2(HERE / "fast_conftest.py", suite / "conftest.py")
        (suite / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
        reports = args.junit_dir.resolve() if args.junit_dir else work
        reports.mkdir(parents=True, exist_ok=True)
        namespace = bool(network_namespace_prefix())
        print("network:", "fresh namespace (unshare -n)" if namespace else "loopback only, no namespace")

        count = work / "transports"
        results = run_pytest(suite, list(SUITES), reports / "aiortc-suite.xml", count, adapt=False)
        built = int(count.read_text()) if count.exists() else 0
        problems = compare("aiortc's tests on the fast path", results, EXPECTED_FAILURES)
        print(f"FastSctpTransports built by the tests: {built}")
        if built == 0:
            problems.append("the substitution did not take effect: no FastSctpTransport was built")

        adapted = run_pytest(suite, sorted(EXPECTED_FAILURES), reports / "aiortc-suite-adapted.xml", count, adapt=True)
        problems += compare("the expected failures again, private seams adapted", adapted, ADAPTED_EXPECTED_FAILURES)

    print("OK: exactly the listed tests fail" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

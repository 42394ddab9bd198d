"""The test suite on every supported Python this machine has (nox, https://nox.thea.codes).

    python -m nox                  # what .ci/run does: fast-3.12, fast-3.13, floors
    python -m nox -s fast-3.13     # one session
    python -m nox -s full-3.12     # the whole suite on one interpreter
    python -m nox -l               # list the sessions

Each session makes a fresh virtual environment, installs clasp_fast there with its test extra
(``pip install -e``, which compiles the Cython core for that interpreter, in place next to the
other interpreters' modules) and runs pytest from the checkout.

* ``fast``: the tests that exercise the compiled core, the codec, the relay and client, the
  command line, packaging and the README's programs -- a few minutes per interpreter. The whole
  suite runs on 3.11 in ``.ci/run`` itself.
* ``floors``: 3.11 with the lowest versions ``pyproject.toml`` allows (:data:`FLOORS`), so every
  lower bound there is one that was tested; aiortc's is the oldest of the declared range (1.14),
  where the WebRTC tests also run (:data:`AIORTC_RANGE_TESTS`).
* ``full``: everything (Node and browser tests need ``npm ci`` in tests/node, as .ci/run does).

An interpreter that is not installed is skipped with a message; nothing is ever downloaded.
Interpreters are looked up on PATH, then in pyenv's versions folder (``$PYENV_ROOT``, default
``~/.pyenv``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

SUPPORTED = ["3.11", "3.12", "3.13"]
EXTRA = ["3.12", "3.13"]  # the main .ci/run run covers 3.11

# The lower bound of every runtime dependency in pyproject.toml, as installed by ``floors``
# (tests/test_build.py checks that the two lists agree).
FLOORS = {
    "aiortc": "1.14.0",  # the oldest of the declared range: the fast path falls back to aiortc's SCTP
    "websockets": "17.0",
    "msgpack": "1.0.5",
    "numpy": "1.24.0",
}

FAST_TESTS = [
    "tests/test_codec_vectors.py",
    "tests/test_codec_api.py",
    "tests/test_codec_cli.py",
    "tests/test_address.py",
    "tests/test_dispatch.py",
    "tests/test_stubs.py",
    "tests/test_batching.py",
    "tests/test_sctp_packets.py",
    "tests/test_relay.py",
    "tests/test_client.py",
    "tests/test_client_arguments.py",
    "tests/test_signaling.py",
    "tests/test_p2p.py",
    "tests/test_cli_errors.py",
    "tests/test_build.py",
    "tests/test_readme.py",
]
# Run by ``floors`` too: clasp_fast on the oldest aiortc of the range (tests/test_aiortc_range.py).
AIORTC_RANGE_TESTS = [
    "tests/test_aiortc_range.py",
    "tests/test_webrtc.py",
]

nox.options.sessions = ["fast", "floors"]
nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"


def _works(python: str) -> bool:
    try:
        return subprocess.run([python, "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _add_pyenv_interpreters(versions: list[str]) -> None:
    """Put pyenv's folder of each version not runnable from PATH at the end of PATH."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for version in versions:
        found = shutil.which(f"python{version}")
        if found and _works(found):
            continue
        for folder in sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin")), reverse=True):
            if _works(os.path.join(folder, f"python{version}")):
                os.environ["PATH"] += os.pathsep + folder
                break


_add_pyenv_interpreters(SUPPORTED)


def _install(session: nox.Session, *constraints: str) -> None:
    session.install("--upgrade", "pip")
    session.install("-e", ".[test]", *constraints)


@nox.session(python=EXTRA)
def fast(session: nox.Session) -> None:
    """The fast subset (compiled core, codec, relay, client, CLI, packaging, README)."""
    _install(session)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *FAST_TESTS, *session.posargs)


@nox.session(python="3.11")
def floors(session: nox.Session) -> None:
    """The fast subset with every runtime dependency at its lowest allowed version."""
    constraints = session.create_tmp() + "/floors.txt"
    with open(constraints, "w", encoding="ascii") as handle:
        handle.writelines(f"{name}=={version}\n" for name, version in FLOORS.items())
    _install(session, "--constraint", constraints)
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *FAST_TESTS, *AIORTC_RANGE_TESTS,
                *session.posargs)


@nox.session(python=SUPPORTED)
def full(session: nox.Session) -> None:
    """The whole suite."""
    _install(session)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)

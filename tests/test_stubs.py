"""The type stubs of the compiled modules (clasp_fast/_*.pyi) match the built modules.

mypy's stubtest imports each compiled module and compares every public name, signature,
property and class layout with its stub; a module without a stub fails here too. Runs against
whichever clasp_fast the suite imports (the source tree or an installed wheel), so it also
proves that the wheel carries the stubs.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import clasp_fast

PACKAGE_DIR = Path(clasp_fast.__file__).resolve().parent

# Names Cython adds to every module and to some classes; they are not API.
ALLOWLIST = """\
clasp_fast\\._\\w+\\.__pyx_capi__
clasp_fast\\._\\w+\\.__test__
clasp_fast\\._\\w+\\.(\\w+\\.)?__reduce_cython__
clasp_fast\\._\\w+\\.(\\w+\\.)?__setstate_cython__
"""


def compiled_modules() -> list[str]:
    """Every extension module inside the package, by module name (e.g. ``clasp_fast._codec``)."""
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    names = set()
    for path in PACKAGE_DIR.iterdir():
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        # An in-place build for another Python leaves e.g. _codec.cpython-312-...so beside
        # ours; its name only ends in the bare ".so" suffix and is not a module name here.
        if suffix is not None and "." not in path.name[: -len(suffix)]:
            names.add(path.name[: -len(suffix)])
    return sorted(f"clasp_fast.{name}" for name in names)


def test_the_compiled_core_is_found():
    modules = compiled_modules()
    assert {"clasp_fast._codec", "clasp_fast._address", "clasp_fast._dispatch"} <= set(modules)


def test_every_compiled_module_has_a_stub():
    missing = [m for m in compiled_modules() if not (PACKAGE_DIR / f"{m.split('.')[1]}.pyi").exists()]
    assert missing == [], f"write clasp_fast/<module>.pyi for {missing}"


def test_stubs_match_the_compiled_modules(tmp_path: Path):
    # stubtest comes with mypy, which the "test" extra installs.
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(ALLOWLIST, encoding="utf-8")
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / "mypy_cache"))
    # A copy of the package the suite imports, alone in a folder: stubtest imports it and mypy finds
    # its stubs there. (From an empty folder, under an editable install, mypy sees no stubs through
    # pip's import hook and stubtest checks nothing; beside site-packages, other modules there
    # shadow the standard library for mypy.)
    beside = tmp_path / "package"
    shutil.copytree(PACKAGE_DIR, beside / "clasp_fast", ignore=shutil.ignore_patterns("__pycache__"))
    # The stubs are checked, not the Python modules they import (those are type-checked by
    # `python -m mypy` against the newest aiortc; nox's ``floors`` runs this with the oldest).
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nfollow_imports = silent\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--allowlist", str(allowlist), "--mypy-config-file", str(config),
         "--ignore-unused-allowlist", *compiled_modules()],
        cwd=beside, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_documented_import_paths_are_typed(tmp_path: Path):
    """Each documented path of clasp_fast/_aliases.py has a stub re-exporting its module, so a type
    checker resolves ``from clasp_fast.webrtc import WebRtcConfig`` as it runs."""
    from clasp_fast._aliases import ALIASES

    lines = []
    for documented, real in sorted(ALIASES.items()):
        stub = PACKAGE_DIR / f"{documented.split('.')[1]}.pyi"
        assert stub.exists(), f"write {stub.name}: `from {real} import *`"
        public = importlib.import_module(real).__all__
        lines.append(f"from {documented} import {public[0]}")
        lines.append(f"reveal_type({public[0]})")
    program = tmp_path / "uses_documented_paths.py"
    program.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / "mypy_cache"))
    if (PACKAGE_DIR.parent / "setup.py").exists():  # the source tree (an installed wheel is found by itself)
        env["MYPYPATH"] = str(PACKAGE_DIR.parent)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
         "--config-file", os.devnull, str(program)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and output.count("Revealed type") == len(ALIASES), output

"""Run the test suite against the installed clasp_fast, never the source tree.

    python ci/test_installed.py --project . [-- PYTEST ARGS...]

Copies ``tests/``, the root ``conftest.py`` and ``pyproject.toml`` (the pytest settings) into a
temporary folder, installs the Node interop peers there with ``npm ci`` (when npm exists),
checks that ``import clasp_fast`` resolves to the interpreter's site-packages, then runs
pytest from that folder (the conformance data travels with ``tests/data``).
Used by ``.ci/run`` (in a fresh virtual environment) and by cibuildwheel's test command.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path


def copy_tests(project: Path, workdir: Path) -> None:
    shutil.copytree(project / "tests", workdir / "tests",
                    ignore=shutil.ignore_patterns("node_modules", "__pycache__"))
    # The example pages are driven by the browser tests; they use the installed package too.
    shutil.copytree(project / "examples", workdir / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(project / "conftest.py", workdir / "conftest.py")
    shutil.copy2(project / "pyproject.toml", workdir / "pyproject.toml")


def install_node_peers(workdir: Path) -> None:
    node_dir = workdir / "tests" / "node"
    npm = shutil.which("npm")
    if npm is None or not (node_dir / "package-lock.json").exists():
        print("npm not found: the Node interop tests will skip (or fail if CLASP_REQUIRE_NODE=1)")
        return
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=node_dir, check=True)


def check_installed_package(workdir: Path, project: Path) -> None:
    """Fail unless clasp_fast imports from site-packages (not from the source tree)."""
    location = subprocess.run(
        [sys.executable, "-c", "import clasp_fast; print(clasp_fast.__file__)"],
        cwd=workdir, check=True, capture_output=True, text=True,
    ).stdout.strip()
    location_path = Path(location).resolve()
    site_dirs = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if not any(site in location_path.parents for site in site_dirs):
        sys.exit(f"clasp_fast was imported from {location}, not from site-packages {site_dirs}")
    if project.resolve() in location_path.parents:
        sys.exit(f"clasp_fast was imported from the source tree ({location})")
    print(f"testing the installed clasp_fast at {location}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="source tree holding tests/")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    project = args.project.resolve()

    with tempfile.TemporaryDirectory(prefix="clasp_fast_installed_") as temp:
        workdir = Path(temp)
        copy_tests(project, workdir)
        install_node_peers(workdir)
        check_installed_package(workdir, project)
        command = [sys.executable, "-m", "pytest", "-c", "pyproject.toml",
                   "--rootdir", str(workdir), "-p", "no:cacheprovider", "-rs", "tests",
                   *args.pytest_args]
        return subprocess.run(command, cwd=workdir).returncode


if __name__ == "__main__":
    sys.exit(main())

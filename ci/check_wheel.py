"""Check the contents of built clasp_fast distributions (wheels and sdists).

    python ci/check_wheel.py dist/clasp_fast-*.whl dist/clasp_fast-*.tar.gz

A wheel must hold both compiled modules, ``py.typed`` and every Python module of the
source package (``--package-dir``, default: ``clasp_fast/`` beside this script), and no
Cython or C sources, no tests. An sdist must hold what the wheel is built from (the
``_ext`` Cython sources, ``setup.py``, ``pyproject.toml``, README, LICENSE) and no generated
C, no compiled modules, no ``node_modules``. Exits 1 and lists every problem otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

DEFAULT_PACKAGE_DIR = Path(__file__).resolve().parent.parent / "clasp_fast"
EXTENSIONS = ("_codec", "_address")
SOURCE_SUFFIXES = (".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h")
COMPILED_SUFFIXES = (".so", ".pyd")


def python_modules(package_dir: Path) -> set[str]:
    """Wheel paths of the package's Python modules, e.g. ``clasp_fast/codec.py``."""
    root = package_dir.parent
    return {
        path.relative_to(root).as_posix()
        for path in package_dir.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def check_wheel_names(names: list[str], package_modules: set[str]) -> list[str]:
    """Problems with a wheel whose archive members are ``names`` (empty list: fine)."""
    problems = []
    for extension in EXTENSIONS:
        pattern = f"clasp_fast/{extension}*"
        if not any(
            fnmatch.fnmatch(name, pattern) and name.endswith(COMPILED_SUFFIXES) for name in names
        ):
            problems.append(f"compiled module clasp_fast/{extension}*.so/.pyd is missing")
    if "clasp_fast/py.typed" not in names:
        problems.append("clasp_fast/py.typed is missing")
    for module in sorted(package_modules - set(names)):
        problems.append(f"Python module {module} is missing")
    for name in names:
        top = PurePosixPath(name).parts[0]
        if name.endswith(SOURCE_SUFFIXES):
            problems.append(f"source file {name} must not be in the wheel")
        elif top.endswith(".dist-info"):
            continue
        elif top != "clasp_fast":
            problems.append(f"{name} is outside the clasp_fast package (tests, ci, _ext stay out)")
    return problems


def check_sdist_names(names: list[str]) -> list[str]:
    """Problems with an sdist whose archive members are ``names`` (without the top folder)."""
    problems = []
    for required in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in",
                     "_ext/codec.pyx", "_ext/address.pyx", "clasp_fast/__init__.py",
                     "clasp_fast/py.typed"):
        if required not in names:
            problems.append(f"{required} is missing from the sdist")
    for name in names:
        if name.endswith((".c", ".cpp", ".html")) and name.startswith("_ext/"):
            problems.append(f"generated file {name} must not be in the sdist")
        elif name.endswith(COMPILED_SUFFIXES):
            problems.append(f"compiled file {name} must not be in the sdist")
        elif "node_modules" in PurePosixPath(name).parts:
            problems.append(f"{name}: node_modules must not be in the sdist")
    return problems


def wheel_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return [name for name in archive.namelist() if not name.endswith("/")]


def sdist_names(path: Path) -> list[str]:
    with tarfile.open(path) as archive:
        names = [member.name for member in archive.getmembers() if member.isfile()]
    # Strip the "clasp_fast-0.1.0/" folder every member sits in.
    return [name.split("/", 1)[1] for name in names if "/" in name]


def check(path: Path, package_dir: Path) -> list[str]:
    """Problems with the distribution at ``path`` (a .whl or a .tar.gz)."""
    if path.suffix == ".whl":
        return check_wheel_names(wheel_names(path), python_modules(package_dir))
    if path.name.endswith(".tar.gz"):
        return check_sdist_names(sdist_names(path))
    return [f"{path}: not a wheel (.whl) or an sdist (.tar.gz)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distributions", nargs="+", type=Path)
    parser.add_argument("--package-dir", type=Path, default=DEFAULT_PACKAGE_DIR,
                        help="source package whose Python modules the wheel must carry")
    args = parser.parse_args(argv)
    failed = False
    for path in args.distributions:
        problems = check(path, args.package_dir)
        if problems:
            failed = True
            print(f"FAIL {path}")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"ok   {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

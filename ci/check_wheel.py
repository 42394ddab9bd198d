"""Check the contents of built clasp_fast distributions (wheels and sdists).

    python ci/check_wheel.py dist/clasp_fast-*.whl dist/clasp_fast-*.tar.gz

A wheel must hold every compiled module setup.py builds, ``py.typed`` and every file of the
source package (``--package-dir``, default: ``clasp_fast/`` beside this script), and no
Cython or C sources, no tests. An sdist must hold what the wheel is built from (the
``_ext`` Cython sources, ``setup.py``, ``pyproject.toml``, README, LICENSE) and no generated
C, no compiled modules, no ``node_modules``. Exits 1 and lists every problem otherwise.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE_DIR = ROOT / "clasp_fast"
SOURCE_SUFFIXES = (".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h")
COMPILED_SUFFIXES = (".so", ".pyd")


def compiled_modules(setup_py: Path = ROOT / "setup.py") -> tuple[str, ...]:
    """Names of the extension modules setup.py builds (the keys of its ``MODULES`` dict)."""
    for node in ast.parse(setup_py.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "MODULES" for target in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{setup_py} has no MODULES = {{...}} assignment")


def package_files(package_dir: Path) -> set[str]:
    """Wheel paths of the source package's files (modules and data such as ``browser/*.js``),
    e.g. ``clasp_fast/codec.py``; compiled modules and caches are left out."""
    root = package_dir.parent
    return {
        path.relative_to(root).as_posix()
        for path in package_dir.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not path.name.endswith(COMPILED_SUFFIXES + (".pyc",))
    }


def check_wheel_names(names: list[str], package_modules: set[str],
                      extensions: tuple[str, ...]) -> list[str]:
    """Problems with a wheel whose archive members are ``names`` (empty list: fine)."""
    problems = []
    for extension in extensions:
        pattern = f"clasp_fast/{extension}*"
        if not any(
            fnmatch.fnmatch(name, pattern) and name.endswith(COMPILED_SUFFIXES) for name in names
        ):
            problems.append(f"compiled module clasp_fast/{extension}*.so/.pyd is missing")
    if "clasp_fast/py.typed" not in names:
        problems.append("clasp_fast/py.typed is missing")
    for module in sorted(package_modules - set(names)):
        problems.append(f"package file {module} is missing")
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
        return check_wheel_names(wheel_names(path), package_files(package_dir),
                                 compiled_modules())
    if path.name.endswith(".tar.gz"):
        return check_sdist_names(sdist_names(path))
    return [f"{path}: not a wheel (.whl) or an sdist (.tar.gz)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distributions", nargs="+", type=Path)
    parser.add_argument("--package-dir", type=Path, default=DEFAULT_PACKAGE_DIR,
                        help="source package whose files the wheel must carry")
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

"""Packaging: the missing-extension error, the command line entry points, and the
sdist/wheel configuration (checked without building anything)."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.version import Version

import clasp_fast
from tests.spec_data import REPO_ROOT

PACKAGE_DIR = Path(clasp_fast.__file__).resolve().parent

# Present in a source checkout, absent when the tests run from a copy against a wheel.
needs_source_tree = pytest.mark.skipif(
    not (REPO_ROOT / "MANIFEST.in").exists(),
    reason="packaging configuration is only checked in a source tree",
)


def copy_package(destination: Path, *, with_extensions: bool) -> Path:
    """Copy the importable clasp_fast package into ``destination``, optionally without the .so files."""
    compiled = ("*.so", "*.pyd")
    ignore = shutil.ignore_patterns("__pycache__", *(() if with_extensions else compiled))
    shutil.copytree(PACKAGE_DIR, destination / "clasp_fast", ignore=ignore)
    return destination / "clasp_fast"


# "-c" puts the working directory first on sys.path, so the copy shadows the installed package.
# An editable install (pip install -e) adds a finder that would still supply the source tree's
# compiled modules as submodules of the copy; drop it so only the copy counts.
ONLY_THE_COPY = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path"
    " if not getattr(f, '__module__', '').startswith('__editable__')]; "
)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ONLY_THE_COPY + code], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_import_without_compiled_extension_says_how_to_build(tmp_path):
    copy = copy_package(tmp_path, with_extensions=False)
    assert not [path for path in copy.glob("_codec*") if path.suffix in (".so", ".pyd")]

    result = run_python("import clasp_fast", tmp_path)

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: ")
    assert "'clasp_fast._codec'" in last_line
    assert "not built" in last_line
    assert "python setup.py build_ext --inplace" in last_line
    assert "C compiler" in last_line
    assert "python -m build --wheel" in last_line
    assert "pip install clasp-fast" not in last_line  # not on any package index (yet)


def test_unbuilt_source_tree_says_it_shadows_the_installed_package(tmp_path):
    # `pip install .` then `python -m clasp_fast` inside the checkout imports the unbuilt tree.
    copy_package(tmp_path, with_extensions=False)
    (tmp_path / "setup.py").write_text("# a source tree\n")
    (tmp_path / "_ext").mkdir()

    result = run_python("import clasp_fast", tmp_path)

    last_line = result.stderr.strip().splitlines()[-1]
    assert "imported from the source tree at" in last_line
    assert str(tmp_path.resolve()) in last_line
    assert "pip install -e ." in last_line


def test_package_outside_a_source_tree_gets_no_source_tree_note(tmp_path):
    copy_package(tmp_path, with_extensions=False)

    result = run_python("import clasp_fast", tmp_path)

    assert "source tree at" not in result.stderr


def test_copied_package_with_extensions_imports_from_the_copy(tmp_path):
    # Control for the test above: the same copy with its compiled modules imports fine,
    # so the failure there comes from the missing extension and nothing else.
    copy_package(tmp_path, with_extensions=True)

    result = run_python("import clasp_fast; print(clasp_fast.__file__)", tmp_path)

    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().parent == (tmp_path / "clasp_fast").resolve()


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "clasp_fast", "--help"],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: clasp-fast")


def test_console_script_help():
    scripts = Path(sysconfig.get_path("scripts"))
    name = "clasp-fast.exe" if sys.platform == "win32" else "clasp-fast"
    script = scripts / name
    assert script.exists(), f"console script {script} not installed"

    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: clasp-fast")


# --- configuration of the sdist and the wheel --------------------------------------------


def load_toml(path: Path) -> dict:
    import tomllib

    with open(path, "rb") as handle:
        return tomllib.load(handle)


def load_ci_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest_selection(tree: Path, monkeypatch) -> set[str]:
    """The files MANIFEST.in selects from ``tree`` (setuptools' own template engine)."""
    from setuptools._distutils.filelist import FileList

    monkeypatch.chdir(tree)  # the template's patterns are relative to the current directory
    files = FileList()
    files.findall()
    for line in (REPO_ROOT / "MANIFEST.in").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            files.process_template_line(line)
    return {Path(name).as_posix() for name in files.files}


@needs_source_tree
def test_manifest_ships_cython_sources_and_no_generated_files(tmp_path, monkeypatch):
    layout = [
        "setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "conftest.py", "noxfile.py",
        "docs/protocol.md", "docs/bench-loopback.png", "tests/browser/drive.mjs", "tests/browser/p2p_peer.html",
        "examples/browser/index.html", "examples/browser/serve.py", "clasp_fast/browser/clasp-p2p.js",
        "tests/data/__pycache__/x.pyc", "docs/_build/x.c",
        "_ext/codec.pyx", "_ext/address.pyx", "_ext/buffers.pxd", "_ext/batching.pxi",
        "_ext/codec.c", "_ext/codec.html", "_ext/address.c",
        "clasp_fast/__init__.py", "clasp_fast/py.typed",
        "clasp_fast/_codec.cpython-311-x86_64-linux-gnu.so", "clasp_fast/_address.pyd",
        "clasp_fast/__pycache__/cli.cpython-311.pyc",
        "tests/test_codec.py", "tests/node/package.json", "tests/node/package-lock.json",
        "tests/node/codec_peer.mjs", "tests/node/node_modules/ws/index.js",
        "tests/data/patterns.json", "tests/data/vectors/reference_rust.json",
    ]
    for name in layout:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")

    selected = manifest_selection(tmp_path, monkeypatch)

    for required in ["setup.py", "pyproject.toml", "README.md", "LICENSE", "_ext/codec.pyx",
                     "_ext/address.pyx", "_ext/buffers.pxd", "_ext/batching.pxi",
                     "clasp_fast/py.typed", "tests/node/package-lock.json", "conftest.py", "noxfile.py",
                     "tests/data/patterns.json", "tests/data/vectors/reference_rust.json",
                     "docs/protocol.md", "docs/bench-loopback.png", "tests/browser/drive.mjs",
                     "tests/browser/p2p_peer.html", "examples/browser/index.html",
                     "clasp_fast/browser/clasp-p2p.js"]:
        assert required in selected
    for excluded in ["_ext/codec.c", "_ext/address.c", "_ext/codec.html",
                     "clasp_fast/_codec.cpython-311-x86_64-linux-gnu.so", "clasp_fast/_address.pyd",
                     "clasp_fast/__pycache__/cli.cpython-311.pyc", "tests/data/__pycache__/x.pyc",
                     "tests/node/node_modules/ws/index.js", "docs/_build/x.c"]:
        assert excluded not in selected


@needs_source_tree
def test_wheel_packages_cover_every_package_and_nothing_else():
    from setuptools import find_packages

    config = load_toml(REPO_ROOT / "pyproject.toml")
    setuptools_config = config["tool"]["setuptools"]
    include = setuptools_config["packages"]["find"]["include"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for init in (REPO_ROOT / "clasp_fast").rglob("__init__.py")
    }

    assert set(find_packages(str(REPO_ROOT), include=include)) == on_disk
    assert "py.typed" in setuptools_config["package-data"]["clasp_fast"]
    assert (REPO_ROOT / "clasp_fast" / "py.typed").exists()
    assert config["project"]["scripts"]["clasp-fast"] == "clasp_fast.cli:main"


@needs_source_tree
def test_every_data_file_in_the_package_is_listed_as_package_data():
    import fnmatch

    patterns = load_toml(REPO_ROOT / "pyproject.toml")["tool"]["setuptools"]["package-data"]
    package = REPO_ROOT / "clasp_fast"
    data_files = [
        path.relative_to(package).as_posix() for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
        and not path.name.endswith((".py", ".so", ".pyd", ".pyc"))
    ]
    unlisted = [name for name in data_files
                if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns["clasp_fast"])]
    assert unlisted == [], "add these to [tool.setuptools.package-data] or they miss the wheel"


@needs_source_tree
def test_cibuildwheel_config():
    cibw = load_toml(REPO_ROOT / "pyproject.toml")["tool"]["cibuildwheel"]

    assert cibw["test-extras"] == ["test"]
    assert "ci/test_installed.py" in cibw["test-command"]
    assert cibw["linux"]["archs"] == ["x86_64", "aarch64"]
    assert cibw["macos"]["archs"] == ["x86_64", "arm64"]
    assert cibw["windows"]["archs"] == ["AMD64"]


@needs_source_tree
def test_cibuildwheel_lists_the_intended_linux_builds():
    if shutil.which("cibuildwheel") is None:
        pytest.skip("cibuildwheel is not installed (pip install cibuildwheel)")
    result = subprocess.run(
        ["cibuildwheel", "--print-build-identifiers", "--platform", "linux"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    identifiers = set(result.stdout.split())

    for python in ["cp311", "cp312", "cp313", "cp314"]:
        for platform in ["manylinux_x86_64", "manylinux_aarch64",
                         "musllinux_x86_64", "musllinux_aarch64"]:
            assert f"{python}-{platform}" in identifiers
    assert not [i for i in identifiers if not i.startswith("cp3") or "t-" in i or "i686" in i]
    # requires-python: aiortc 1.16 needs 3.11, so there is no wheel for 3.10 or older.
    assert not [i for i in identifiers if i.split("-")[0] in {"cp36", "cp37", "cp38", "cp39", "cp310"}]


@needs_source_tree
def test_metadata_uses_an_spdx_licence_and_claims_only_tested_pythons():
    project = load_toml(REPO_ROOT / "pyproject.toml")["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert project["requires-python"] == ">=3.11"
    versions = sorted(c.rsplit(" ", 1)[1] for c in project["classifiers"]
                      if c.startswith("Programming Language :: Python :: 3."))
    noxfile = load_noxfile()
    assert versions == noxfile.SUPPORTED == ["3.11", "3.12", "3.13"]
    build_requires = load_toml(REPO_ROOT / "pyproject.toml")["build-system"]["requires"]
    assert "setuptools>=77" in build_requires and "Cython>=3.1,<4" in build_requires


@needs_source_tree
def test_every_dependency_floor_is_installed_by_the_floors_session():
    from packaging.requirements import Requirement

    floors = {}
    for line in load_toml(REPO_ROOT / "pyproject.toml")["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"python_version": "3.11"}):
            continue  # the floors session runs 3.11
        lowest = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lowest) == 1, f"{line}: give a >= floor"
        floors[requirement.name] = lowest[0]
    tested = {name: version for name, version in load_noxfile().FLOORS.items()}
    assert {name: Version(v) for name, v in floors.items()} == {name: Version(v) for name, v in tested.items()}


def load_noxfile() -> SimpleNamespace:
    """The constants of noxfile.py (SUPPORTED, EXTRA, FLOORS), read without running it."""
    values = {}
    for node in ast.parse((REPO_ROOT / "noxfile.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("SUPPORTED", "EXTRA", "FLOORS"):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return SimpleNamespace(**values)


# --- ci/check_wheel.py: the checker that guards the built artefacts ----------------------

GOOD_WHEEL = [
    "clasp_fast/__init__.py",
    "clasp_fast/cli.py",
    "clasp_fast/py.typed",
    "clasp_fast/_codec.cpython-311-x86_64-linux-gnu.so",
    "clasp_fast/_address.cpython-311-x86_64-linux-gnu.so",
    "clasp_fast-0.1.0.dist-info/METADATA",
    "clasp_fast-0.1.0.dist-info/RECORD",
]
MODULES = {"clasp_fast/__init__.py", "clasp_fast/cli.py"}
EXTENSIONS = ("_codec", "_address")


@needs_source_tree
def test_check_wheel_accepts_a_complete_wheel():
    checker = load_ci_module("check_wheel")
    assert checker.check_wheel_names(GOOD_WHEEL, MODULES, EXTENSIONS) == []
    windows = [name.replace("cpython-311-x86_64-linux-gnu.so", "cp311-win_amd64.pyd")
               for name in GOOD_WHEEL]
    assert checker.check_wheel_names(windows, MODULES, EXTENSIONS) == []


@needs_source_tree
@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda names: [n for n in names if "_address" not in n], "clasp_fast/_address"),
        (lambda names: [n for n in names if "py.typed" not in n], "py.typed is missing"),
        (lambda names: [n for n in names if n != "clasp_fast/cli.py"], "file clasp_fast/cli.py is missing"),
        (lambda names: names + ["clasp_fast/codec.pyx"], "codec.pyx must not be in the wheel"),
        (lambda names: names + ["_ext/buffers.pxd"], "buffers.pxd must not be in the wheel"),
        (lambda names: names + ["clasp_fast/_codec.c"], "_codec.c must not be in the wheel"),
        (lambda names: names + ["tests/test_build.py"], "tests/test_build.py is outside"),
    ],
)
def test_check_wheel_reports_what_is_wrong(change, problem):
    checker = load_ci_module("check_wheel")
    problems = checker.check_wheel_names(change(list(GOOD_WHEEL)), MODULES, EXTENSIONS)
    assert any(problem in p for p in problems), problems


@needs_source_tree
def test_check_wheel_requires_every_module_setup_py_builds(tmp_path):
    checker = load_ci_module("check_wheel")
    assert {"_codec", "_address"} <= set(checker.compiled_modules())
    setup_py = tmp_path / "setup.py"
    setup_py.write_text('MODULES = {\n    "_codec": "_ext/codec.pyx",\n    "_extra": "_ext/x.pyx",\n}\n')
    assert checker.compiled_modules(setup_py) == ("_codec", "_extra")
    problems = checker.check_wheel_names(GOOD_WHEEL, MODULES, ("_codec", "_extra"))
    assert problems == ["compiled module clasp_fast/_extra*.so/.pyd is missing"]


@needs_source_tree
def test_check_wheel_lists_the_source_package_files():
    checker = load_ci_module("check_wheel")
    files = checker.package_files(REPO_ROOT / "clasp_fast")
    assert {"clasp_fast/__init__.py", "clasp_fast/cli/__init__.py", "clasp_fast/errors.py",
            "clasp_fast/py.typed"} <= files
    assert not [name for name in files
                if "__pycache__" in name or name.endswith((".so", ".pyd", ".pyc"))]


@needs_source_tree
def test_check_sdist_names():
    checker = load_ci_module("check_wheel")
    good = ["setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in",
            "_ext/codec.pyx", "_ext/address.pyx", "clasp_fast/__init__.py", "clasp_fast/py.typed"]
    assert checker.check_sdist_names(good) == []
    problems = checker.check_sdist_names(
        [n for n in good if n != "_ext/codec.pyx"] + ["_ext/codec.c", "tests/node/node_modules/ws/a.js"]
    )
    assert any("_ext/codec.pyx is missing" in p for p in problems)
    assert any("_ext/codec.c must not be in the sdist" in p for p in problems)
    assert any("node_modules" in p for p in problems)

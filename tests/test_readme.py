"""The README and docs/*.md as a user meets them.

* every ``python`` block of the README and of the docs written to this rule (:data:`PROGRAM_DOCUMENTS`)
  runs as a complete program (sybil finds the blocks; each one runs in a
  fresh interpreter, on loopback, within a time bound);
* blocks that are not programs are fenced as ``py`` and say ``# fragment`` on their first line;
* every ``python -m clasp_fast ...`` line of an ``sh`` block is accepted by the command's own parser;
* every relative link (and heading anchor) points into the repository, and nothing points at the
  protocol notes' old home outside it;
* the README opens with exactly its two commands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import clasp_fast

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))] if README.exists() else []
# The documents whose python blocks are all complete programs (the others' blocks are excerpts).
PROGRAM_DOCUMENTS = [path for path in DOCUMENTS if path.name in (
    "README.md", "protocol.md", "reference.md", "benchmarks.md", "development.md", "troubleshooting.md",
    "architecture.md")]
PROGRAM_TIMEOUT = 180

pytestmark = pytest.mark.skipif(not README.exists(),
                                reason="README.md is not beside the tests (the installed-package run)")


def _program_env() -> dict[str, str]:
    """The environment of a README program: it imports the clasp_fast these tests import."""
    env = dict(os.environ)
    package_parent = str(Path(clasp_fast.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_program(example) -> None:
    """Sybil evaluator: run the block as ``python program.py`` in an empty folder."""
    folder = Path(example.document.path).parent
    name = f"{Path(example.path).name}, line {example.line}"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="clasp_fast_readme_") as temp:
        program = Path(temp) / "program.py"
        program.write_text(example.parsed, encoding="utf-8")
        try:
            result = subprocess.run([sys.executable, str(program)], cwd=temp, env=_program_env(),
                                    capture_output=True, text=True, timeout=PROGRAM_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name}: still running after {PROGRAM_TIMEOUT} s") from None
    assert result.returncode == 0, f"{name} (in {folder}) exited with {result.returncode}:\n{result.stderr[-4000:]}"


def _sybil_examples(language: str, evaluator=None) -> list:
    from sybil import Sybil
    from sybil.parsers.markdown import CodeBlockParser

    sybil = Sybil(parsers=[CodeBlockParser(language=language, evaluator=evaluator)], path=str(ROOT))
    return [example for path in PROGRAM_DOCUMENTS for example in sybil.parse(path)]


def _id(example) -> str:
    return f"{Path(example.path).relative_to(ROOT)}:{example.line}"


PROGRAMS = _sybil_examples("python", run_program) if DOCUMENTS else []
FRAGMENTS = _sybil_examples("py") if DOCUMENTS else []
SHELL = [*_sybil_examples("sh"), *_sybil_examples("bash")] if DOCUMENTS else []


@pytest.mark.parametrize("example", PROGRAMS, ids=_id)
def test_python_block_runs_as_a_program(example):
    example.evaluate()


@pytest.mark.parametrize("example", FRAGMENTS, ids=_id)
def test_a_block_that_is_no_program_says_so(example):
    assert example.parsed.lstrip().startswith("# fragment"), \
        "a py block is not run: mark it '# fragment: ...' or make it a complete program fenced as python"


def _commands(text: str) -> list[list[str]]:
    """The ``python -m clasp_fast`` commands of a shell block, as argument lists (after the subcommand)."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|", line):
            words = shlex.split(part, comments=True)
            for index in range(len(words) - 2):
                if words[index].endswith("python") and words[index + 1:index + 3] == ["-m", "clasp_fast"]:
                    found.append(words[index + 3:])
    return found


@pytest.mark.parametrize("example", SHELL, ids=_id)
def test_command_lines_are_accepted_by_the_parser(example, capsys):
    from clasp_fast.cli import build_parser

    for argv in _commands(example.parsed):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"`python -m clasp_fast {' '.join(argv)}` is refused: {capsys.readouterr().err}")
            raise AssertionError from exc


def test_shell_blocks_were_found():
    assert len(PROGRAMS) >= 8 and sum(len(_commands(e.parsed)) for e in SHELL) >= 10


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(document):
    text = document.read_text(encoding="utf-8")
    assert "/work/" not in text  # references to outside documents: tests/test_standalone.py
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert ROOT in resolved.parents or resolved == ROOT, f"{target}: outside the repository"
        assert resolved.exists(), f"{document.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{document.name}: no heading #{anchor} in {path or document.name}"


def test_readme_opens_with_its_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    commands = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["pip install -e . && python -m clasp_fast demo", "bash .ci/run"]

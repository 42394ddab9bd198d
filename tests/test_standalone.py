"""The repository stands alone: no file points at documents that live outside it.

Protocol notes are in docs/protocol.md (same section numbers as the notes they replace), the
architecture in docs/architecture.md, the test network rules in docs/development.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"

# Names of documents outside the repository (spelled in pieces so that this file does not match).
OUTSIDE = ["WIRE" + ".md", "NETWORK" + ".md", "DESIGN" + ".md", ".." + "/shared"]
SKIPPED_DIRS = {".git", "node_modules", "build", "dist", ".nox", "__pycache__", ".pytest_cache", ".mypy_cache",
                ".ruff_cache"}
SECTION_REFERENCE = re.compile(r"docs/protocol\.md §(\d+(?:\.\d+)?)")

pytestmark = pytest.mark.skipif(not (ROOT / "setup.py").exists() or not PROTOCOL.exists(),
                                reason="needs the source tree (this is a copy of tests/)")


def tracked_files() -> list[Path]:
    """The files git tracks, or every file of the tree outside build and cache folders without git."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                                timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        listed = b""
    if listed:
        return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]
    return [path for path in ROOT.rglob("*")
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)]


def text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError):
        return []  # binary files (figures, compiled modules) name no documents


def test_nothing_points_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{number}: {name}"
             for path in tracked_files()
             for number, line in enumerate(text_lines(path), 1)
             for name in OUTSIDE if name in line]
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)


def protocol_sections() -> set[str]:
    """The section numbers of docs/protocol.md: headings, and §11's numbered disagreements (§11.1 …)."""
    sections = set()
    chapter = None
    for line in PROTOCOL.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{2,3} (\d+(?:\.\d+)?)[. ]", line)
        if heading:
            sections.add(heading.group(1))
            chapter = heading.group(1)
        elif chapter == "11" and (item := re.match(r"(\d+)\. ", line)):
            sections.add(f"11.{item.group(1)}")
    return sections


def test_protocol_section_references_exist():
    sections = protocol_sections()
    assert {"1.1", "2.1", "10.5", "11.16", "14"} <= sections  # the parser reads the document
    missing = [f"{path.relative_to(ROOT)}:{number}: §{match.group(1)}"
               for path in tracked_files()
               for number, line in enumerate(text_lines(path), 1)
               for match in SECTION_REFERENCE.finditer(line) if match.group(1) not in sections]
    assert not missing, "references to sections docs/protocol.md does not have:\n" + "\n".join(missing)

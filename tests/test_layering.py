"""The package's floors (docs/architecture.md), checked on the import graph of the source.

Every ``import`` and ``from ... import`` in ``clasp_fast/**/*.py`` counts, wherever it stands
(module level or inside a function), and so does the import of each other package's ``__init__``
it implies. The graph must have no cycle, no module may import from a higher floor, the relay and
the user API (side by side on one floor) never import each other, and the compiled core (``_ext/``)
imports nothing of clasp_fast but the error classes. Imports under ``if TYPE_CHECKING`` (annotations
only, never executed) obey the floors too but may close a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "clasp_fast"
EXT = PACKAGE.parent / "_ext"

pytestmark = pytest.mark.skipif(not PACKAGE.joinpath("__init__.py").exists() or not EXT.is_dir(),
                                reason="needs the source tree")

# Floor of each module, by the longest matching name prefix. Higher floors may import lower ones.
FLOORS: dict[str, tuple[int, str]] = {
    "clasp_fast.errors": (0, "base"),
    "clasp_fast._build_check": (0, "base"),
    "clasp_fast._aliases": (0, "base"),
    "clasp_fast._codec": (0, "base"),  # the compiled modules
    "clasp_fast._address": (0, "base"),
    "clasp_fast._dispatch": (0, "base"),
    "clasp_fast._sctp": (0, "base"),
    "clasp_fast._dtls": (0, "base"),
    "clasp_fast._udp": (0, "base"),
    "clasp_fast.wire": (1, "wire"),
    "clasp_fast.runtime": (1, "runtime"),
    "clasp_fast.transport": (2, "transport"),
    "clasp_fast.relay": (3, "relay"),
    "clasp_fast.relay_client": (3, "user API"),
    "clasp_fast.client": (3, "user API"),
    "clasp_fast.p2p": (3, "user API"),
    "clasp_fast.hybrid": (3, "user API"),
    # Stream blocks the transport and the relay build on (floor 2, beside the transport).
    "clasp_fast.clock": (2, "streams"),
    "clasp_fast.conflation": (2, "streams"),
    "clasp_fast.metrics": (2, "streams"),
    "clasp_fast.fanout": (3, "user API"),
    "clasp_fast.cli": (4, "tools"),
    "clasp_fast.bench": (4, "tools"),
    "clasp_fast.__main__": (4, "tools"),
}
ROOT = "clasp_fast"  # the package facade: lazy re-exports of everything, imported by nothing inside
SIDES = ("relay", "user API")  # one floor, never importing each other


def floor_of(module: str) -> tuple[int, str] | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = FLOORS.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def aliases() -> dict[str, str]:
    """The documented paths of clasp_fast._aliases (read from the source, not imported)."""
    tree = ast.parse((PACKAGE / "_aliases.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "ALIASES":
            return ast.literal_eval(node.value)
    raise AssertionError("clasp_fast/_aliases.py has no ALIASES table")


def _type_checking_imports(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                found.update(id(sub) for sub in ast.walk(inner) if isinstance(sub, (ast.Import, ast.ImportFrom)))
    return found


def import_graph(modules: dict[str, Path], *, typing_imports: bool = True) -> dict[str, set[str]]:
    """module -> the clasp_fast modules it imports (aliases resolved, parent packages included);
    without ``typing_imports``, those under ``if TYPE_CHECKING`` are left out."""
    table = aliases()
    known = set(modules) | {m for m in FLOORS if m.startswith("clasp_fast._")}

    def resolve(name: str) -> str:
        parts = name.split(".")
        for end in range(len(parts), 1, -1):  # a documented path: the module it names
            real = table.get(".".join(parts[:end]))
            if real is not None:
                name = ".".join([real, *parts[end:]])
                break
        while name not in known and "." in name:  # an attribute of a module: the module
            name = name.rsplit(".", 1)[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        skipped = set() if typing_imports else _type_checking_imports(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets.update(f"{source}.{alias.name}" for alias in node.names)
        edges: set[str] = set()
        for target in targets:
            if target != ROOT and not target.startswith(ROOT + "."):
                continue
            resolved = resolve(target)
            # Importing a.b.c runs a.b's __init__ first: an edge, unless a.b is an ancestor of the
            # importing module (already running then, as the facade clasp_fast always is).
            parts = resolved.split(".")
            for end in range(1, len(parts) + 1):
                module = ".".join(parts[:end])
                if end == len(parts) or not (name == module or name.startswith(module + ".")):
                    edges.add(module)
        edges.discard(name)
        graph[name] = {edge for edge in edges if edge in known or edge == ROOT}
    return graph


def source_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in path.parts}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in sorted(graph.items()):
        if source == ROOT:
            continue
        mine = floor_of(source)
        for target in sorted(targets):
            if target == ROOT:
                problems.append(f"{source} imports the package facade clasp_fast; import the module instead")
                continue
            theirs = floor_of(target)
            if mine is None or theirs is None:
                continue  # reported by test_every_module_has_a_floor
            if theirs[0] > mine[0]:
                problems.append(f"{source} ({mine[1]}) imports {target} ({theirs[1]}), a higher floor")
            elif theirs[0] == mine[0] and {mine[1], theirs[1]} == set(SIDES):
                problems.append(f"{source} ({mine[1]}) imports {target} ({theirs[1]}): they sit side by side")
    return problems


def test_every_module_has_a_floor():
    unplaced = [name for name in source_modules() if name != ROOT and floor_of(name) is None]
    assert unplaced == [], f"add these to FLOORS here and to docs/architecture.md: {unplaced}"


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph(source_modules(), typing_imports=False)) == []


def test_no_module_imports_a_higher_floor_and_relay_and_user_api_stay_apart():
    assert violations(import_graph(source_modules())) == []


def test_documented_paths_point_at_modules_of_the_tree():
    modules = source_modules()
    for documented, real in aliases().items():
        assert documented not in modules, f"{documented} is both an alias and a file"
        assert real in modules, f"{documented} -> {real}, which does not exist"


# The compiled modules may reach each other through their .pxd interfaces (the dispatcher uses the
# decoder and the index without Python calls), and nothing else of clasp_fast but the errors.
COMPILED = {"clasp_fast._codec", "clasp_fast._address", "clasp_fast._sctp", "clasp_fast._dtls",
            "clasp_fast._udp", "clasp_fast._dispatch"}


def test_the_compiled_core_imports_only_the_error_classes():
    pattern = re.compile(r"^\s*(?:from\s+(clasp_fast[\w.]*)\s+c?import|c?import\s+(clasp_fast[\w.]*))", re.M)
    found = {}
    for path in sorted(EXT.glob("*.p[yx][xid]")):
        for match in pattern.finditer(path.read_text()):
            found.setdefault(match.group(1) or match.group(2), []).append(path.name)
    assert set(found) <= {"clasp_fast.errors"} | COMPILED, found
    assert "clasp_fast.errors" in found  # the check reads the sources it means to


def test_the_checks_catch_what_they_are_for():
    # A cycle through a lazy import, a lower floor importing a higher one, the two sides meeting.
    graph = {
        "clasp_fast.relay_client": {"clasp_fast.hybrid", "clasp_fast.wire"},
        "clasp_fast.hybrid": {"clasp_fast.relay_client"},
        "clasp_fast.transport.webrtc": {"clasp_fast.p2p"},
        "clasp_fast.relay.router": {"clasp_fast.client", "clasp_fast.errors"},
        "clasp_fast.wire": set(),
    }
    assert cycles(graph) == [["clasp_fast.hybrid", "clasp_fast.relay_client"]]
    assert violations(graph) == [
        "clasp_fast.relay.router (relay) imports clasp_fast.client (user API): they sit side by side",
        "clasp_fast.transport.webrtc (transport) imports clasp_fast.p2p (user API), a higher floor",
    ]
    source = 'def later():\n    from ..hybrid import HybridClient\nif TYPE_CHECKING:\n    from ..p2p import Peer\n'
    tree = ast.parse(source)
    assert {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} == {"hybrid", "p2p"}
    assert len(_type_checking_imports(tree)) == 1

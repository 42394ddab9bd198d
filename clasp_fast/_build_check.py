"""Import the compiled core, or explain how to build it."""

from __future__ import annotations

import importlib
from types import ModuleType
from pathlib import Path

BUILD_HINT = (
    "clasp_fast's compiled extension {name!r} is not built or cannot be loaded ({error}). "
    "Build it with `pip install -e .` (or `pip install .`) from the source tree, which needs "
    "a C compiler and the Python headers, or run `python setup.py build_ext --inplace`; "
    "or install a wheel built elsewhere (`python -m build --wheel` in the source tree, then "
    "`pip install dist/clasp_fast-*.whl`)."
)

SOURCE_TREE_HINT = (
    " Note: this clasp_fast was imported from the source tree at {tree} (the current directory "
    "comes first on sys.path), which shadows any installed copy: build the tree in place with "
    "`pip install -e .`, or run from another directory."
)


def load_extension(name: str) -> ModuleType:
    """Import ``clasp_fast.<name>`` and turn a failure into an ImportError that says how to build it."""
    try:
        return importlib.import_module(f"clasp_fast.{name}")
    except ImportError as error:
        message = BUILD_HINT.format(name=f"clasp_fast.{name}", error=error)
        tree = Path(__file__).resolve().parent.parent
        if (tree / "setup.py").exists() and (tree / "_ext").is_dir():
            message += SOURCE_TREE_HINT.format(tree=tree)
        raise ImportError(message) from error

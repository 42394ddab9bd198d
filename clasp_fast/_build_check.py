"""Import the compiled core, or explain how to build it."""

from __future__ import annotations

import importlib

BUILD_HINT = (
    "clasp_fast's compiled extension {name!r} is not built or cannot be loaded ({error}). "
    "Build it with `pip install -e .` (or `pip install .`) from the source tree, which needs "
    "a C compiler and the Python headers, or run `python setup.py build_ext --inplace`; "
    "or install a prebuilt wheel with `pip install clasp-fast`."
)


def load_extension(name: str):
    """Import ``clasp_fast.<name>`` and turn a failure into an ImportError that says how to build it."""
    try:
        return importlib.import_module(f"clasp_fast.{name}")
    except ImportError as error:
        raise ImportError(BUILD_HINT.format(name=f"clasp_fast.{name}", error=error)) from error

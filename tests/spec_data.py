"""Where the shared conformance data lives, and loaders for it.

The data sits in ``../shared/spec`` beside the repository (CI lays it there too).
``CLASP_SPEC_DIR`` overrides the location, e.g. when the tests run from a copy
against an installed wheel.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = Path(os.environ.get("CLASP_SPEC_DIR", REPO_ROOT.parent / "shared" / "spec"))


@lru_cache(maxsize=None)
def load_json(relative: str):
    """Load ``relative`` (e.g. ``"vectors/reference_rust.json"``) from the spec directory."""
    path = SPEC_DIR / relative
    if not path.exists():
        raise FileNotFoundError(
            f"conformance data {path} not found: the shared spec must sit at ../shared/spec "
            "beside the repository, or set CLASP_SPEC_DIR"
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)

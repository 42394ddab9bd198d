"""The conformance data the tests check against, and a loader for it.

The files in ``tests/data/`` are facts about the CLASP protocol: frames produced by the reference
codec and the official clients (``vectors/``), wildcard cases (``patterns.json``) and recorded
conversations with the reference router (``router_transcripts.json``). ``docs/protocol.md`` says
what they contain.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"


@cache
def load_json(relative: str):
    """Load ``relative`` (e.g. ``"vectors/reference_rust.json"``) from ``tests/data``."""
    with open(DATA_DIR / relative, encoding="utf-8") as handle:
        return json.load(handle)

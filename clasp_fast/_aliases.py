"""The documented import paths of modules that live in a floor package.

``import clasp_fast.sctp`` (or ``from clasp_fast.webrtc import WebRtcConfig``) gives the module of
its floor, :mod:`clasp_fast.transport.sctp`: the same module object, so a monkeypatch or an
``isinstance`` check through either name sees the same thing. The table is the whole mechanism;
:func:`install` puts it first on ``sys.meta_path``; it answers only for the names in the table
(no file has those names), so it shadows nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Sequence

#: Documented path -> the module it names.
ALIASES: dict[str, str] = {
    "clasp_fast.address": "clasp_fast.wire.address",
    "clasp_fast.codec": "clasp_fast.wire.codec",
    "clasp_fast.messages": "clasp_fast.wire.messages",
    "clasp_fast.signaling": "clasp_fast.transport.signaling",
    "clasp_fast.webrtc": "clasp_fast.transport.webrtc",
    "clasp_fast.sctp": "clasp_fast.transport.sctp",
    "clasp_fast.fast_path": "clasp_fast.transport.fast_path",
    "clasp_fast.ice": "clasp_fast.transport.ice",
    "clasp_fast.dtls_records": "clasp_fast.transport.dtls_records",
    "clasp_fast.udp_batch": "clasp_fast.transport.udp_batch",
    "clasp_fast.auth": "clasp_fast.relay.auth",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in ALIASES:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder, replaced by the real module in exec_module

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns whatever sys.modules holds under the name once this is done.
        sys.modules[module.__name__] = importlib.import_module(ALIASES[module.__name__])


def install() -> None:
    """Make the documented paths importable (idempotent)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())

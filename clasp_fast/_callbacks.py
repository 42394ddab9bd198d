"""User callbacks by address pattern: the compiled dispatcher (``clasp_fast._dispatch``).

One registry serves the relay client, each P2P peer and the hybrid client: they differ in where
messages come from, not in how a message finds its callbacks. ``CallbackRegistry.receive`` also
decodes a whole DataChannel message and delivers it without leaving compiled code
(docs/architecture-core.md).
"""

from __future__ import annotations

from ._build_check import load_extension

load_extension("_dispatch")  # a missing build fails here with a message that says how to build

from ._dispatch import CallbackRegistry, Subscription, wants_message  # noqa: E402

__all__ = ["CallbackRegistry", "Subscription", "wants_message"]

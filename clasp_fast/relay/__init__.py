"""The embedded CLASP relay: the WebSocket server (:mod:`.server`) in front of a socket-free
:class:`~clasp_fast.relay.router.Router` with its store, client-id claims, auth and fair queues."""

from __future__ import annotations

from .server import Relay

__all__ = ["Relay"]

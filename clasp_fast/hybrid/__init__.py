"""The hybrid client: a relay client plus direct P2P links, with exactly-once failover.

* :mod:`.routing` -- :class:`HybridClient`: the route of each send, failure detection, fallback;
* :mod:`.exactly_once` -- numbering, acknowledgements, duplicate tracking and relay envelopes.
"""

from __future__ import annotations

from .exactly_once import ENVELOPE_ID, EPOCH_ADDRESS, SEQ_FEATURE
from .routing import PEER_PREFIX, HybridClient, P2POptions, Route, RoutingMode

__all__ = ["HybridClient", "P2POptions", "Route", "RoutingMode", "ENVELOPE_ID", "EPOCH_ADDRESS", "PEER_PREFIX",
           "SEQ_FEATURE"]

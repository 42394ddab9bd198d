"""What the runner and its worker processes agree on: the measured paths and the payload header.

Kept apart from :mod:`clasp_fast.bench.worker` so that importing the package never imports the
worker, which runs as ``python -m clasp_fast.bench.worker`` (runpy warns when the module it is
about to run was imported already).
"""

from __future__ import annotations

__all__ = ["ADDRESS", "EVENT_LOOPS", "HEADER_SIZE", "PATHS", "PATTERN", "SCENARIOS"]

# p2p_send_many: p2p_batched with the sender handing over many messages per call (send_many).
# p2p_stock_sctp: p2p_batched over aiortc's own SCTP (WebRtcConfig(fast_sctp=False)), for comparison.
PATHS = ("p2p_batched", "p2p_send_many", "p2p_unbatched", "p2p_unreliable", "p2p_stock_sctp", "p2p_no_plane",
         "p2p_no_dtls", "relay")
ADDRESS = "/bench/data"  # where every measured message goes
PATTERN = "/bench/**"  # what the relay path's receivers subscribe to
HEADER_SIZE = 13  # stamp u64 + phase u8 + sequence u32
# Stream scenarios (clasp_fast.bench.scenarios), run only when asked for (--scenarios).
SCENARIOS = ("conflation", "p2p_fanout")

#: What the worker processes run on (``--loop``); uvloop is the optional extra ``clasp_fast[uvloop]``.
EVENT_LOOPS = ("asyncio", "uvloop")

"""clasp_fast: CLASP peers talking directly (WebRTC DataChannels) and fast (a compiled core)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import _aliases
from ._build_check import load_extension

_aliases.install()

load_extension("_codec")
load_extension("_address")
load_extension("_sctp")

from .errors import (  # noqa: E402
    AddressError,
    ClaspError,
    DecodeError,
    EncodeError,
    PatternError,
    ProtocolError,
    SignalingError,
    TransportError,
    URLError,
)

from .wire.address import (  # noqa: E402
    Pattern,
    SubscriptionIndex,
    glob_match,
    is_valid_address,
    validate_address,
    validate_pattern,
)
from .wire.codec import decode, decode_all, decode_frame, encode, frame_size, iter_frames  # noqa: E402
from .wire.messages import *  # noqa: E402,F403
from .wire.messages import __all__ as _message_names  # noqa: E402

# The networking API is imported on first use, so `import clasp_fast` for the codec alone does not
# pay for aiortc and websockets.
_LAZY = {
    "ClaspBuilder": "client",
    "ClaspClient": "relay_client",
    "HybridClient": "hybrid.routing",
    "P2POptions": "hybrid.routing",
    "ClaspP2P": "p2p.endpoint",
    "Peer": "p2p.peer",
    "PeerInfo": "p2p.directory",
    "Relay": "relay.server",
    "InMemorySignaling": "transport.signaling",
    "SignalingChannel": "transport.signaling",
    "ChannelSpec": "transport.webrtc",
    "WebRtcConfig": "transport.webrtc",
    "WebRtcTransport": "transport.webrtc",
    "ClockSync": "clock",
    "PeerClock": "clock",
    "Metrics": "metrics",
    "ConflationPolicy": "conflation",
    "ConflatingHandler": "conflation",
    "LatestValueQueue": "conflation",
    "FanoutGroup": "fanout",
}

if TYPE_CHECKING:  # pragma: no cover
    from .hybrid.routing import HybridClient, P2POptions
    from .client import ClaspBuilder
    from .p2p.directory import PeerInfo
    from .p2p.endpoint import ClaspP2P
    from .p2p.peer import Peer
    from .relay.server import Relay
    from .relay_client import ClaspClient
    from .transport.signaling import InMemorySignaling, SignalingChannel
    from .transport.webrtc import ChannelSpec, WebRtcConfig, WebRtcTransport
    from .clock import ClockSync, PeerClock
    from .conflation import ConflatingHandler, ConflationPolicy, LatestValueQueue
    from .fanout import FanoutGroup
    from .metrics import Metrics


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clasp_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    *_LAZY,
    "AddressError",
    "ClaspError",
    "DecodeError",
    "EncodeError",
    "PatternError",
    "ProtocolError",
    "SignalingError",
    "TransportError",
    "URLError",
    "__version__",
    "Pattern",
    "SubscriptionIndex",
    "glob_match",
    "is_valid_address",
    "validate_address",
    "validate_pattern",
    "decode",
    "decode_all",
    "decode_frame",
    "encode",
    "frame_size",
    "iter_frames",
    *_message_names,
]

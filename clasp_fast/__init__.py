"""clasp_fast: CLASP peers talking directly (WebRTC DataChannels) and fast (a compiled core)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._build_check import load_extension

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

from .address import (  # noqa: E402
    Pattern,
    SubscriptionIndex,
    glob_match,
    is_valid_address,
    validate_address,
    validate_pattern,
)
from .codec import decode, decode_all, decode_frame, encode, frame_size, iter_frames  # noqa: E402
from .messages import *  # noqa: E402,F403
from .messages import __all__ as _message_names  # noqa: E402

# The networking API is imported on first use, so `import clasp_fast` for the codec alone does not
# pay for aiortc and websockets.
_LAZY = {
    "ClaspBuilder": "client",
    "ClaspClient": "client",
    "HybridClient": "hybrid",
    "P2POptions": "hybrid",
    "ClaspP2P": "p2p",
    "Peer": "p2p",
    "PeerInfo": "p2p",
    "Relay": "relay",
    "InMemorySignaling": "signaling",
    "SignalingChannel": "signaling",
    "ChannelSpec": "webrtc",
    "WebRtcConfig": "webrtc",
    "WebRtcTransport": "webrtc",
}

if TYPE_CHECKING:  # pragma: no cover
    from .client import ClaspBuilder, ClaspClient
    from .hybrid import HybridClient, P2POptions
    from .p2p import ClaspP2P, Peer, PeerInfo
    from .relay import Relay
    from .signaling import InMemorySignaling, SignalingChannel
    from .webrtc import ChannelSpec, WebRtcConfig, WebRtcTransport


def __getattr__(name: str):
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

"""clasp_fast: CLASP peers talking directly (WebRTC DataChannels) and fast (a compiled core)."""

from __future__ import annotations

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

from .client import ClaspBuilder, ClaspClient  # noqa: E402
from .hybrid import HybridClient, P2POptions  # noqa: E402
from .p2p import ClaspP2P, Peer, PeerInfo  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AddressError",
    "ClaspError",
    "DecodeError",
    "EncodeError",
    "PatternError",
    "ProtocolError",
    "SignalingError",
    "TransportError",
    "__version__",
    "ClaspBuilder",
    "ClaspClient",
    "ClaspP2P",
    "HybridClient",
    "P2POptions",
    "Peer",
    "PeerInfo",
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

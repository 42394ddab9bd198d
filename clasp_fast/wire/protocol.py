"""Protocol constants and the addresses built from them, defined once for every floor above.

The relay, the transports and the clients all speak these: the relay's port and WebSocket
subprotocol, frame limits, the P2P signaling and discovery addresses (docs/protocol.md §10), the feature
strings peers advertise, and the protocol's clock.
"""

from __future__ import annotations

import time

from ..errors import SignalingError

__all__ = [
    "ANNOUNCE_ADDRESS",
    "ANNOUNCE_FEATURES",
    "BATCH_FEATURE",
    "DEFAULT_PORT",
    "DEFAULT_RELAY_URL",
    "CLOCK_FEATURE",
    "KEEPALIVE_FEATURE",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "P2P_PREFIX",
    "PEER_PREFIX",
    "PRESENCE_FEATURE",
    "PRESENCE_PREFIX",
    "SIGNAL_PREFIX",
    "WS_SUBPROTOCOL",
    "is_p2p_signaling",
    "now_us",
    "peer_target",
    "presence_address",
    "presence_owner",
    "signal_address",
]

#: The relay's usual port, and the URL of a relay on this machine.
DEFAULT_PORT = 7330
DEFAULT_RELAY_URL = f"ws://127.0.0.1:{DEFAULT_PORT}"
#: The WebSocket subprotocol of CLASP (docs/protocol.md §1.1).
WS_SUBPROTOCOL = "clasp"

#: The largest frame payload, and the largest frame (a 12-byte header with a timestamp).
MAX_PAYLOAD = 65535
MAX_FRAME = 12 + MAX_PAYLOAD

#: P2P signaling and discovery through a relay (docs/protocol.md §10): signals are PUBLISHed to
#: SIGNAL_PREFIX + target session, announces to ANNOUNCE_ADDRESS; clasp_fast peers also keep a
#: presence param at PRESENCE_PREFIX + own session.
P2P_PREFIX = "/clasp/p2p/"
SIGNAL_PREFIX = P2P_PREFIX + "signal/"
ANNOUNCE_ADDRESS = P2P_PREFIX + "announce"
PRESENCE_PREFIX = P2P_PREFIX + "presence/"

#: Addresses under /peer/{client_id}/ go to that peer (the hybrid client's routing).
PEER_PREFIX = "/peer/"

#: Features: what the reference announce lists, then clasp_fast's own (in offers, answers,
#: announces and presence).
ANNOUNCE_FEATURES = ("webrtc", "reliable", "unreliable")
PRESENCE_FEATURE = "presence"
BATCH_FEATURE = "batch"  # accepts several frames per DataChannel message
KEEPALIVE_FEATURE = "keepalive"  # PING/PONG on the negotiated control channel
CLOCK_FEATURE = "clock"  # SYNC requests instead of PINGs on the control channel: a continuous clock estimate


def now_us() -> int:
    """Wall-clock time in microseconds since the Unix epoch: the time base of CLASP timestamps."""
    return time.time_ns() // 1000


def signal_address(target: str) -> str:
    """The PUBLISH address that carries signals to session ``target`` (docs/protocol.md §10.1)."""
    if not target or "/" in target:
        raise SignalingError("a signal target must be one non-empty address segment", peer=target, step="signal")
    return SIGNAL_PREFIX + target


def presence_address(session_id: str) -> str:
    """The presence param of session ``session_id``."""
    return PRESENCE_PREFIX + session_id


def presence_owner(address: str) -> str | None:
    """The session id a presence param address names, or None if ``address`` is no presence param."""
    if not address.startswith(PRESENCE_PREFIX):
        return None
    owner = address[len(PRESENCE_PREFIX):]
    return owner if owner and "/" not in owner else None


def is_p2p_signaling(address: str) -> bool:
    """Whether ``address`` carries P2P signaling: a signal, the announce or a presence param."""
    return address.startswith(P2P_PREFIX) and (
        address.startswith(SIGNAL_PREFIX) or address == ANNOUNCE_ADDRESS or address.startswith(PRESENCE_PREFIX))


def peer_target(address: str) -> str | None:
    """The client id ``address`` is routed to (``/peer/{id}/...``), or None."""
    if not address.startswith(PEER_PREFIX):
        return None
    end = address.find("/", len(PEER_PREFIX))
    target = address[len(PEER_PREFIX):end] if end > 0 else address[len(PEER_PREFIX):]
    return target or None

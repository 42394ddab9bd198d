"""CLASP peer to peer: :class:`ClaspP2P` finds peers and connects to them over WebRTC.

* :mod:`.endpoint` -- :class:`ClaspP2P`: signaling, offers and answers, the connections per session;
* :mod:`.peer` -- :class:`Peer`: one connection (send, ``on``, params, GET);
* :mod:`.discovery` -- how peers are found: :class:`RelayDiscovery`, :class:`StaticDiscovery`;
* :mod:`.directory` -- :class:`PeerInfo` and the table of known peers.
"""

from __future__ import annotations

from .directory import MAX_PRESENCE_TTL, PeerDirectory, PeerInfo
from .discovery import Discovery, LocalPeer, RelayDiscovery, StaticDiscovery
from .endpoint import DEFAULT_RELAY_URL, PRESENCE_PREFIX, AcceptHook, ClaspP2P
from .peer import MessageHook, Peer, PeerStats

__all__ = [
    "AcceptHook",
    "ClaspP2P",
    "DEFAULT_RELAY_URL",
    "Discovery",
    "LocalPeer",
    "MAX_PRESENCE_TTL",
    "MessageHook",
    "PRESENCE_PREFIX",
    "Peer",
    "PeerDirectory",
    "PeerInfo",
    "PeerStats",
    "RelayDiscovery",
    "StaticDiscovery",
]

"""CLASP peer to peer: :class:`ClaspP2P` finds peers and connects to them over WebRTC."""

from __future__ import annotations

from .endpoint import *  # noqa: F403
from .endpoint import __all__

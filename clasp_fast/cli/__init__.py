"""The command line, ``python -m clasp_fast`` / ``clasp-fast``: relay, peer, demo, bench, encode, decode."""

from __future__ import annotations

from .main import build_parser, main, relay_auth

__all__ = ["build_parser", "main", "relay_auth"]

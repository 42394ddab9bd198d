"""Addresses, wildcard patterns and the subscription index (docs/protocol.md §9).

Live matching (:class:`Pattern`, :class:`SubscriptionIndex`) follows the
reference router's delivery: ``*`` is exactly one segment (possibly empty),
``**`` is zero or more segments, a segment with an embedded ``*`` (``zone5*``)
is one segment checked by the glob, everything else is literal.
:func:`glob_match` is the router's other matcher (subscribe-time SNAPSHOT,
QUERY), which differs on a few edge cases such as ``/a/**`` vs ``/a``.
"""

from __future__ import annotations

from .._address import (
    Pattern,
    SubscriptionIndex,
    glob_match,
    is_valid_address,
    validate_address,
    validate_pattern,
)

__all__ = [
    "Pattern",
    "SubscriptionIndex",
    "glob_match",
    "is_valid_address",
    "validate_address",
    "validate_pattern",
]

"""The hybrid client: a relay client plus direct P2P links, with exactly-once failover."""

from __future__ import annotations

from .routing import *  # noqa: F403
from .routing import __all__

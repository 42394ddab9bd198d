"""The relay client API: :class:`ClaspClient` and :class:`ClaspBuilder`."""

from __future__ import annotations

from .relay_client import *  # noqa: F403
from .relay_client import __all__

"""The relay client API: :class:`ClaspClient` (a connection to a CLASP relay) and :class:`ClaspBuilder`.

::

    client = await ClaspClient.connect("ws://127.0.0.1:7330", name="mixer")
    # or: client = await ClaspBuilder(url).name("mixer").connect()
    # or, with direct P2P links: await ClaspBuilder(url).with_p2p(client_id="mixer").connect()

:class:`ClaspClient` lives in :mod:`clasp_fast.relay_client`, below P2P and the hybrid client that
build on it; the builder sits above them all, since it makes either a client or a hybrid client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .relay_client import ClaspClient, ClaspTimeoutError, MessageHook, validate_url
from .transport.signaling import RelaySignaling

if TYPE_CHECKING:  # the P2P stack (aiortc) is imported only when a builder asks for it
    from .hybrid.routing import HybridClient, P2POptions
    from .transport.webrtc import WebRtcConfig

__all__ = ["ClaspBuilder", "ClaspClient", "ClaspTimeoutError", "MessageHook", "RelaySignaling", "validate_url"]


class ClaspBuilder:
    """Fluent construction: ``await ClaspBuilder(url).name("x").features([...]).connect()``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._options: dict[str, Any] = {}
        self._p2p: "P2POptions | None" = None

    def name(self, name: str) -> "ClaspBuilder":
        self._options["name"] = name
        return self

    def token(self, token: str) -> "ClaspBuilder":
        self._options["token"] = token
        return self

    def features(self, features: Iterable[str]) -> "ClaspBuilder":
        self._options["features"] = list(features)
        return self

    def reconnect(self, enabled: bool = True, *, max_delay: float | None = None,
                  max_attempts: int | None = None) -> "ClaspBuilder":
        self._options["reconnect"] = enabled
        if max_delay is not None:
            self._options["reconnect_max_delay"] = max_delay
        if max_attempts is not None:
            self._options["reconnect_max_attempts"] = max_attempts
        return self

    def connect_timeout(self, seconds: float) -> "ClaspBuilder":
        self._options["connect_timeout"] = seconds
        return self

    def with_p2p(self, enabled: bool = True, *, rtc_config: WebRtcConfig | None = None, prefer_p2p: bool = True,
                 fallback_to_router: bool = True, **options: Any) -> "ClaspBuilder":
        """Add direct P2P links: ``connect()`` then returns a ``clasp_fast.hybrid.HybridClient``.

        ``options`` are further ``clasp_fast.hybrid.P2POptions`` fields (``client_id``,
        ``retry_interval``, ``connect_timeout``, ``presence_interval``, ``accept``).
        """
        from .hybrid.routing import P2POptions

        self._p2p = P2POptions(enabled=enabled, rtc_config=rtc_config, prefer_p2p=prefer_p2p,
                               fallback_to_router=fallback_to_router, **options)
        return self

    def build(self) -> ClaspClient:
        """The client, not yet connected."""
        return ClaspClient(self._url, **self._options)

    async def connect(self) -> "ClaspClient | HybridClient":
        """Build and connect: a ``ClaspClient``, or a ``HybridClient`` when ``with_p2p`` enabled P2P."""
        client = self.build()
        p2p = self._p2p
        if p2p is not None and p2p.enabled:
            from .hybrid.routing import HybridClient

            return await HybridClient(client, p2p).open()
        await client.open()
        return client

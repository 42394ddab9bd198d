"""How a ClaspP2P learns of other peers and makes itself known: a pluggable :class:`Discovery`.

* :class:`RelayDiscovery` -- through a relay (docs/protocol.md §10): every ``presence_interval`` seconds
  it sets the param ``/clasp/p2p/presence/{session_id}`` to ``{client_id, session_id, features,
  ttl}`` with an absolute TTL of three intervals, so peers that subscribe later find it in the
  SNAPSHOT the relay sends on subscribing to ``/clasp/p2p/presence/*``, and publishes the reference
  announce ``{session_id, p2p_capable, features, client_id}`` to ``/clasp/p2p/announce``, which
  reference peers listen to. A newcomer heard by its announce is answered with an announce.
* :class:`StaticDiscovery` -- a fixed list of peers (tests, in-process use, peers configured by hand).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from ..errors import ClaspError, ProtocolError
from ..runtime.tasks import TaskSet
from ..wire.messages import Ttl
from ..wire.protocol import ANNOUNCE_ADDRESS, PRESENCE_PREFIX, presence_address
from .directory import MAX_PRESENCE_TTL, PeerDirectory, PeerInfo

if TYPE_CHECKING:
    from ..relay_client import ClaspClient

__all__ = ["Discovery", "LocalPeer", "RelayDiscovery", "StaticDiscovery"]

log = logging.getLogger("clasp_fast.p2p")


class LocalPeer(Protocol):
    """What a discovery tells others about this side (a ``ClaspP2P`` is one)."""

    client_id: str
    features: tuple[str, ...]
    presence_interval: float
    presence_ttl: int

    @property
    def session_id(self) -> str | None: ...


class Discovery(Protocol):
    """Where a ``ClaspP2P`` learns of peers (into its :class:`PeerDirectory`) and announces itself."""

    async def start(self, local: LocalPeer, directory: PeerDirectory) -> None:
        """Begin: make ``local`` known and keep ``directory`` up to date until :meth:`close`.

        A refusal (such as a relay that will not let ``local`` use its client id) is raised here.
        """
        ...

    async def close(self) -> None:
        """Stop, and withdraw what was announced where that is possible."""
        ...


class StaticDiscovery:
    """Peers known up front: each entry is in the directory from the start and never lapses."""

    def __init__(self, peers: Iterable[PeerInfo] = ()) -> None:
        self._peers = list(peers)

    async def start(self, local: LocalPeer, directory: PeerDirectory) -> None:
        for info in self._peers:
            directory.learn(info.session_id, info.client_id, list(info.features), "static", None)

    async def close(self) -> None:
        return None


class RelayDiscovery:
    """Presence params and announces through the relay ``client`` is connected to."""

    def __init__(self, client: "ClaspClient") -> None:
        self.client = client
        self._local: LocalPeer | None = None
        self._directory: PeerDirectory | None = None
        self._tasks: TaskSet | None = None
        self._presence_address: str | None = None
        self._closed = False

    async def start(self, local: LocalPeer, directory: PeerDirectory) -> None:
        self._local = local
        self._directory = directory
        self._tasks = TaskSet(directory.errors.report)
        client = self.client
        client.on_connect(self._on_relay_reconnect)
        await client.subscribe(PRESENCE_PREFIX + "*", self._on_presence)
        await client.subscribe(ANNOUNCE_ADDRESS, self._on_announce)
        # Waits for the relay's ACK: a relay that refuses the client id (ERROR 409 taken,
        # 301 not granted by the token) makes start() raise that ProtocolError.
        await self._publish_presence(wait=True)
        self._tasks.spawn(self._refresh_presence())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client = self.client
        if client.connected and self._presence_address is not None:
            try:
                await client.set(self._presence_address, None, ttl=Ttl.absolute(1), wait=False)
            except ClaspError:
                pass
        if self._tasks is not None:
            await self._tasks.cancel_and_wait()

    # -- hearing others ------------------------------------------------------------------

    def _on_presence(self, value: Any, address: str) -> None:
        directory = self._directory
        assert directory is not None and self._local is not None
        session_id = address[len(PRESENCE_PREFIX):]
        if value is None:
            directory.forget(session_id)
            return
        if not isinstance(value, dict):
            directory.errors.report(ProtocolError(
                f"presence value must be a map, got {type(value).__name__}; ignored", address=address))
            return
        ttl = value.get("ttl")  # the sender's refresh period decides when its entry is stale
        if type(ttl) is not int or not 1 <= ttl <= MAX_PRESENCE_TTL:
            ttl = self._local.presence_ttl
        directory.learn(session_id, value.get("client_id"), value.get("features"), "presence", time.monotonic() + ttl)

    def _on_announce(self, value: Any, address: str) -> None:
        directory = self._directory
        assert directory is not None and self._tasks is not None
        if not isinstance(value, dict):
            directory.errors.report(ProtocolError(
                f"announce value must be a map, got {type(value).__name__}; ignored", address=address))
            return
        if directory.learn(value.get("session_id"), value.get("client_id"), value.get("features"), "announce", None):
            # A newcomer: announce back so reference peers (which only listen to announces) see us.
            self._tasks.spawn(self._announce())

    # -- being heard ---------------------------------------------------------------------

    async def _announce(self) -> None:
        client, local = self.client, self._local
        if not client.connected or local is None:
            return
        await client.emit(ANNOUNCE_ADDRESS, {"session_id": client.session_id, "p2p_capable": True,
                                             "features": list(local.features), "client_id": local.client_id})

    async def _publish_presence(self, wait: bool = False) -> None:
        client, local = self.client, self._local
        if not client.connected or local is None or client.session_id is None:
            return
        address = presence_address(client.session_id)
        if self._presence_address is not None and self._presence_address != address:
            # The relay client reconnected under a new session id. A clasp_fast relay has already
            # removed the old entry and refuses this write (only a session writes its own presence).
            assert self._tasks is not None
            self._tasks.spawn(self._withdraw_quietly(self._presence_address))
        self._presence_address = address
        value = {"client_id": local.client_id, "session_id": client.session_id, "features": list(local.features),
                 "ttl": local.presence_ttl}
        await client.set(address, value, ttl=Ttl.absolute(local.presence_ttl), wait=wait)
        await self._announce()

    async def _withdraw_quietly(self, address: str) -> None:
        try:
            await self.client.set(address, None, ttl=Ttl.absolute(1))
        except ClaspError:
            pass

    async def _refresh_presence(self) -> None:
        assert self._local is not None and self._directory is not None
        while not self._closed:
            await asyncio.sleep(self._local.presence_interval)
            self._directory.forget_stale()
            try:
                await self._publish_presence()
            except ClaspError as exc:
                log.info("presence refresh failed: %s", exc)

    def _on_relay_reconnect(self) -> None:
        if not self._closed and self._tasks is not None:
            self._tasks.spawn(self._publish_presence())

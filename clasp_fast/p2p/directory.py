"""The peers a ClaspP2P knows of: by session id, looked up by session id or client id."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ProtocolError, TransportError
from ..runtime.sink import ErrorSink

__all__ = ["MAX_PRESENCE_TTL", "PeerDirectory", "PeerInfo"]

#: The longest presence TTL a peer's entry is trusted for (a larger advertised TTL is not honoured).
MAX_PRESENCE_TTL = 60


@dataclass
class PeerInfo:
    """What is known about a peer: its session id, client id (None for reference peers) and features."""

    session_id: str
    client_id: str | None = None
    features: tuple[str, ...] = ()
    p2p_capable: bool = True
    source: str = "announce"  # "presence", "announce", "offer" or "static"
    last_seen: float = field(default_factory=time.monotonic)
    expires: float | None = None  # monotonic time after which the entry is stale
    claimed_at: float = field(default_factory=time.monotonic)  # when this session's client id claim began

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now


class PeerDirectory:
    """Known peers by session id, fed by a :class:`~clasp_fast.p2p.discovery.Discovery`.

    A client id claimed by announces only lapses after ``ttl`` seconds unless it is repeated; an
    entry from presence lives until the expiry it came with. When two live sessions claim one
    client id, the claim seen first keeps it and the later one is reported once to ``errors``.
    """

    def __init__(self, errors: ErrorSink, ttl: int, *, own_session: Callable[[], str | None],
                 in_use: Callable[[str], bool]) -> None:
        self.errors = errors
        self.ttl = ttl
        self._own_session = own_session
        self._in_use = in_use  # a session with an open connection is never forgotten as stale
        self._peers: dict[str, PeerInfo] = {}
        self._claim_conflicts: set[str] = set()  # sessions reported as second claimants of a client id
        self._changed = asyncio.Event()

    def peers(self) -> list[PeerInfo]:
        """Known peers, stale entries left out."""
        now = time.monotonic()
        return [info for info in self._peers.values() if info.live(now)]

    def get(self, session_id: str) -> PeerInfo | None:
        return self._peers.get(session_id)

    def find(self, id: str) -> PeerInfo | None:
        """The known peer whose session id or client id is ``id`` (the first live claim of a client id)."""
        info = self._peers.get(id)
        if info is not None:
            return info
        matches = [p for p in self.peers() if p.client_id == id]
        return min(matches, key=lambda p: p.claimed_at) if matches else None

    async def wait_for(self, id: str, timeout: float) -> PeerInfo:
        """Wait until a peer with client id or session id ``id`` is known."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            info = self.find(id)
            if info is not None:
                return info
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportError(f"no peer with client id or session id {id!r} found", peer=id, step="discovery")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def add(self, session_id: str, source: str) -> PeerInfo:
        """The entry of ``session_id``, made (from ``source``) if it is new."""
        info = self._peers.get(session_id)
        if info is None:
            info = self._peers[session_id] = PeerInfo(session_id=session_id, source=source)
            self._changed.set()
        return info

    def learn(self, session_id: Any, client_id: Any, features: Any, source: str, expires: float | None) -> bool:
        """Record what a presence, announce or static entry says; True when the session is new."""
        if not isinstance(session_id, str) or not session_id or session_id == self._own_session():
            return False
        now = time.monotonic()
        info = self._peers.get(session_id)
        is_new = info is None
        if info is None:
            info = self._peers[session_id] = PeerInfo(session_id=session_id, source=source)
        if isinstance(client_id, str) and client_id and (client_id != info.client_id or not info.live(now)):
            # A new claim (a lapsed claim that comes back is new too): it ranks after the live ones.
            info.client_id = client_id
            info.claimed_at = now
        if isinstance(features, (list, tuple)):
            info.features = tuple(f for f in features if isinstance(f, str))
        info.last_seen = now
        if source in ("presence", "static"):
            info.source = source
            info.expires = expires
        elif info.source not in ("presence", "static"):
            # A client id claimed only by announces lapses like presence unless it is repeated.
            info.expires = now + self.ttl if info.client_id else None
        if info.client_id:
            self._check_claim(info)
        self._changed.set()
        return is_new

    def forget(self, session_id: str) -> None:
        self._claim_conflicts.discard(session_id)
        if self._peers.pop(session_id, None) is not None:
            self._changed.set()

    def forget_stale(self) -> None:
        """Drop entries stale for a whole TTL (peers that left without withdrawing)."""
        limit = time.monotonic() - self.ttl
        for session_id, info in list(self._peers.items()):
            if info.expires is not None and info.expires < limit and not self._in_use(session_id):
                self.forget(session_id)

    def _check_claim(self, info: PeerInfo) -> None:
        """Report once when ``info`` claims a client id that another live session claimed first."""
        if info.session_id in self._claim_conflicts:
            return
        first = self.find(info.client_id or "")
        if first is None or first is info:
            return
        self._claim_conflicts.add(info.session_id)
        self.errors.report(ProtocolError(
            f"two live sessions claim client id {info.client_id!r}: {first.session_id} (seen first, kept) "
            f"and {info.session_id} (ignored)"))

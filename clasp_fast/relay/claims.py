"""P2P client ids on the relay: which session may go by which name.

A ``ClaspP2P`` peer names itself with a client id in two places the relay sees: its presence
param ``/clasp/p2p/presence/{session_id}`` (a map ``{client_id, session_id, features}``) and
its announce PUBLISH to ``/clasp/p2p/announce``. Peers look others up by that id, so the
relay makes sure a session can only use an id it holds a *claim* on:

* one claim per session; claiming another id gives up the previous one;
* the first live claim of an id wins, a second session's claim is refused (ERROR 409);
* in authenticated mode the token must also grant the id (a ``claim:`` scope, see
  :mod:`clasp_fast.auth`; ERROR 301 otherwise);
* a claim ends when its session closes, or when its presence param is withdrawn (set to
  null) or expires.
"""

from __future__ import annotations

from ..wire.protocol import PRESENCE_PREFIX, presence_owner

__all__ = ["ClientIdClaims", "PRESENCE_PREFIX", "MAX_CLIENT_ID", "client_id_problem", "presence_owner"]

MAX_CLIENT_ID = 256  # characters


def client_id_problem(client_id: object) -> str | None:
    """Why ``client_id`` cannot be a client id (None when it can)."""
    if not isinstance(client_id, str):
        return f"client_id must be a string, not {type(client_id).__name__}"
    if not client_id or "/" in client_id:
        return f"client_id {client_id!r} must be one non-empty address segment (no '/')"
    if len(client_id) > MAX_CLIENT_ID:
        return f"client_id is {len(client_id)} characters long (at most {MAX_CLIENT_ID})"
    return None


class ClientIdClaims:
    """The client ids claimed by live sessions (keyed by session id strings)."""

    __slots__ = ("_holders", "_ids")

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}  # client id -> session id
        self._ids: dict[str, str] = {}  # session id -> client id

    def __len__(self) -> int:
        return len(self._holders)

    def holder(self, client_id: str) -> str | None:
        """The session holding ``client_id``, if any."""
        return self._holders.get(client_id)

    def claimed_by(self, session_id: str) -> str | None:
        """The client id ``session_id`` holds, if any."""
        return self._ids.get(session_id)

    def claim(self, session_id: str, client_id: str) -> None:
        """Give ``client_id`` to ``session_id`` (the caller checked it is free), dropping its old id."""
        old = self._ids.get(session_id)
        if old == client_id:
            return
        if old is not None:
            del self._holders[old]
        self._holders[client_id] = session_id
        self._ids[session_id] = client_id

    def release(self, session_id: str) -> str | None:
        """End the claim of ``session_id``; return the id it held."""
        client_id = self._ids.pop(session_id, None)
        if client_id is not None:
            del self._holders[client_id]
        return client_id

"""Tokens and scopes for the relay's authenticated mode (docs/protocol.md §8.1, §8.9, §9.3).

A relay started with ``auth=`` checks the token of every HELLO with a *validator*:
any callable ``(token) -> Scopes`` that raises :class:`TokenRejected` (ERROR 300) or
:class:`TokenExpired` (ERROR 302). :class:`TokenAuth` is the ready-made one, a fixed
table of tokens::

    auth = TokenAuth({"cpsk_desk": ["read:/lights/**", "write:/lights/**"]},
                     expires={"cpsk_desk": time.time() + 3600})
    relay = await Relay.start(port=0, auth=auth)

A scope is ``read:PATTERN``, ``write:PATTERN`` or ``claim:IDS``; there is no admin
scope, and write does not imply read. ``PATTERN`` is matched like the reference's
``Pattern::matches``: ``glob_match`` (§9.3) when it contains ``*``, otherwise plain
equality — so ``write:/lights/**`` does not cover ``/lights`` itself.

``claim:IDS`` names the P2P client ids a session may claim in its presence param and
announces (``claim:mixer``, ``claim:sensor-*``; ``*`` is any run of characters). A
token without a claim scope can still do P2P by session id, but cannot take a name.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

from ..wire.address import glob_match, validate_pattern
from ..errors import ClaspError

__all__ = ["Scopes", "TokenAuth", "TokenExpired", "TokenRejected", "Validator", "scope_matches"]

ACTIONS = ("read", "write", "claim")


class TokenRejected(ClaspError):
    """The token is unknown or invalid: the relay answers ERROR 300 and disconnects."""

    code = 300


class TokenExpired(TokenRejected):
    """The token was valid but has expired: the relay answers ERROR 302 and disconnects."""

    code = 302


def scope_matches(pattern: str, address: str) -> bool:
    """Whether a scope pattern covers ``address``: glob if the pattern has ``*``, else equality."""
    if "*" in pattern:
        return glob_match(pattern, address)
    return pattern == address


class Scopes:
    """What one token may do: the patterns of its ``read:``, ``write:`` and ``claim:`` scopes."""

    __slots__ = ("read", "write", "claim")

    def __init__(self, scopes: Iterable[str]) -> None:
        found: dict[str, list[str]] = {action: [] for action in ACTIONS}
        for scope in scopes:
            action, pattern = parse_scope(scope)
            found[action].append(pattern)
        self.read = tuple(found["read"])
        self.write = tuple(found["write"])
        self.claim = tuple(found["claim"])

    def can_read(self, address: str) -> bool:
        """SUBSCRIBE (for its pattern), GET and receiving data need a read scope covering the address."""
        return any(scope_matches(p, address) for p in self.read)

    def can_write(self, address: str) -> bool:
        """SET and PUBLISH (P2P signals and announces included) need a write scope covering the address."""
        return any(scope_matches(p, address) for p in self.write)

    def can_claim(self, client_id: str) -> bool:
        """A P2P client id in a presence param or announce needs a claim scope naming it."""
        return any(scope_matches(p, client_id) for p in self.claim)

    def strings(self) -> list[str]:
        """The scopes as ``action:pattern`` strings: reads, writes, then claims."""
        return [f"{action}:{p}" for action in ACTIONS for p in getattr(self, action)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scopes) and (self.read, self.write, self.claim) == (
            other.read, other.write, other.claim)

    def __repr__(self) -> str:
        return f"Scopes({self.strings()!r})"


def parse_scope(scope: str) -> tuple[str, str]:
    """Split ``read:/a/**`` into ``("read", "/a/**")``; ValueError naming the bad part."""
    action, sep, pattern = scope.partition(":")
    if not sep or action not in ACTIONS:
        raise ValueError(f"scope {scope!r}: expected 'read:PATTERN', 'write:PATTERN' or 'claim:IDS'")
    if action == "claim":
        if not pattern or "/" in pattern:
            raise ValueError(f"scope {scope!r}: a claim scope names client ids: non-empty, no '/'")
        return action, pattern
    try:
        validate_pattern(pattern)
    except ClaspError as exc:
        raise ValueError(f"scope {scope!r}: invalid pattern: {exc}") from None
    return action, pattern


Validator = Callable[[str], Scopes]
"""A token validator: returns the token's scopes or raises TokenRejected / TokenExpired."""


class TokenAuth:
    """A fixed table of tokens and their scopes, with optional expiry times (Unix seconds)."""

    def __init__(
        self,
        tokens: Mapping[str, Iterable[str]],
        *,
        expires: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens: dict[str, Scopes] = {}
        for token, scopes in tokens.items():
            if not token:
                raise ValueError("a token must not be empty")
            if isinstance(scopes, str):
                raise ValueError(f"token {token!r}: scopes must be a list of strings, not one string")
            try:
                self.tokens[token] = Scopes(scopes)
            except ValueError as exc:
                raise ValueError(f"token {token!r}: {exc}") from None
        self.expires: dict[str, float] = dict(expires or {})
        unknown = set(self.expires) - set(self.tokens)
        if unknown:
            raise ValueError(f"expiry given for unknown tokens: {sorted(unknown)!r}")
        self._clock = clock

    def __call__(self, token: str) -> Scopes:
        scopes = self.tokens.get(token)
        if scopes is None:
            raise TokenRejected("Invalid token")
        expiry = self.expires.get(token)
        if expiry is not None and self._clock() >= expiry:
            raise TokenExpired("Token expired")
        return scopes

    def revoke(self, token: str) -> None:
        """Forget ``token``: later handshakes with it get ERROR 300 (open sessions stay)."""
        self.tokens.pop(token, None)
        self.expires.pop(token, None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenAuth) and (self.tokens, self.expires) == (other.tokens, other.expires)

    def __repr__(self) -> str:
        return f"TokenAuth({len(self.tokens)} tokens)"

"""Bare-WebSocket helpers for relay tests: a CLASP session without a client library in between."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect

from clasp_fast.codec import decode, encode
from clasp_fast.messages import Error, Hello, Ping, Pong, Snapshot, Welcome


async def recv(ws: ClientConnection, timeout: float = 5.0):
    """The next message, decoded; TimeoutError when none comes within ``timeout``."""
    return decode(await asyncio.wait_for(ws.recv(), timeout))


async def session(url: str, token: str | None = None, *, snapshot: bool = True):
    """A WebSocket past WELCOME (and, with ``snapshot``, the SNAPSHOT after it).

    Returns (ws, session id, params of that SNAPSHOT or None)."""
    ws = await connect(url, subprotocols=["clasp"], max_size=None)
    await ws.send(encode(Hello(name="test", token=token)))
    welcome = await recv(ws)
    assert isinstance(welcome, Welcome), welcome
    params = None
    if snapshot:
        first = await recv(ws)
        assert isinstance(first, Snapshot), first
        params = first.params
    return ws, welcome.session, params


async def round_trip(ws: ClientConnection) -> None:
    """PING/PONG: every frame the relay queued for this session before handling the PING arrives
    before the PONG (a lane that held frames first is served first), so a PONG as the next frame is
    the sentinel that nothing else was on its way."""
    await ws.send(encode(Ping()))
    reply = await recv(ws)
    assert isinstance(reply, Pong), reply


async def expect_error(ws: ClientConnection, code: int, address: str | None) -> Error:
    error = await recv(ws)
    assert isinstance(error, Error), error
    assert (error.code, error.address) == (code, address), error
    return error


"""clasp_fast on whichever aiortc of the declared range (1.14-1.16) is installed.

Where every seam of the fast path is there (aiortc 1.16), connections run the fast SCTP path and
its data plane; where one is missing (1.14 and 1.15), they keep aiortc's own SCTP with a logged
reason and no exception. Either way a transport connects, carries bulk and small messages both
ways and closes. The main CI run has the newest aiortc; noxfile.py's ``floors`` session runs this
file (with the rest of its subset) on the oldest.
"""

from __future__ import annotations

import asyncio
import logging

import aiortc
from aiortc import RTCSctpTransport

from clasp_fast import sctp
from clasp_fast.messages import Set
from tests.test_webrtc import connected, loopback


async def _exchange(a, b, count: int, size: int) -> None:
    got: list = []
    done = asyncio.Event()

    def on_message(message) -> None:
        got.append(message.value)
        if len(got) == count:
            done.set()

    b.receiver.on_message(on_message)
    for i in range(count):
        await a.sender.send(Set(address=f"/range/{i % 7}", value=bytes([i % 256]) * size))
    await asyncio.wait_for(done.wait(), 30)
    assert got == [bytes([i % 256]) * size for i in range(count)]


async def test_the_installed_aiortc_runs_the_fast_path_or_falls_back_saying_why(monkeypatch, caplog):
    monkeypatch.setattr(sctp, "_fallback_logged", set())
    missing = sctp.missing_sctp_seams()
    with caplog.at_level(logging.WARNING, logger="clasp_fast"):
        async with connected(loopback(), loopback()) as (a, b, _, _):
            transports = [t.peer_connection.sctp for t in (a, b)]
            fresh = aiortc.RTCPeerConnection()
            fresh.createDataChannel("probe")
            missing += sctp.missing_sctp_seams(fresh.sctp)
            await fresh.close()
            if missing:
                assert all(type(t) is RTCSctpTransport for t in transports)
            else:
                assert all(isinstance(t, sctp.FastSctpTransport) and t.data_plane is not None for t in transports)
            await _exchange(a, b, 40, 60_000)
            await _exchange(b, a, 400, 16)
    if missing:
        assert "fast SCTP path is off" in caplog.text and missing[0] in caplog.text
    else:
        assert "fast SCTP path is off" not in caplog.text
    if aiortc.__version__.startswith("1.16."):
        assert not missing  # the newest aiortc of the range runs everything


def test_a_buffered_amount_kept_elsewhere_is_a_missing_seam(monkeypatch):
    # FastSctpTransport adds to the attribute RTCDataChannel.bufferedAmount reads; an aiortc that
    # keeps the amount elsewhere keeps its own SCTP path.
    assert "RTCDataChannel._RTCDataChannel__bufferedAmount" not in sctp.missing_sctp_seams()
    monkeypatch.setattr(aiortc.RTCDataChannel, "bufferedAmount", property(lambda self: self._amount))
    assert "RTCDataChannel._RTCDataChannel__bufferedAmount" in sctp.missing_sctp_seams()


def test_an_event_emitter_without_pyees_listener_table_is_a_missing_seam(monkeypatch):
    # FastSctpTransport calls a channel's single "message" handler from pyee's table (a once
    # listener's wrapper, which removes it); an emitter that keeps its listeners otherwise keeps
    # aiortc's own SCTP path.
    class OtherEmitter:
        def __init__(self) -> None:
            self._handlers: dict[str, list] = {}

        def once(self, event, f) -> None:
            self._handlers.setdefault(event, []).append(f)

        def listeners(self, event) -> list:
            return list(self._handlers.get(event, []))

        def emit(self, event, *args) -> None:
            for f in self._handlers.pop(event, []):
                f(*args)

    assert sctp.EMITTER_TABLE not in sctp.missing_sctp_seams()
    assert sctp._emitter_table_works() is True
    assert sctp._emitter_table_works(OtherEmitter) is False
    monkeypatch.setattr(sctp, "_EMITTER_TABLE_WORKS", sctp._emitter_table_works(OtherEmitter))
    assert sctp.EMITTER_TABLE in sctp.missing_sctp_seams()

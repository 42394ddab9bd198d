"""conftest.py for aiortc's own test suite, run by ``run_aiortc_suite.py`` against clasp_fast.

The runner copies this file beside the ``tests/`` folder of aiortc's sdist. It

* keeps every connection on loopback: host candidates on 127.0.0.1 only and no default STUN server
  (aiortc's default is a public one). The runner also starts pytest inside a fresh network
  namespace when it can;
* substitutes clasp_fast's ``FastPeerConnection`` and ``FastSctpTransport`` for aiortc's
  ``RTCPeerConnection`` and ``RTCSctpTransport`` in the namespace of every collected test module,
  so the tests build the fast data path wherever they name aiortc's classes;
* counts the FastSctpTransports the tests built (written to ``$CLASP_AIORTC_SUITE_COUNT``), so the
  runner can tell that the substitution took effect;
* with ``CLASP_AIORTC_SUITE_ADAPT=1``, adapts the fast path to the private seams aiortc's unit tests
  drive (see :func:`adapt_private_seams`), to show what is left when only those differ.
"""

from __future__ import annotations

import os

import aioice.ice
import pytest
from aiortc import rtcsctptransport
from aiortc.rtcicetransport import RTCIceGatherer

from clasp_fast import _sctp
from clasp_fast.sctp import FastPeerConnection, FastSctpTransport


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_only
RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])  # type: ignore[method-assign]

SUBSTITUTES = {"RTCPeerConnection": FastPeerConnection, "RTCSctpTransport": FastSctpTransport}
_built = {"transports": 0}
_fast_init = FastSctpTransport._fast_init


def _counting_fast_init(self: FastSctpTransport) -> None:
    _built["transports"] += 1
    _fast_init(self)


FastSctpTransport._fast_init = _counting_fast_init  # type: ignore[method-assign]


def adapt_private_seams() -> None:
    """Make the fast path use the three private seams aiortc's SCTP unit tests rely on.

    Those tests capture what is sent by replacing ``_send_chunk`` (one chunk per call), drive a
    transport whose association never started, and count the window in user-data bytes. Here
    every packet the fast path builds is handed to ``_send_chunk`` chunk by chunk, transmitting is
    allowed before the association is up, and a queued chunk is booked at its user-data size.
    """
    established = rtcsctptransport.RTCSctpTransport.State.ESTABLISHED

    async def send_packet(self, control: bytes, chunks: list) -> None:
        packet = _sctp.build_packet(5000, 5000, 0, control, chunks)
        for chunk in rtcsctptransport.parse_packet(packet)[3]:
            await self._send_chunk(chunk)

    transmit = FastSctpTransport._transmit

    async def transmit_any_state(self) -> None:
        state = self._association_state
        self._association_state = established
        try:
            await transmit(self)
        finally:
            if self._association_state is established:
                self._association_state = state

    enqueue = FastSctpTransport._enqueue

    def enqueue_at_user_data_size(self, *args) -> None:
        before = len(self._outbound_queue)
        enqueue(self, *args)
        for chunk in list(self._outbound_queue)[before:]:
            self._outbound_bytes -= chunk._book_size - len(chunk.user_data)
            chunk._book_size = len(chunk.user_data)

    FastSctpTransport._send_packet = send_packet  # type: ignore[method-assign]
    FastSctpTransport._transmit = transmit_any_state  # type: ignore[method-assign]
    FastSctpTransport._enqueue = enqueue_at_user_data_size  # type: ignore[method-assign]


if os.environ.get("CLASP_AIORTC_SUITE_ADAPT") == "1":
    adapt_private_seams()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    modules = {item.module for item in items if getattr(item, "module", None) is not None}
    for module in modules:
        for name, substitute in SUBSTITUTES.items():
            if name in vars(module):
                setattr(module, name, substitute)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("CLASP_AIORTC_SUITE_COUNT")
    if path:
        with open(path, "w") as out:
            out.write(str(_built["transports"]))

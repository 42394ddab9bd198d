"""Every test in this folder runs on uvloop's event loop instead of asyncio's.

The modules here take the behaviour tests of a few suites (the data plane, send_many, the P2P
endpoint and its lifecycle, the WebRTC transport, the SCTP timers and the flush hold, the relay, the
relay client and the hybrid client) by importing them, so the same assertions run on both loops;
each module skips when uvloop is not installed (it is in the test extra where uvloop exists: not on
Windows). What only uvloop does is in test_uvloop_data_plane.py.
"""

from __future__ import annotations


def pytest_asyncio_loop_factories(config, item):
    import uvloop

    return {"uvloop": uvloop.new_event_loop}

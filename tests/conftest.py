"""Fixtures shared by the tests.

``relay`` is an embedded relay on 127.0.0.1 (an ephemeral port), closed after the test. A module
that needs other relay options says so once: ``pytestmark = pytest.mark.relay_options(auth=...)``.
``make_relay(**options)`` starts further relays, all closed after the test.
"""

from __future__ import annotations

import signal

import pytest

from clasp_fast.relay import Relay


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "relay_options(**options): options of the `relay` fixture's Relay")
    # A shell starting the run in the background (`bash .ci/run &`) ignores SIGINT, and children
    # inherit an ignored signal: the tests that stop CLI processes with Ctrl-C (SIGINT) need them
    # to get Python's KeyboardInterrupt, so the signal gets its usual handler back here.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
async def make_relay():
    started: list[Relay] = []

    async def start(**options) -> Relay:
        relay = await Relay.start(host="127.0.0.1", port=0, **options)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.close()


@pytest.fixture
async def relay(request, make_relay) -> Relay:
    marker = request.node.get_closest_marker("relay_options")
    return await make_relay(**(marker.kwargs if marker else {}))

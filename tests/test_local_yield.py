"""``yield_to_local_peer``: a message that leaves at once toward a peer on this host gives the CPU up.

Real aiortc peer connections on loopback (tests/sctp_pair.py) and real WebRtcTransports. What the
yield does to latency is measured by the bench (docs/data-plane.md); here: when it happens.
"""

from __future__ import annotations

import asyncio
import os
import select

import pytest

from clasp_fast import fast_path
from clasp_fast.fast_path import same_host
from clasp_fast.messages import Publish

from tests.sctp_pair import close_pair, connect_pair, wait_until
from tests.test_webrtc import connected, loopback

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_yield"), reason="no os.sched_yield here")


@pytest.mark.parametrize("local, remote, expected", [
    ("127.0.0.1", "127.0.0.1", True),
    ("192.0.2.7", "127.0.0.2", True),  # any loopback address
    ("::1", "::1", True),
    ("192.0.2.7", "192.0.2.7", True),  # this host's own address: the kernel keeps it local
    ("fe80::1%eth0", "fe80::1%eth0", True),
    ("192.0.2.7", "::ffff:127.0.0.1", True),  # an IPv4-mapped loopback address
    ("::ffff:192.0.2.7", "192.0.2.7", True),
    ("192.0.2.7", "192.0.2.8", False),
    ("2001:db8::1", "2001:db8::2", False),
    ("192.0.2.7", "peer.local", False),  # a name: not known to be local
])
def test_same_host(local, remote, expected):
    assert same_host(local, remote) is expected


async def _idle(sctp) -> None:
    await wait_until(lambda: sctp.idle(), timeout=5)


async def test_a_message_that_leaves_at_once_to_a_local_peer_yields_once():
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        arrived: list[bytes] = []
        remote.on("message", arrived.append)
        sctp = o.sctp
        assert sctp.data_plane.peer_on_this_host()
        await _idle(sctp)
        before = sctp.stats.yields
        local.send(b"alone")
        assert sctp.stats.yields == before + 1
        await wait_until(lambda: arrived == [b"alone"], timeout=5)
        await _idle(sctp)
        # A burst: the first message leaves at once, the others wait for the end of the iteration.
        for i in range(10):
            local.send(bytes([i]) * 10)
        assert sctp.stats.yields == before + 2
        await wait_until(lambda: len(arrived) == 11, timeout=5)
        assert arrived[1:] == [bytes([i]) * 10 for i in range(10)]
    finally:
        await close_pair(o, a)


async def test_the_yield_comes_once_the_packet_is_in_the_peers_socket(monkeypatch):
    # What the receiver needs is there before the sender gives the CPU up; the sender's timers
    # and bookkeeping come after.
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        arrived: list[bytes] = []
        remote.on("message", arrived.append)
        pair = a.sctp.transport.transport._connection._nominated[1]
        peer_socket = pair.protocol.transport.get_extra_info("socket")
        seen: list[tuple[bool, bool]] = []
        real_yield = fast_path._sched_yield

        def recording_yield() -> None:
            readable = bool(select.select([peer_socket], [], [], 0)[0])
            seen.append((readable, o.sctp._t3_handle is None))
            real_yield()

        monkeypatch.setattr(fast_path, "_sched_yield", recording_yield)
        await _idle(o.sctp)
        local.send(b"x")
        assert seen == [(True, True)]
        assert o.sctp._t3_handle is not None  # started once the packet had left
        await wait_until(lambda: arrived == [b"x"], timeout=5)
    finally:
        await close_pair(o, a)


async def test_no_yield_when_turned_off():
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")],
                                                   offerer_options={"yield_to_local_peer": False})
    try:
        arrived: list[bytes] = []
        remote.on("message", arrived.append)
        assert o.sctp.yield_to_local_peer is False and a.sctp.yield_to_local_peer is True
        for i in range(3):
            await _idle(o.sctp)
            local.send(bytes([i]))
        await wait_until(lambda: len(arrived) == 3, timeout=5)
        assert o.sctp.stats.yields == 0
    finally:
        await close_pair(o, a)


@pytest.mark.parametrize("enabled", [True, False])
async def test_webrtc_config_sets_it(enabled):
    async with connected(loopback(yield_to_local_peer=enabled), loopback()) as (a, b, _, _):
        got = asyncio.Event()
        b.receiver.on_message(lambda message: got.set())
        sctp = a.peer_connection.sctp
        assert sctp.yield_to_local_peer is enabled
        await _idle(sctp)
        await a.sender.send(Publish(address="/yield/test", signal="event", value=1))
        await asyncio.wait_for(got.wait(), 5)
        assert (sctp.stats.yields > 0) is enabled

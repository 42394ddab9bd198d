"""Two aiortc peer connections in one process on loopback, for the SCTP data path tests.

Either side can run clasp_fast's FastSctpTransport or aiortc's own; :class:`FaultyLink` drops,
duplicates and reorders SCTP packets on their way from SCTP to DTLS, from a seeded generator.
"""

from __future__ import annotations

import asyncio
import random
from typing import Awaitable, Callable

from aiortc import RTCConfiguration, RTCPeerConnection

from clasp_fast.ice import install_gathering_policy, is_loopback
from clasp_fast.sctp import FastSctpTransport, peer_connection_class


def _restrict_to_loopback(pc: RTCPeerConnection) -> None:
    install_gathering_policy(
        pc.sctp.transport.transport.iceGatherer._connection,
        host_addresses=["127.0.0.1"],
        udp_receive_buffer=4 * 1024 * 1024,
    )


async def connect_pair(fast_offerer: bool, fast_answerer: bool, channels: list[dict], *,
                       offerer_options: dict | None = None, answerer_options: dict | None = None) -> tuple:
    """Connect two peers; the offerer creates ``channels`` (RTCPeerConnection.createDataChannel kwargs).
    ``*_options``: FastPeerConnection's data plane options (fast_dtls, udp_batching).

    Returns (offerer pc, answerer pc, offerer channels, answerer channels), each channel open.
    """
    # No ICE servers: without a configuration aiortc would query a public STUN server.
    offerer = peer_connection_class(fast_offerer, **(offerer_options or {}))(RTCConfiguration(iceServers=[]))
    answerer = peer_connection_class(fast_answerer, **(answerer_options or {}))(RTCConfiguration(iceServers=[]))
    local = [offerer.createDataChannel(**spec) for spec in channels]
    _restrict_to_loopback(offerer)
    remote: dict[str, object] = {}
    all_remote = asyncio.Event()

    @answerer.on("datachannel")
    def on_datachannel(channel) -> None:
        remote[channel.label] = channel
        if len(remote) == len(channels):
            all_remote.set()

    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    _restrict_to_loopback(answerer)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    for pc in (offerer, answerer):
        assert pc.sctp.transport.transport.iceGatherer._connection.stun_server is None
    for description in (offerer.localDescription, answerer.localDescription):
        for line in description.sdp.splitlines():
            if line.startswith("a=candidate:"):
                assert is_loopback(line.split()[4]), line

    async def opened(channel) -> None:
        if channel.readyState != "open":
            event = asyncio.Event()
            channel.on("open", event.set)
            if channel.readyState != "open":
                await event.wait()

    await asyncio.wait_for(asyncio.gather(all_remote.wait(), *(opened(c) for c in local)), 15)
    assert isinstance(offerer.sctp, FastSctpTransport) == fast_offerer
    assert isinstance(answerer.sctp, FastSctpTransport) == fast_answerer
    return offerer, answerer, local, [remote[spec["label"]] for spec in channels]


def count_t3_expiries(sender) -> list[int]:
    """Count the sender's T3 expiries (in the returned one-item list)."""
    expiries = [0]
    t3_expired = sender._t3_expired

    def counting_t3_expired() -> None:
        expiries[0] += 1
        t3_expired()

    sender._t3_expired = counting_t3_expired
    return expiries


class Faults:
    """A seeded, bounded plan of faults: for each item, what a faulty link does with it.

    ``next()`` says "drop", "hold" (deliver after the next item, or soon), "send" or "send twice";
    after ``limit`` items every answer is "send", so every test ends.
    """

    def __init__(self, *, seed: int, loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
                 limit: int = 100_000) -> None:
        self.random = random.Random(seed)
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self.limit = limit
        self.seen = self.dropped = self.duplicated = self.reordered = 0
        self.holding = False

    def next(self) -> str:
        self.seen += 1
        if self.seen > self.limit:
            return "send"
        roll = self.random.random()
        if roll < self.loss:
            self.dropped += 1
            return "drop"
        if roll < self.loss + self.reorder and not self.holding:
            self.reordered += 1
            return "hold"
        if roll < self.loss + self.reorder + self.duplicate:
            self.duplicated += 1
            return "send twice"
        return "send"


def nominated(pc):
    return pc.sctp.transport.transport._connection._nominated[1]


class DatagramFaults(Faults):
    """Drops, duplicates and reorders one peer's outgoing DTLS application records below DTLS
    (seeded), through aioice's ``send_data`` replaced on the ICE protocol (a seam the data plane
    honours)."""

    def __init__(self, pc, **faults) -> None:
        super().__init__(**faults)
        self.held: bytes | None = None
        self.pair = nominated(pc)
        self.transport = self.pair.protocol.transport
        self.pair.protocol.send_data = self.send_data

    async def send_data(self, data: bytes, address) -> None:  # aioice awaits it
        action = self.next() if data[0] == 23 else "send"
        if action == "drop":
            return
        if action == "hold":
            self.held, self.holding = data, True
            asyncio.get_running_loop().call_later(0.005, self._release, address)
            return
        self._out(data, address)
        self._release(address)
        if action == "send twice":
            self._out(data, address)

    def _release(self, address) -> None:
        held, self.held, self.holding = self.held, None, False
        if held is not None:
            self._out(held, address)

    def _out(self, data: bytes, address) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(data, address)


class FaultyLink(Faults):
    """Drops, duplicates and reorders the SCTP packets one peer hands to DTLS (seeded, bounded)."""

    def __init__(self, pc: RTCPeerConnection, **faults) -> None:
        super().__init__(**faults)
        self.held: bytes | None = None
        self.dtls = pc.sctp.transport
        self.send: Callable[[bytes], Awaitable[None]] = self.dtls._send_data
        self.dtls._send_data = self._send_data

    async def _send_data(self, data: bytes) -> None:
        action = self.next()
        if action == "drop":
            return
        if action == "hold":
            self.held, self.holding = data, True
            # Released after the next packet, or soon if nothing follows.
            asyncio.get_running_loop().call_later(0.005, lambda: asyncio.ensure_future(self._release()))
            return
        await self.send(data)
        await self._release()
        if action == "send twice":
            await self.send(data)

    async def _release(self) -> None:
        held, self.held, self.holding = self.held, None, False
        if held is not None:
            try:
                await self.send(held)
            except ConnectionError:
                pass


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def close_pair(*pcs: RTCPeerConnection) -> None:
    for pc in pcs:
        await pc.close()

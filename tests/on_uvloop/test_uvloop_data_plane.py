"""What differs on uvloop: its datagram transports cannot pause their reading, so the data plane
leaves the ICE sockets to the loop (one datagram per callback) and keeps its batched sending."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

pytest.importorskip("uvloop")

from clasp_fast.udp_batch import BatchReader  # noqa: E402
from tests.sctp_pair import close_pair, connect_pair, wait_until  # noqa: E402
from tests.test_data_plane import CHANNELS, exchange, plane  # noqa: E402


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagram_received(self, data: bytes, addr) -> None:
        self.datagrams.append(data)


async def test_these_tests_run_on_uvloop():
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")


def open_descriptors() -> set[str]:
    """This process's open file descriptors (Linux and macOS list them under /dev/fd)."""
    return set(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))


async def test_a_batch_reader_refuses_a_transport_it_cannot_pause_and_takes_nothing():
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    try:
        descriptors = open_descriptors()
        with pytest.raises(ValueError, match="UDPTransport cannot pause reading its socket"):
            BatchReader(transport, lambda batch: None)
        assert open_descriptors() == descriptors  # no duplicate descriptor left open
        # The loop still reads the socket for the transport's protocol.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"still read", transport.get_extra_info("sockname"))
        await wait_until(lambda: inbox.datagrams == [b"still read"], 5)
    finally:
        transport.close()


async def test_the_data_plane_says_why_the_loop_keeps_reading_and_still_sends_in_batches(caplog):
    caplog.set_level(logging.INFO, logger="clasp_fast.transport.fast_path")
    o, a, (local,), (remote,) = await connect_pair(True, True, CHANNELS)
    try:
        await exchange(local, remote, [bytes([i]) * 60_000 for i in range(20)])
        for pc in (o, a):
            stats = plane(pc).stats()
            assert not plane(pc).reads_sockets and stats["dtls"] == "compiled"
            assert stats["datagrams_sent"] > stats["send_calls"]  # GSO or sendmmsg, as on asyncio
        reasons = [r.getMessage() for r in caplog.records if "read one datagram at a time" in r.getMessage()]
        assert reasons and all("cannot pause reading its socket" in reason for reason in reasons)
    finally:
        await close_pair(o, a)

"""The record layer under two real aiortc peer connections on loopback (stock aiortc SCTP, real ICE),
clean and with seeded loss, duplication and reordering of datagrams below DTLS.

After the data channels are open, each side's epoch-1 records are taken over at the seams that
clasp_fast.fast_path's data plane uses (docs/data-plane.md), hooked here by the test itself, under aiortc's own SCTP:
``RTCDtlsTransport._send_data`` (every SCTP packet goes out through the layer), aioice's
``Connection.data_received`` (epoch-1 records are read by the layer and handed to SCTP), and
``RTCDtlsTransport.stop`` (close_notify from the layer). tests/test_data_plane.py covers the data plane itself.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from aiortc.rtcdtlstransport import State

from clasp_fast.dtls_records import DtlsRecordLayer, parse_records
from tests.sctp_pair import close_pair, connect_pair

CHANNELS = [{"label": "reliable"}]


class Takeover:
    """Observe one side's incoming DTLS records, then take its records over (test-local hooks)."""

    def __init__(self, pc, faults: random.Random | None = None) -> None:
        self.faults = faults  # after the takeover: drop 1 %, duplicate 5 %, hold back 5 % of datagrams
        self.held: bytes | None = None
        self.dropped = self.duplicated = 0
        self.dtls = pc.sctp.transport
        self.connection = self.dtls.transport._connection
        self.highest_seen: int | None = None
        self.layer: DtlsRecordLayer | None = None
        self.to_sctp = 0
        self._original_received = self.connection.data_received
        self.connection.data_received = self._data_received

    def _data_received(self, data: bytes, component: int) -> None:
        if self.layer is None:
            if data and 19 < data[0] < 64:
                for _, _, epoch, sequence, _, _ in parse_records(data):
                    if epoch == 1 and (self.highest_seen is None or sequence > self.highest_seen):
                        self.highest_seen = sequence
            self._original_received(data, component)
            return
        if self.faults is None:
            self._read(data)
            return
        roll = self.faults.random()
        if roll < 0.01:
            self.dropped += 1
        elif roll < 0.06 and self.held is None:
            self.held = data  # delivered after the next datagram
        else:
            self._read(data)
            if roll < 0.11:
                self.duplicated += 1
                self._read(data)
            held, self.held = self.held, None
            if held is not None:
                self._read(held)

    def _read(self, data: bytes) -> None:
        for content_type, plaintext in self.layer.unprotect_datagram(data):
            receiver = self.dtls._data_receiver
            if content_type == 23 and receiver is not None:
                self.to_sctp += 1
                asyncio.ensure_future(receiver._handle_data(plaintext))
        if self.layer.peer_closed:
            self.connection._queue.put_nowait(None)  # aiortc's own loop then ends the DTLS transport

    def take_over(self) -> None:
        dtls = self.dtls
        self.layer = layer = DtlsRecordLayer.from_ssl_connection(
            dtls._ssl, dtls._role == "client", read_sequence=self.highest_seen)
        send = dtls.transport._send
        original_stop = dtls.stop

        async def send_data(data: bytes) -> None:
            if dtls._state != State.CONNECTED:
                raise ConnectionError("Cannot send encrypted data, not connected")
            await send(layer.protect(data))

        async def stop() -> None:
            if dtls._state == State.CONNECTED and not layer.write_closed:
                await send(layer.close_notify())
            await original_stop()

        dtls._send_data = send_data
        dtls.stop = stop


async def _receive(channel, count: int) -> list:
    received: list = []
    done = asyncio.Event()

    @channel.on("message")
    def on_message(message) -> None:
        received.append(message)
        if len(received) == count:
            done.set()

    return received, done


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "datagram-faults"])
async def test_aiortc_peers_talk_through_the_record_layer_and_close_with_its_close_notify(faults):
    offerer, answerer, (local,), (remote,) = await connect_pair(False, False, CHANNELS)
    try:
        sides = [Takeover(offerer, random.Random(1) if faults else None),
                 Takeover(answerer, random.Random(2) if faults else None)]
        # One message each way, read by OpenSSL while observed: the read sequence to start from.
        warm_remote, warm_remote_done = await _receive(remote, 1)
        warm_local, warm_local_done = await _receive(local, 1)
        local.send(b"warm-up")
        remote.send(b"warm-up")
        await asyncio.wait_for(asyncio.gather(warm_remote_done.wait(), warm_local_done.wait()), 10)
        for side in sides:
            assert side.highest_seen is not None
            side.take_over()

        messages = [bytes([i % 256]) * size for i, size in enumerate([1, 500, 1200, 60_000, 17, 200_000] * 5)]
        at_answerer, answerer_done = await _receive(remote, len(messages))
        at_offerer, offerer_done = await _receive(local, len(messages))
        for message in messages:
            local.send(message)
            remote.send(message)
        await asyncio.wait_for(asyncio.gather(answerer_done.wait(), offerer_done.wait()), 30)
        assert at_answerer == messages and at_offerer == messages

        for side in sides:
            stats = side.layer.stats()
            assert stats["records_sent"] > 100 and stats["records_received"] > 100
            assert stats["bad_mac"] == stats["wrong_epoch"] == stats["malformed"] == 0
            assert side.to_sctp == stats["records_received"]
            if faults:  # every duplicate below DTLS is caught by the replay window
                assert side.duplicated > 0 and stats["replayed"] >= side.duplicated

        for side in sides:
            side.faults = None  # close_notify is never retransmitted: a lost one proves nothing here
        offerer_dtls, answerer_dtls = sides[0].dtls, sides[1].dtls
        await offerer.close()
        for _ in range(200):
            if answerer_dtls.state == "closed":
                break
            await asyncio.sleep(0.01)
        assert sides[1].layer.peer_closed and sides[1].layer.last_alert == (1, 0)
        assert answerer_dtls.state == "closed" and offerer_dtls.state == "closed"
    finally:
        await close_pair(offerer, answerer)

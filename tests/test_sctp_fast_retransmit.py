"""Recovery without the retransmission timer on the fast SCTP path: a lost DATA chunk is sent again
after three SACKs report it missing (RFC 4960 section 7.2.4), and SACKs lost while the congestion
window is full are recovered by a loss probe; in neither case does the sender wait for T3 (at
least a second). Counted, not timed: the T3 expiries of the sender are counted, and there must be
none."""

from __future__ import annotations

import asyncio

import pytest

from tests.sctp_pair import DatagramFaults, close_pair, connect_pair, count_t3_expiries, wait_until
from tests.test_sctp_transport import Collector, numbered

SIZE = 12_000  # one DATA chunk per packet whether packets are 1,189 bytes or 16 KiB (clasp_fast peers)
LOST = b"LOST" + bytes(SIZE - 4)
COUNT = 30  # so many packets, each answered by a SACK, follow the loss


class DropOnce:
    """Drops the first SCTP packet carrying ``marker`` on its way from SCTP to DTLS."""

    def __init__(self, pc, marker: bytes) -> None:
        self.marker = marker
        self.dropped = 0
        dtls = pc.sctp.transport
        self.send = dtls._send_data
        dtls._send_data = self._send_data

    async def _send_data(self, data: bytes) -> None:
        if not self.dropped and self.marker in data:
            self.dropped += 1
            return
        await self.send(data)


def message(i: int) -> bytes:
    return LOST if i == 5 else i.to_bytes(4, "big") + bytes(SIZE - 4)


async def test_a_chunk_lost_once_is_fast_retransmitted_before_any_retransmission_timeout():
    o, a, (local,), (remote,) = await connect_pair(True, True, [dict(label="r")])
    try:
        sender = o.sctp
        expiries = count_t3_expiries(sender)
        link = DropOnce(o, b"LOST")
        got: list[bytes] = []
        complete = asyncio.Event()

        def on_message(data: bytes) -> None:
            got.append(data)
            if len(got) == COUNT:
                complete.set()

        remote.on("message", on_message)
        retransmitted_before = sender.stats.retransmissions
        for i in range(COUNT):
            local.send(message(i))
        await asyncio.wait_for(complete.wait(), 30)
        assert link.dropped == 1
        assert got == [message(i) for i in range(COUNT)]  # in order, the lost one included
        assert sender.stats.retransmissions > retransmitted_before
        assert expiries == [0], "the lost chunk came back only when T3 expired: no fast retransmit"
    finally:
        await close_pair(o, a)


class SacksLostUntilProbed(DatagramFaults):
    """Drops every DTLS application record (SACKs) the receiver sends until the sender's first
    loss probe, once ``armed``."""

    def __init__(self, receiver, sender) -> None:
        super().__init__(receiver, seed=0)
        self.sender, self.armed = sender, False

    def next(self) -> str:
        if self.armed and self.sender.stats.loss_probes == 0:
            self.dropped += 1
            return "drop"
        return "send"


@pytest.mark.parametrize("fast_receiver", [True, False], ids=["to-fast", "to-stock-aiortc"])
async def test_sacks_lost_while_the_window_is_full_are_recovered_by_a_loss_probe(fast_receiver):
    o, a, (local,), (remote,) = await connect_pair(True, fast_receiver, [dict(label="r")])
    try:
        sender = o.sctp
        expiries = count_t3_expiries(sender)
        link = SacksLostUntilProbed(a, sender)
        messages = [numbered(i, 60_000) for i in range(60)]
        collector = Collector(remote, len(messages))
        link.armed = True
        for payload in messages:
            local.send(payload)
        await asyncio.wait_for(collector.done.wait(), 30)
        assert collector.messages == messages
        assert link.dropped >= 1 and sender.stats.loss_probes >= 1
        assert expiries == [0], "the lost SACKs were recovered only when T3 expired"
    finally:
        await close_pair(o, a)


class AllSacksLost(DatagramFaults):
    def next(self) -> str:
        self.dropped += 1
        return "drop"


@pytest.mark.parametrize("limited", [True, False], ids=["maxRetransmits=0", "reliable"])
async def test_a_loss_probe_respects_the_channels_retransmission_limit(limited):
    spec = dict(label="u", ordered=False, maxRetransmits=0) if limited else dict(label="r")
    o, a, (local,), _ = await connect_pair(True, True, [spec])
    try:
        sender = o.sctp
        AllSacksLost(a, seed=0)
        for i in range(3):
            local.send(numbered(i, 5_000))
        await wait_until(lambda: len(sender._sent_queue) == 3)
        sender._last_sack_at -= 10.0  # as if no SACK had come for ten seconds
        sender._loss_probe_due()
        # maxRetransmits=0: no chunk may be sent a second time, so there is nothing to probe with.
        assert sender.stats.loss_probes == (0 if limited else 1)
        assert sorted(c._sent_count for c in sender._sent_queue) == ([1, 1, 1] if limited else [1, 1, 2])
    finally:
        await close_pair(o, a)

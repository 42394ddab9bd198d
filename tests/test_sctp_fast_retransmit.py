"""Fast retransmit on the fast SCTP path: a lost DATA chunk is sent again after three SACKs report
it missing (RFC 4960 section 7.2.4), not only when the retransmission timer (T3, at least a second)
expires. Counted, not timed: the T3 expiries of the sender are counted, and there must be none."""

from __future__ import annotations

import asyncio

from tests.sctp_pair import close_pair, connect_pair

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
        expiries = 0
        t3_expired = sender._t3_expired

        def counting_t3_expired() -> None:
            nonlocal expiries
            expiries += 1
            t3_expired()

        sender._t3_expired = counting_t3_expired
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
        assert expiries == 0, "the lost chunk came back only when T3 expired: no fast retransmit"
    finally:
        await close_pair(o, a)

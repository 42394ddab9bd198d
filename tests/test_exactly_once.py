"""The hybrid client's exactly-once bookkeeping, without a network: numbering, acknowledgement,
duplicate tracking and relay envelopes (clasp_fast.hybrid.exactly_once)."""

from __future__ import annotations

import secrets

import pytest

from clasp_fast.errors import ProtocolError
from clasp_fast.hybrid.exactly_once import (
    DUPLICATE,
    ENVELOPE_ID,
    EPOCH_ADDRESS,
    MAX_AHEAD,
    MAX_EPOCHS,
    MAX_UNVERIFIED,
    Dedupe,
    ReceiveLedger,
    SendLedger,
    envelope,
    opened,
)
from clasp_fast.messages import MISSING, Publish, Set


def test_dedupe_delivers_each_number_once_in_any_order():
    dedupe = Dedupe()
    assert [dedupe.first_time(n) for n in (1, 3, 2, 3, 1, 4)] == [True, True, True, False, False, True]
    assert dedupe.next == 5 and dedupe.ahead == set()


def test_dedupe_gives_up_a_gap_that_never_fills_and_stays_bounded():
    dedupe = Dedupe()
    for n in range(2, MAX_AHEAD + 3):  # number 1 never comes
        assert dedupe.first_time(n)
    assert len(dedupe.ahead) <= MAX_AHEAD
    assert dedupe.next == MAX_AHEAD + 3  # the gap was given up: everything after it counts as delivered
    assert not dedupe.first_time(MAX_AHEAD + 2)


def test_send_ledger_numbers_declares_once_and_acknowledgement_removes_up_to_the_number():
    ledger = SendLedger()
    (one, declaration), (two, again), (three, _) = (ledger.number(f"m{i}") for i in range(3))
    assert (one, two, three) == (1, 2, 3)
    assert declaration is not None and again is None
    assert declaration.address == EPOCH_ADDRESS and declaration.id == ENVELOPE_ID
    assert declaration.value == ledger.epoch.handle + ledger.epoch.key and len(declaration.value) == 32
    ledger.acknowledge(2)
    assert list(ledger.unacked) == [3]
    ledger.acknowledge(1)  # old news changes nothing
    assert list(ledger.unacked) == [3]
    epoch, pending = ledger.take()
    assert epoch is not None and pending == [(3, "m2")]
    assert ledger.epoch is None and not ledger.unacked and ledger.stalled_for(10**9) == 0.0


def declared(ledger: ReceiveLedger, sender: SendLedger, connection: object) -> None:
    _, declaration = sender.number(Set(address="/peer/b/x", value=0))
    ledger.declare(connection, "session-a", declaration.value)


def test_receive_ledger_opens_envelopes_once_and_refuses_forged_tags():
    sender = SendLedger()
    ledger = ReceiveLedger()
    declared(ledger, sender, "link")
    message = Set(address="/peer/b/x", value=41)
    seq, _ = sender.number(message)
    relayed = envelope(message, sender.epoch, seq)
    assert relayed.id == ENVELOPE_ID and relayed.timestamp == seq and relayed.signal == "param"
    assert ledger.open(relayed.address, seq, relayed.value) == 41
    assert ledger.open(relayed.address, seq, relayed.value) is DUPLICATE
    forged = {**relayed.value, "t": secrets.token_bytes(16), "v": -1}
    with pytest.raises(ProtocolError, match="does not verify") as caught:
        ledger.open(relayed.address, seq + 1, forged)
    assert caught.value.address == "/peer/b/x"
    with pytest.raises(ProtocolError, match="16-byte 'h' and 't'"):
        ledger.open("/peer/b/x", seq + 1, "not a map")
    assert opened(relayed, 41) == Set(address="/peer/b/x", value=41)


def test_envelopes_of_an_undeclared_epoch_are_delivered_once_and_counted_when_it_is_declared():
    sender = SendLedger()
    ledger = ReceiveLedger()
    message = Publish(address="/peer/b/e", signal="event")  # no value: none travels
    sender.number(Set(address="/peer/b/x", value=0))  # number 1, with the declaration
    seq, _ = sender.number(message)
    relayed = envelope(message, sender.epoch, seq)
    assert "v" not in relayed.value
    assert ledger.open(relayed.address, seq, relayed.value) is MISSING  # delivered: the epoch is unknown
    assert ledger.open(relayed.address, seq, relayed.value) is DUPLICATE  # a replay is not
    assert ledger.unverified == 1
    ledger.declare("link", "session-a", sender.epoch.handle + sender.epoch.key)
    epoch = ledger.epoch_of("link")
    assert ledger.unverified == 0 and epoch is not None
    assert not epoch.dedupe.first_time(seq)  # the copy over P2P is the duplicate now
    with pytest.raises(ProtocolError, match="already in use"):
        ledger.declare("other link", "session-c", sender.epoch.handle + sender.epoch.key)
    with pytest.raises(ProtocolError, match="32 bytes"):
        ledger.declare("link", "session-a", b"short")
    ledger.forget("link")
    assert ledger.epoch_of("link") is None


def test_receive_ledger_stays_bounded():
    ledger = ReceiveLedger()
    for i in range(MAX_EPOCHS + 5):
        ledger.declare(i, "s", secrets.token_bytes(32))
    assert ledger.epochs == MAX_EPOCHS
    for i in range(MAX_UNVERIFIED + 10):
        ledger.open("/peer/b/x", i, {"h": secrets.token_bytes(16), "t": secrets.token_bytes(16), "v": i})
    assert ledger.unverified == MAX_UNVERIFIED

"""clasp_fast.dtls_records against real OpenSSL: a DTLS handshake between two pyOpenSSL
connections (built as aiortc builds them), then records written by the layer are read by OpenSSL
and the other way round, for every supported suite; replays, other epochs, tampering, close_notify,
the takeover's guards, and a fuzz of the record parser."""

from __future__ import annotations

import pytest
from aiortc.rtcdtlstransport import RTCCertificate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from clasp_fast.dtls_records import (
    SUITES,
    DtlsRecordLayer,
    DtlsTakeoverError,
    _dtls,
    evp_status,
    parse_records,
    prf,
)
from clasp_fast.errors import DecodeError
from clasp_fast.sctp import DataChunk, _sctp
from tests.dtls_pair import aiortc_context, handshake, openssl_read, openssl_write

SUITE_CASES = [
    pytest.param(b"ECDHE-ECDSA-AES128-GCM-SHA256", False, id="ecdsa-aes128-gcm"),
    pytest.param(b"ECDHE-ECDSA-AES256-GCM-SHA384", False, id="ecdsa-aes256-gcm"),
    pytest.param(b"ECDHE-ECDSA-CHACHA20-POLY1305", False, id="ecdsa-chacha20"),
    pytest.param(b"ECDHE-RSA-AES128-GCM-SHA256", True, id="rsa-aes128-gcm"),
    pytest.param(b"ECDHE-RSA-AES256-GCM-SHA384", True, id="rsa-aes256-gcm"),
    pytest.param(b"ECDHE-RSA-CHACHA20-POLY1305", True, id="rsa-chacha20"),
]
PAYLOADS = [b"", b"x", bytes(range(256)) * 4, b"\xa5" * 1189, b"z" * 16384]
EVP_AVAILABLE, EVP_REASON = evp_status()
CRYPTO = [
    pytest.param("evp", marks=pytest.mark.skipif(not EVP_AVAILABLE, reason=EVP_REASON)),
    "cryptography",
]


@pytest.fixture(scope="module")
def aes_pair():
    """A fresh (client, server) pair per test would cost a handshake each; tests that take over
    a side use their own pair, this one only feeds records built by OpenSSL."""
    return handshake(b"ECDHE-ECDSA-AES128-GCM-SHA256")


@pytest.mark.parametrize("crypto", CRYPTO)
@pytest.mark.parametrize("ciphers, rsa_certificates", SUITE_CASES)
@pytest.mark.parametrize("layer_is_client", [True, False], ids=["layer-client", "layer-server"])
def test_layer_and_openssl_read_each_others_records(ciphers, rsa_certificates, layer_is_client, crypto):
    client, server = handshake(ciphers, rsa_certificates=rsa_certificates)
    assert client.get_cipher_name() == ciphers.decode()
    ours, theirs = (client, server) if layer_is_client else (server, client)
    layer = DtlsRecordLayer.from_ssl_connection(ours, layer_is_client, crypto=crypto)
    assert layer.cipher == SUITES[ciphers.decode()].cipher
    assert layer.backend == ("evp" if crypto == "evp" else "python-aead")

    for payload in PAYLOADS:
        record = layer.protect(payload)
        assert openssl_read(theirs, record) == ([payload] if payload else [])
        assert layer.unprotect(openssl_write(theirs, payload or b"-")) == (23, payload or b"-")
    assert layer.stats() == {"records_sent": 5, "records_received": 5, "replayed": 0, "wrong_epoch": 0,
                             "bad_mac": 0, "malformed": 0, "after_close": 0, "alerts_received": 0}


@pytest.mark.skipif(not EVP_AVAILABLE, reason=EVP_REASON)
@pytest.mark.parametrize("ciphers, rsa_certificates", SUITE_CASES[:3])
def test_sealed_sctp_packets_are_the_records_openssl_reads(ciphers, rsa_certificates):
    # The sender's fused path: each SCTP packet written into its record and encrypted there.
    client, server = handshake(ciphers, rsa_certificates=rsa_certificates)
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    first = layer.write_sequence
    control = _sctp.build_sack(7, 65536, [], [])
    packets = [
        (control, []),
        (b"", [DataChunk(3, 10, 1, 0, 53, b"\xa5" * 1189)]),
        (control, [DataChunk(1, 11, 1, 1, 53, b"abc"), DataChunk(2, 12, 1, 1, 53, b"de")]),
    ]
    records, data_chunks = _sctp.seal_packets(layer, 5000, 5001, 0xDEADBEEF, packets)
    assert data_chunks == 3
    assert layer.write_sequence == first + 3 and layer.records_sent == 3
    for record, (packet_control, chunks) in zip(records, packets, strict=True):
        packet = _sctp.build_packet(5000, 5001, 0xDEADBEEF, packet_control, chunks)
        assert len(record) == len(packet) + layer.record_overhead
        assert openssl_read(server, record) == [packet]
    assert [parse_records(record)[0][3] for record in records] == [first, first + 1, first + 2]


@pytest.mark.skipif(not EVP_AVAILABLE, reason=EVP_REASON)
def test_sealing_packets_checks_the_layer_and_each_packet():
    client, _server = handshake(b"ECDHE-ECDSA-AES128-GCM-SHA256")
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    chunk = DataChunk(3, 1, 1, 0, 53, b"x")
    with pytest.raises(ValueError, match="padded"):
        _sctp.seal_packets(layer, 1, 2, 3, [(b"abc", [chunk])])
    with pytest.raises(TypeError):
        _sctp.seal_packets(layer, 1, 2, 3, [[b"", [chunk]]])
    with pytest.raises(ValueError, match="2\\^14|16384"):
        _sctp.seal_packets(layer, 1, 2, 3, [(b"", [DataChunk(3, 1, 1, 0, 53, bytes(16384))])])
    assert layer.records_sent == 0  # nothing was sealed for a refused packet
    layer.close_notify()
    with pytest.raises(ConnectionError, match="closed"):
        _sctp.seal_packets(layer, 1, 2, 3, [(b"", [chunk])])
    python_aead = DtlsRecordLayer.from_ssl_connection(handshake()[0], True, crypto="cryptography")
    with pytest.raises(ValueError, match="EVP"):
        _sctp.seal_packets(python_aead, 1, 2, 3, [(b"", [chunk])])


def _server_hello_extensions(flight: bytes) -> list[int]:
    body = parse_records(flight)[0]
    record = flight[body[4]: body[4] + body[5]]
    assert record[0] == 2, "the server's first record is its ServerHello"
    hello = record[12:]
    at = 2 + 32
    at += 1 + hello[at] + 2 + 1  # session id, cipher suite, compression
    end = at + 2 + int.from_bytes(hello[at:at + 2], "big")
    at += 2
    types = []
    while at < end:
        types.append(int.from_bytes(hello[at:at + 2], "big"))
        at += 4 + int.from_bytes(hello[at + 2:at + 4], "big")
    return types


def test_these_handshakes_use_the_extended_master_secret():
    # So the interop tests above prove master_key() is the secret in use with RFC 7627 too.
    client = SSL.Connection(aiortc_context(RTCCertificate.generateCertificate(), None))
    server = SSL.Connection(aiortc_context(RTCCertificate.generateCertificate(), None))
    client.set_connect_state()
    server.set_accept_state()
    with pytest.raises(SSL.WantReadError):
        client.do_handshake()
    server.bio_write(client.bio_read(65536))
    with pytest.raises(SSL.WantReadError):
        server.do_handshake()
    assert 0x0017 in _server_hello_extensions(server.bio_read(65536))


def test_both_sides_taken_over_talk_to_each_other():
    client, server = handshake()
    a = DtlsRecordLayer.from_ssl_connection(client, True)
    b = DtlsRecordLayer.from_ssl_connection(server, False)
    for i in range(200):
        assert b.unprotect(a.protect(b"ping %d" % i)) == (23, b"ping %d" % i)
        assert a.unprotect(b.protect(b"pong %d" % i)) == (23, b"pong %d" % i)


def test_write_sequence_continues_after_openssl_and_skips_the_probe():
    client, server = handshake()
    before = parse_records(openssl_write(client, b"sent by OpenSSL"))[0]
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    # OpenSSL's record used sequence n, the unsent probe n + 1, so the layer starts at n + 2.
    assert layer.write_sequence == before[3] + 2
    first = parse_records(layer.protect(b"a"))[0]
    assert (first[2], first[3]) == (1, before[3] + 2)


def test_openssl_cannot_write_after_the_takeover():
    client, server = handshake()
    DtlsRecordLayer.from_ssl_connection(client, True)
    with pytest.raises(SSL.Error):
        client.send(b"would reuse a sequence number")
    try:
        client.shutdown()  # what aiortc's RTCDtlsTransport.stop() calls (it ignores SSL.Error)
    except SSL.WantReadError:
        pass  # waiting for the peer's close_notify: nothing was written
    with pytest.raises(SSL.WantReadError):
        client.bio_read(65536)


def test_replayed_records_are_dropped_and_counted():
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    records = [openssl_write(server, b"%d" % i) for i in range(100)]
    assert layer.unprotect(records[5]) == (23, b"5")
    assert layer.unprotect(records[5]) is None
    assert layer.replayed == 1
    # Out of order but inside the 64-record window: accepted once.
    assert layer.unprotect(records[80]) == (23, b"80")
    assert layer.unprotect(records[20]) == (23, b"20")
    assert layer.unprotect(records[20]) is None
    # More than 64 behind the highest accepted: dropped.
    assert layer.unprotect(records[10]) is None
    assert layer.replayed == 3
    assert layer.records_received == 3


def test_read_sequence_marks_what_openssl_already_read():
    client, server = handshake()
    records = [openssl_write(server, b"%d" % i) for i in range(4)]
    delivered = openssl_read(client, records[0]) + openssl_read(client, records[1])
    assert delivered == [b"0", b"1"]
    last_read = parse_records(records[1])[0][3]
    layer = DtlsRecordLayer.from_ssl_connection(client, True, read_sequence=last_read)
    assert layer.unprotect(records[1]) is None and layer.unprotect(records[0]) is None
    assert layer.replayed == 2
    assert layer.unprotect(records[2]) == (23, b"2")


def _with_epoch(record: bytes, epoch: int) -> bytes:
    return record[:3] + epoch.to_bytes(2, "big") + record[5:]


@pytest.mark.parametrize("epoch", [0, 2, 0xFFFF])
def test_records_of_another_epoch_are_dropped_and_counted(epoch):
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    record = openssl_write(server, b"hello")
    assert layer.unprotect(_with_epoch(record, epoch)) is None
    assert layer.wrong_epoch == 1 and layer.bad_mac == 0
    assert layer.unprotect(record) == (23, b"hello")  # the window did not move


@pytest.mark.parametrize("crypto", CRYPTO)
def test_tampered_records_fail_authentication_and_do_not_move_the_window(crypto):
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True, crypto=crypto)
    record = openssl_write(server, b"integrity matters")
    for position in (3 + 4, 13, 13 + 8, len(record) - 1):  # sequence, nonce, ciphertext, tag
        tampered = bytearray(record)
        tampered[position] ^= 0x01
        assert layer.unprotect(bytes(tampered)) is None
    assert layer.bad_mac == 4
    assert layer.unprotect(record) == (23, b"integrity matters")


@pytest.mark.parametrize("crypto", CRYPTO)
def test_the_wrong_role_fails_authentication_instead_of_raising(crypto):
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, False, crypto=crypto)  # client keys swapped
    assert layer.unprotect(openssl_write(server, b"x")) is None
    assert layer.bad_mac == 1


@pytest.mark.parametrize("crypto", CRYPTO)
def test_several_records_in_one_datagram_both_ways(crypto):
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True, crypto=crypto)
    datagram = openssl_write(server, b"one") + openssl_write(server, b"two") + openssl_write(server, b"three")
    assert layer.unprotect_datagram(datagram) == [(23, b"one"), (23, b"two"), (23, b"three")]
    ours = layer.protect(b"four") + layer.protect(b"five")
    assert openssl_read(server, ours) == [b"four", b"five"]


def test_a_malformed_record_ends_the_datagram_but_keeps_the_records_before_it():
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    good = openssl_write(server, b"kept")
    truncated = openssl_write(server, b"cut short")[:-3]
    assert layer.unprotect_datagram(good + truncated) == [(23, b"kept")]
    assert layer.malformed == 1


def test_close_notify_from_the_layer_ends_openssl_reading():
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    server.bio_write(layer.close_notify())
    with pytest.raises(SSL.ZeroReturnError):
        server.recv(1500)
    assert layer.write_closed
    with pytest.raises(ConnectionError):
        layer.protect(b"after close")


def test_close_notify_from_openssl_is_recognised_and_later_records_dropped():
    client, server = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    late = openssl_write(server, b"written before close, arrives after")
    server.shutdown()
    alert = server.bio_read(65536)
    assert layer.unprotect(alert) == (21, b"\x01\x00")
    assert layer.peer_closed and layer.last_alert == (1, 0) and layer.alerts_received == 1
    assert layer.unprotect(late) is None
    assert layer.after_close == 1
    # Our side may still close politely.
    assert parse_records(layer.close_notify())[0][0] == 21


def test_mid_transfer_close_delivers_everything_before_close_notify():
    client, server = handshake()
    sender = DtlsRecordLayer.from_ssl_connection(server, False)
    receiver = DtlsRecordLayer.from_ssl_connection(client, True)
    sent = [b"chunk %d" % i * 50 for i in range(30)]
    datagrams = [sender.protect(chunk) for chunk in sent] + [sender.close_notify()]
    received = []
    for datagram in datagrams:
        for content_type, plaintext in receiver.unprotect_datagram(datagram):
            if content_type == 23:
                received.append(plaintext)
    assert received == sent and receiver.peer_closed


@pytest.mark.parametrize("ciphers", [b"ECDHE-ECDSA-AES128-SHA", b"ECDHE-ECDSA-AES256-SHA"])
def test_non_aead_suites_are_refused_and_openssl_keeps_working(ciphers):
    client, server = handshake(ciphers)
    with pytest.raises(DtlsTakeoverError, match="not taken over"):
        DtlsRecordLayer.from_ssl_connection(client, True)
    assert openssl_read(server, openssl_write(client, b"still fine")) == [b"still fine"]


def test_unsent_openssl_output_refuses_the_takeover():
    client, server = handshake()
    client.send(b"not yet sent")
    with pytest.raises(DtlsTakeoverError, match="not sent"):
        DtlsRecordLayer.from_ssl_connection(client, True)


def test_without_a_usable_libcrypto_auto_uses_cryptography_and_evp_is_refused(monkeypatch):
    from clasp_fast import dtls_records

    monkeypatch.setattr(dtls_records, "_evp_reason", "no shared libcrypto in this process (Linux only)")
    client, server = handshake()
    with pytest.raises(DtlsTakeoverError, match="EVP functions are not usable here: no shared libcrypto"):
        DtlsRecordLayer.from_ssl_connection(client, True, crypto="evp")
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    assert layer.backend == "python-aead"
    assert openssl_read(server, layer.protect(b"via cryptography")) == [b"via cryptography"]


def test_unknown_crypto_backend_is_a_clear_error():
    client, server = handshake()
    with pytest.raises(ValueError, match="crypto must be"):
        DtlsRecordLayer.from_ssl_connection(client, True, crypto="rot13")
    assert openssl_read(server, openssl_write(client, b"untouched")) == [b"untouched"]


def test_protect_refuses_what_dtls_cannot_carry():
    client, _ = handshake()
    layer = DtlsRecordLayer.from_ssl_connection(client, True)
    with pytest.raises(ValueError, match="at most 16384"):
        layer.protect(b"x" * 16385)
    with pytest.raises(ValueError, match="application data"):
        layer.protect(b"x", 22)


def test_prf_matches_the_published_tls12_sha256_vector():
    # The widely used P_SHA256 test vector (IETF TLS working group list, 2009).
    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    expected = bytes.fromhex(
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af"
        "0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701"
        "87347b66")
    assert prf(secret, b"test label", seed, 100, "sha256") == expected


# -- the record parser under arbitrary input --------------------------------------------------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | st.lists(
    st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
              st.integers(0, (1 << 48) - 1), st.binary(max_size=60), st.integers(-3, 3)),
    max_size=4).map(lambda records: b"".join(
        bytes([t]) + v.to_bytes(2, "big") + e.to_bytes(2, "big") + s.to_bytes(6, "big")
        + max(0, len(body) + skew).to_bytes(2, "big") + body for t, v, e, s, body, skew in records)))
def test_parser_fuzz_reads_only_inside_the_datagram(aes_pair, data):
    try:
        records = parse_records(data)
    except DecodeError as error:
        assert error.offset is not None and 0 <= error.offset <= len(data) and error.field
    else:
        end = 0
        for _, _, _, _, offset, length in records:
            assert offset == end + 13 and offset + length <= len(data)
            end = offset + length
        assert end == len(data)
    client, _ = aes_pair
    layer = _fuzz_layer(client)
    before = sum(layer.stats().values())
    assert layer.unprotect_datagram(data) == []  # nothing forged passes
    assert sum(layer.stats().values()) >= before


_layers: dict[int, DtlsRecordLayer] = {}


def _fuzz_layer(client: SSL.Connection) -> DtlsRecordLayer:
    layer = _layers.get(id(client))
    if layer is None:
        layer = _layers[id(client)] = DtlsRecordLayer.from_ssl_connection(client, True)
    return layer


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_any_single_byte_change_to_a_record_is_rejected(aes_pair, position, flip):
    client, server = aes_pair
    layer = _fuzz_layer(client)
    record = bytearray(openssl_write(server, b"sealed payload" * 3))
    record[position % len(record)] ^= flip
    assert layer.unprotect(bytes(record)) is None


# -- OpenSSL's EVP functions called directly agree with cryptography ----------------------------

@pytest.mark.skipif(not EVP_AVAILABLE, reason=EVP_REASON)
@settings(max_examples=200, deadline=None)
@given(cipher=st.sampled_from([("aes-gcm", 16), ("aes-gcm", 32), ("chacha20-poly1305", 32)]),
       key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=12, max_size=12),
       aad=st.binary(min_size=13, max_size=13), data=st.binary(max_size=3000), flip=st.integers(0, 3015))
def test_evp_aead_matches_cryptography(cipher, key, nonce, aad, data, flip):
    name, key_length = cipher
    key = key[:key_length]
    reference = AESGCM(key) if name == "aes-gcm" else ChaCha20Poly1305(key)
    sealed = _dtls.EvpAead(name, key, True).encrypt(nonce, data, aad)
    assert sealed == reference.encrypt(nonce, data, aad)
    opener = _dtls.EvpAead(name, key, False)
    assert opener.decrypt(nonce, sealed, aad) == data
    tampered = bytearray(sealed)
    tampered[flip % len(tampered)] ^= 0x80
    with pytest.raises(ValueError, match="authentication failed"):
        opener.decrypt(nonce, bytes(tampered), aad)
    assert opener.decrypt(nonce, sealed, aad) == data  # a failure leaves the context usable


@pytest.mark.skipif(not EVP_AVAILABLE, reason=EVP_REASON)
def test_evp_aead_refuses_keys_it_has_no_cipher_for():
    with pytest.raises(ValueError, match="no EVP cipher"):
        _dtls.EvpAead("aes-gcm", bytes(24), True)
    with pytest.raises(ValueError, match="no EVP cipher"):
        _dtls.EvpAead("chacha20-poly1305", bytes(16), True)

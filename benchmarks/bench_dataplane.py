"""Per-stage costs of the data plane under SCTP: DTLS records and UDP system calls.

Run with ``pytest benchmarks/bench_dataplane.py --benchmark-only``. Groups:

* ``dtls-protect-1189`` / ``dtls-unprotect-1189``: one record of 1,189 bytes of plaintext (a full
  SCTP packet of aiortc's size), AES-128-GCM, per call: clasp_fast's record layer (with OpenSSL's
  EVP functions called in place, and with ``cryptography``'s AEAD objects) against pyOpenSSL as
  aiortc drives it (``send`` + ``bio_read``; ``bio_write`` + ``recv``), and the bare
  AEAD call of ``cryptography`` (the floor for any layer built on it).
* ``udp-send-64x1200``: 64 datagrams of 1,200 bytes to a loopback socket per call, with
  ``sendto`` per datagram, one ``sendmmsg``, and UDP GSO (the receiver is drained outside the
  timing). ``udp-receive-64x1200``: reading those 64 with ``recvfrom`` per datagram, one
  ``recvmmsg``, and recvmmsg with UDP GRO (the sender used GSO, so the kernel hands them over
  coalesced). Datagrams/s = 64 / time per call.

Every loop is bounded (fixed rounds); traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import select
import socket

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clasp_fast.dtls_records import DtlsRecordLayer, evp_status
from clasp_fast.udp_batch import UdpBatchSocket, supported_strategies
from tests.dtls_pair import handshake

PAYLOAD = bytes(range(256)) * 4 + bytes(165)  # 1,189 bytes
assert len(PAYLOAD) == 1189
RECORD_ROUNDS = 20_000
DATAGRAM = b"d" * 1200
BATCH = 64
UDP_ROUNDS = 1_000
AES128 = b"ECDHE-ECDSA-AES128-GCM-SHA256"


# -- DTLS records ------------------------------------------------------------------------------

def _crypto(name: str) -> str:
    if name == "evp" and not evp_status()[0]:
        pytest.skip(evp_status()[1])
    return name


@pytest.mark.parametrize("crypto", ["evp", "cryptography"])
@pytest.mark.benchmark(group="dtls-protect-1189")
def bench_protect_clasp_fast(benchmark, crypto):
    client, _ = handshake(AES128)
    layer = DtlsRecordLayer.from_ssl_connection(client, True, crypto=_crypto(crypto))
    record = benchmark(layer.protect, PAYLOAD)
    assert len(record) == 13 + 8 + len(PAYLOAD) + 16


@pytest.mark.benchmark(group="dtls-protect-1189")
def bench_protect_pyopenssl(benchmark):
    client, _ = handshake(AES128)

    def protect():
        client.send(PAYLOAD)
        return client.bio_read(1500)

    assert len(benchmark(protect)) == 13 + 8 + len(PAYLOAD) + 16


@pytest.mark.benchmark(group="dtls-protect-1189")
def bench_protect_aead_call_only(benchmark):
    aead = AESGCM(bytes(16))
    nonce, aad = bytes(12), bytes(13)
    assert len(benchmark(aead.encrypt, nonce, PAYLOAD, aad)) == len(PAYLOAD) + 16


def _record_stream(sender: DtlsRecordLayer, count: int):
    records = iter([sender.protect(PAYLOAD) for _ in range(count)])
    return lambda: ((next(records),), {})


@pytest.mark.parametrize("crypto", ["evp", "cryptography"])
@pytest.mark.benchmark(group="dtls-unprotect-1189")
def bench_unprotect_clasp_fast(benchmark, crypto):
    client, server = handshake(AES128)
    receiver = DtlsRecordLayer.from_ssl_connection(client, True, crypto=_crypto(crypto))
    sender = DtlsRecordLayer.from_ssl_connection(server, False)
    result = benchmark.pedantic(receiver.unprotect_datagram, setup=_record_stream(sender, RECORD_ROUNDS),
                                rounds=RECORD_ROUNDS)
    assert result == [(23, PAYLOAD)] and receiver.records_received == RECORD_ROUNDS


@pytest.mark.benchmark(group="dtls-unprotect-1189")
def bench_unprotect_pyopenssl(benchmark):
    client, server = handshake(AES128)
    sender = DtlsRecordLayer.from_ssl_connection(server, False)  # OpenSSL keeps the client side

    def unprotect(record):
        client.bio_write(record)
        return client.recv(1500)

    result = benchmark.pedantic(unprotect, setup=_record_stream(sender, RECORD_ROUNDS), rounds=RECORD_ROUNDS)
    assert result == PAYLOAD


@pytest.mark.benchmark(group="dtls-unprotect-1189")
def bench_unprotect_aead_call_only(benchmark):
    aead = AESGCM(bytes(16))
    nonce, aad = bytes(12), bytes(13)
    sealed = aead.encrypt(nonce, PAYLOAD, aad)
    assert benchmark(aead.decrypt, nonce, sealed, aad) == PAYLOAD


# -- UDP system calls --------------------------------------------------------------------------

def _loopback_pair():
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (sender, receiver):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    return sender, receiver


def _available(send: str, receive: str) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with probe:
        sendable, receivable = supported_strategies(probe)
    return send in sendable and receive in receivable


def _drain(into: UdpBatchSocket, count: int) -> int:
    got = 0
    for _ in range(count + 10):  # bounded
        if got >= count or not select.select([into.sock], [], [], 1.0)[0]:
            break
        got += len(into.receive_batch())
    return got


@pytest.mark.parametrize("strategy", ["sendto", "sendmmsg", "gso"])
@pytest.mark.benchmark(group="udp-send-64x1200")
def bench_udp_send(benchmark, strategy):
    if not _available(strategy, "recvmmsg" if strategy != "sendto" else "recvfrom"):
        pytest.skip(f"{strategy} not available here")
    sender, receiver = _loopback_pair()
    with sender, receiver:
        out = UdpBatchSocket(sender, send=strategy)
        into = UdpBatchSocket(receiver, receive="recvmmsg" if strategy != "sendto" else "recvfrom")
        datagrams = [DATAGRAM] * BATCH
        address = receiver.getsockname()

        def drained():
            _drain(into, BATCH)
            return (datagrams, address), {}

        out.send_batch(datagrams, address)
        sent = benchmark.pedantic(out.send_batch, setup=drained, rounds=UDP_ROUNDS)
        assert sent == BATCH and _drain(into, BATCH) == BATCH


@pytest.mark.parametrize("strategy", ["recvfrom", "recvmmsg", "gro"])
@pytest.mark.benchmark(group="udp-receive-64x1200")
def bench_udp_receive(benchmark, strategy):
    send = {"recvfrom": "sendto", "recvmmsg": "sendmmsg", "gro": "gso"}[strategy]
    if not _available(send, strategy):
        pytest.skip(f"{strategy} not available here")
    sender, receiver = _loopback_pair()
    with sender, receiver:
        out = UdpBatchSocket(sender, send=send)
        into = UdpBatchSocket(receiver, receive=strategy)
        datagrams = [DATAGRAM] * BATCH
        address = receiver.getsockname()

        def filled():
            assert out.send_batch(datagrams, address) == BATCH
            select.select([receiver], [], [], 1.0)
            return (), {}

        def receive_all():
            got = into.receive_batch()
            while len(got) < BATCH:  # recvfrom reads at most `slots` (64) per call; bounded by BATCH
                more = into.receive_batch()
                if not more:
                    break
                got += more
            return len(got)

        assert benchmark.pedantic(receive_all, setup=filled, rounds=UDP_ROUNDS) == BATCH


# -- side-by-side table: python -m benchmarks.bench_dataplane ---------------------------------

def _interleaved_record_costs(repeats: int = 15, count: int = 20_000) -> dict[str, list[float]]:
    """µs per record for each implementation, measured in turns so machine drift hits all alike."""
    import timeit

    pairs = {}
    for crypto in ("evp", "cryptography"):
        if crypto == "evp" and not evp_status()[0]:
            continue
        client, server = handshake(AES128)
        pairs[crypto] = (DtlsRecordLayer.from_ssl_connection(client, True, crypto=crypto),
                         DtlsRecordLayer.from_ssl_connection(server, False, crypto=crypto))
    openssl_client, openssl_server = handshake(AES128)
    feeder = DtlsRecordLayer.from_ssl_connection(openssl_server, False)

    def openssl_protect():
        openssl_client.send(PAYLOAD)
        openssl_client.bio_read(1500)

    def openssl_unprotect(record):
        openssl_client.bio_write(record)
        openssl_client.recv(1500)

    costs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for crypto, (writer, reader) in pairs.items():
            costs.setdefault(f"protect, clasp_fast ({crypto})", []).append(
                timeit.timeit(lambda: writer.protect(PAYLOAD), number=count) / count * 1e6)
            records = [writer.protect(PAYLOAD) for _ in range(count)]
            unprotect = reader.unprotect_datagram
            costs.setdefault(f"unprotect, clasp_fast ({crypto})", []).append(
                timeit.timeit(lambda: [unprotect(r) for r in records], number=1) / count * 1e6)
        costs.setdefault("protect, pyOpenSSL", []).append(
            timeit.timeit(openssl_protect, number=count) / count * 1e6)
        records = [feeder.protect(PAYLOAD) for _ in range(count)]
        costs.setdefault("unprotect, pyOpenSSL", []).append(
            timeit.timeit(lambda: [openssl_unprotect(r) for r in records], number=1) / count * 1e6)
    return costs


def main() -> None:
    import statistics

    print("µs per 1,189-byte AES-128-GCM record (15 interleaved repeats of 20,000):")
    for name, values in sorted(_interleaved_record_costs().items()):
        print(f"  {name:36s} min {min(values):6.2f}   median {statistics.median(values):6.2f}")


if __name__ == "__main__":
    main()

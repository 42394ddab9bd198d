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

* ``dtls-protect-16384`` / ``dtls-unprotect-16384``: the same with 16,384 bytes, the largest SCTP
  packet two clasp_fast peers send each other where the path carries it (docs/data-plane.md).
* ``sctp-build-<size>`` / ``sctp-parse-<size>``: one SCTP packet holding one full DATA chunk,
  built from a ``DataChunk`` and parsed (CRC32c included), at aiortc's size and the large size.
* ``sctp-seal-<size>x32``: a transmit's 32 such packets made into DTLS records, by the sender's
  one compiled call (each packet written into its record and encrypted there) and by building
  then protecting each packet. µs per packet = time / 32.

``python -m benchmarks.bench_dataplane`` prints the interleaved record table and the per-stage
table (µs per packet for each size) that docs/data-plane.md quotes; ``python -m
benchmarks.bench_dataplane bulk`` moves 60 KB messages between two processes over raw aiortc data
channels with the data plane, with batching only, and with neither, in turns, and prints MB/s and
CPU per MB of each side.

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


# -- large records, SCTP packets ----------------------------------------------------------------

LARGE = bytes(range(256)) * 64  # 16,384 bytes
SIZES = {"1189": 1189, "16384": 16384}


@pytest.mark.benchmark(group="dtls-protect-16384")
def bench_protect_large(benchmark):
    client, server = handshake(AES128)
    writer = DtlsRecordLayer.from_ssl_connection(client, True)
    benchmark.pedantic(writer.protect, args=(LARGE,), rounds=RECORD_ROUNDS // 4)


@pytest.mark.benchmark(group="dtls-unprotect-16384")
def bench_unprotect_large(benchmark):
    client, server = handshake(AES128)
    writer = DtlsRecordLayer.from_ssl_connection(client, True)
    reader = DtlsRecordLayer.from_ssl_connection(server, False)
    records = iter([writer.protect(LARGE) for _ in range(RECORD_ROUNDS // 4 + 10)])
    benchmark.pedantic(lambda: reader.unprotect_datagram(next(records)), rounds=RECORD_ROUNDS // 4)


def _full_packet(size: int) -> tuple:
    from clasp_fast import sctp

    user_data = bytes(size - sctp._sctp.COMMON_HEADER_LENGTH - sctp._sctp.DATA_CHUNK_HEADER_LENGTH)
    chunk = sctp.DataChunk(3, 1, 1, 0, 53, user_data)
    return sctp._sctp, chunk, sctp._sctp.build_packet(5000, 5000, 1, b"", [chunk])


@pytest.mark.parametrize("size", SIZES)
def bench_sctp_build(benchmark, size):
    packets, chunk, _ = _full_packet(SIZES[size])
    benchmark.group = f"sctp-build-{size}"
    benchmark.pedantic(packets.build_packet, args=(5000, 5000, 1, b"", [chunk]), rounds=RECORD_ROUNDS // 4)


@pytest.mark.parametrize("size", SIZES)
def bench_sctp_parse(benchmark, size):
    packets, _, packet = _full_packet(SIZES[size])
    benchmark.group = f"sctp-parse-{size}"
    benchmark.pedantic(packets.parse_packet, args=(packet,), rounds=RECORD_ROUNDS // 4)


SEAL_BATCH = 32  # packets per transmit in the seal benchmarks (µs per packet = time / 32)


@pytest.mark.parametrize("way", ["fused", "build-then-protect"])
@pytest.mark.parametrize("size", SIZES)
def bench_sctp_seal(benchmark, size, way):
    """A transmit's 32 packets into DTLS records: written into the record and sealed there by one
    compiled call (``seal_packets``), against building each packet and then protecting it."""
    _crypto("evp")
    packets, chunk, _ = _full_packet(SIZES[size])
    client, _server = handshake(AES128)
    writer = DtlsRecordLayer.from_ssl_connection(client, True)
    batch = [(b"", [chunk])] * SEAL_BATCH
    benchmark.group = f"sctp-seal-{size}x{SEAL_BATCH}"
    if way == "fused":
        benchmark.pedantic(packets.seal_packets, args=(writer, 5000, 5000, 1, batch), rounds=RECORD_ROUNDS // 40)
    else:
        build, protect = packets.build_packet, writer.protect
        benchmark.pedantic(lambda: [protect(build(5000, 5000, 1, control, chunks)) for control, chunks in batch],
                           rounds=RECORD_ROUNDS // 40)


def _stage_costs(repeats: int = 7, count: int = 5_000) -> dict[tuple[str, int], list[float]]:
    """µs per packet of each compiled stage for both packet sizes, measured in turns."""
    import timeit
    from collections import deque

    client, server = handshake(AES128)
    writer = DtlsRecordLayer.from_ssl_connection(client, True)
    reader = DtlsRecordLayer.from_ssl_connection(server, False)
    costs: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for size in SIZES.values():
            packets, chunk, packet = _full_packet(size)
            stages = {
                "SCTP build (CRC32c)": lambda: packets.build_packet(5000, 5000, 1, b"", [chunk]),
                "SCTP parse (CRC32c)": lambda: packets.parse_packet(packet),
                "DTLS protect (EVP)": lambda: writer.protect(packet),
                "SCTP build + DTLS protect, fused":
                    lambda: packets.seal_packets(writer, 5000, 5000, 1, [(b"", [chunk])]),
            }
            for name, stage in stages.items():
                costs.setdefault((name, size), []).append(timeit.timeit(stage, number=count) / count * 1e6)
            records = [writer.protect(packet) for _ in range(count)]
            unprotect = reader.unprotect_datagram
            costs.setdefault(("DTLS unprotect (EVP)", size), []).append(  # plaintexts not kept
                timeit.timeit(lambda: deque(map(unprotect, records), maxlen=0), number=1) / count * 1e6)
    return costs


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


# -- two processes, raw data channels: python -m benchmarks.bench_dataplane bulk ----------------

BULK_CONFIGS = {
    "data plane": {"fast_dtls": True, "udp_batching": True},
    "batching only": {"fast_dtls": False, "udp_batching": True},
    "neither (previous fast path)": {"fast_dtls": False, "udp_batching": False},
}


def _bulk_peer(role: str, options: dict, count: int, size: int, pipe) -> None:
    """One side of a bulk transfer over one reliable data channel (run in its own process)."""
    import asyncio
    import time

    from aiortc import RTCConfiguration, RTCSessionDescription

    from clasp_fast.ice import install_gathering_policy
    from clasp_fast.sctp import peer_connection_class

    def restrict(pc) -> None:
        install_gathering_policy(pc.sctp.transport.transport.iceGatherer._connection,
                                 host_addresses=["127.0.0.1"], udp_receive_buffer=4 << 20)

    async def receive(pc) -> None:
        done, times, received = asyncio.Event(), [], [0]

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            @channel.on("message")
            def on_message(_) -> None:
                if not times:  # timed from the first message: set-up is not counted
                    times.append((time.perf_counter(), time.process_time()))
                received[0] += 1
                if received[0] == count:
                    done.set()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=pipe.recv(), type="offer"))
        restrict(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        pipe.send(pc.localDescription.sdp)
        await asyncio.wait_for(done.wait(), 120)
        (wall, cpu) = times[0]
        pipe.send((time.perf_counter() - wall, time.process_time() - cpu, pc.sctp.max_packet))

    async def send(pc) -> None:
        channel = pc.createDataChannel("bulk")
        restrict(pc)
        await pc.setLocalDescription(await pc.createOffer())
        pipe.send(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=pipe.recv(), type="answer"))
        opened, low = asyncio.Event(), asyncio.Event()
        channel.on("open", opened.set)
        channel.bufferedAmountLowThreshold = 256 * 1024
        channel.on("bufferedamountlow", low.set)
        await asyncio.wait_for(opened.wait(), 10)
        payload, cpu = bytes(size), time.process_time()
        for _ in range(count):
            channel.send(payload)
            if channel.bufferedAmount > 1 << 20:
                low.clear()
                await low.wait()
        await asyncio.get_running_loop().run_in_executor(None, pipe.poll, 120)
        pipe.send(time.process_time() - cpu)

    async def run() -> None:
        pc = peer_connection_class(True, **options)(RTCConfiguration(iceServers=[]))
        try:
            await (send(pc) if role == "sender" else receive(pc))
        finally:
            await pc.close()

    asyncio.run(run())


def bulk(rounds: int = 2, count: int = 1500, size: int = 60_000) -> None:
    """MB/s and CPU per MB of each configuration, two processes, in turns (loopback)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    print(f"bulk: {count} messages of {size} B over one reliable channel, two processes, {rounds} rounds")
    for _ in range(rounds):
        for name, options in BULK_CONFIGS.items():
            n = count if options["fast_dtls"] else max(100, count // 10)  # the slow ones: fewer
            sender_end, sender_here = context.Pipe()
            receiver_end, receiver_here = context.Pipe()
            peers = [context.Process(target=_bulk_peer, args=("sender", options, n, size, sender_end)),
                     context.Process(target=_bulk_peer, args=("receiver", options, n, size, receiver_end))]
            for peer in peers:
                peer.start()
            receiver_here.send(sender_here.recv())  # offer
            sender_here.send(receiver_here.recv())  # answer
            wall, receiver_cpu, packet = receiver_here.recv()
            sender_here.send("done")
            sender_cpu = sender_here.recv()
            for peer in peers:
                peer.join(30)
            megabytes = n * size / 1e6
            print(f"  {name:30s} {megabytes / wall:7.1f} MB/s   "
                  f"CPU per MB: sender {sender_cpu / megabytes * 1e3:5.2f} ms,"
                  f" receiver {receiver_cpu / megabytes * 1e3:5.2f} ms   packets up to {packet} B")


def main() -> None:
    import statistics
    import sys

    if sys.argv[1:] == ["bulk"]:
        bulk()
        return

    print("µs per 1,189-byte AES-128-GCM record (15 interleaved repeats of 20,000):")
    for name, values in sorted(_interleaved_record_costs().items()):
        print(f"  {name:36s} min {min(values):6.2f}   median {statistics.median(values):6.2f}")
    print("µs per packet, compiled stages (7 interleaved repeats of 5,000): min / median")
    costs = _stage_costs()
    for name in dict.fromkeys(name for name, _ in costs):
        cells = [f"{size:>6} B: {min(costs[name, size]):6.2f} / {statistics.median(costs[name, size]):6.2f}"
                 for size in SIZES.values()]
        print(f"  {name:24s} " + "   ".join(cells))


if __name__ == "__main__":
    main()

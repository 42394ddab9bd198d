"""Two pyOpenSSL DTLS connections that complete a real handshake through memory BIOs.

The contexts are built the way aiortc builds its own (``RTCCertificate._create_ssl_context``:
DTLS_METHOD, ECDSA certificate, DTLS-SRTP, the same verify mode); only the cipher list can be
narrowed to force one suite, and an RSA certificate can replace the ECDSA one for the RSA suites.
"""

from __future__ import annotations

import datetime

from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL


def _rsa_certificate() -> RTCCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "clasp-fast-test")])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return RTCCertificate(key=key, cert=cert)


def aiortc_context(certificate: RTCCertificate, ciphers: bytes | None) -> SSL.Context:
    context = certificate._create_ssl_context(srtp_profiles=SRTP_PROFILES)
    if ciphers is not None:
        context.set_cipher_list(ciphers)
    return context


def _flush(source: SSL.Connection, destination: SSL.Connection) -> int:
    moved = 0
    while True:
        try:
            datagram = source.bio_read(65536)
        except SSL.WantReadError:
            return moved
        destination.bio_write(datagram)
        moved += 1


def handshake(ciphers: bytes | None = None, *, rsa_certificates: bool = False
              ) -> tuple[SSL.Connection, SSL.Connection]:
    """(client, server) after a complete DTLS handshake; both memory BIOs are empty."""
    make = _rsa_certificate if rsa_certificates else RTCCertificate.generateCertificate
    client = SSL.Connection(aiortc_context(make(), ciphers))
    server = SSL.Connection(aiortc_context(make(), ciphers))
    client.set_connect_state()
    server.set_accept_state()
    done = {id(client): False, id(server): False}
    for _ in range(20):
        for connection in (client, server):
            if not done[id(connection)]:
                try:
                    connection.do_handshake()
                    done[id(connection)] = True
                except SSL.WantReadError:
                    pass
        _flush(client, server)
        _flush(server, client)
        if all(done.values()):
            return client, server
    raise AssertionError("DTLS handshake did not complete in 20 flights")


def openssl_read(connection: SSL.Connection, datagram: bytes) -> list[bytes]:
    """Every application-data plaintext OpenSSL delivers for ``datagram`` (in order)."""
    connection.bio_write(datagram)
    out = []
    while True:
        try:
            out.append(connection.recv(65536))
        except SSL.WantReadError:
            return out


def openssl_write(connection: SSL.Connection, plaintext: bytes) -> bytes:
    """The record OpenSSL writes for ``plaintext``."""
    connection.send(plaintext)
    return connection.bio_read(65536)

"""DTLS 1.2 application records after the handshake, without going through pyOpenSSL.

OpenSSL (through pyOpenSSL, as aiortc drives it) does the handshake. Afterwards
:meth:`DtlsRecordLayer.from_ssl_connection` derives the epoch-1 keys from the connection and takes
over the records: :meth:`~DtlsRecordLayer.protect` writes one record, and
:meth:`~DtlsRecordLayer.unprotect_datagram` reads every record of a received datagram, with a
64-record replay window (RFC 6347 section 4.1.2.6). Records of another epoch, replays and records
that fail authentication are dropped and counted, never raised about.

Supported suites (the AEAD suites WebRTC stacks negotiate): ECDHE-{ECDSA,RSA} with AES-128-GCM-SHA256,
AES-256-GCM-SHA384 and CHACHA20-POLY1305 (RFC 7905). Any other suite, or a protocol other than
DTLS 1.2, raises :class:`DtlsTakeoverError` so the caller keeps OpenSSL's record path.

Keys: key_block = PRF(master_secret, "key expansion", server_random + client_random) with the
suite's hash (RFC 5246 sections 5 and 6.3). With the extended master secret (RFC 7627) only the
master secret's derivation differs, and ``master_key()`` returns the secret in use either way.

The cipher: OpenSSL's EVP AEAD functions called from the compiled layer (one cipher context per
direction, records sealed in place), taken from the libcrypto the Python process itself already
loaded for ``hashlib`` (Linux; found in ``/proc/self/maps``, checked to be OpenSSL 1.1.0 or newer and
against ``cryptography`` on a known answer before first use). Where that is not possible,
``cryptography``'s ``AESGCM``/``ChaCha20Poly1305`` (see :func:`evp_status`). Nothing is hand-written.

Sequence numbers: OpenSSL's next epoch-1 write sequence number is not exposed, so the takeover
asks OpenSSL to protect one probe record, reads it from the memory BIO (it is never sent), and
continues after its sequence number; DTLS receivers accept gaps. It then marks the connection's
write side as shut down (``SSL_SENT_SHUTDOWN``), so OpenSSL can never write another epoch-1 record
with a sequence number (and so a nonce) that this layer uses: ``ssl.send()`` fails and
``ssl.shutdown()`` writes nothing. Close with :meth:`~DtlsRecordLayer.close_notify` instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from OpenSSL import SSL

from .._build_check import load_extension
from ..errors import TransportError

load_extension("_dtls")  # a missing build fails here with a message that says how to build

from .. import _dtls  # noqa: E402

parse_records = _dtls.parse_records
CONTENT_ALERT = _dtls.CONTENT_ALERT
CONTENT_APPLICATION_DATA = _dtls.CONTENT_APPLICATION_DATA
CONTENT_HANDSHAKE = _dtls.CONTENT_HANDSHAKE
RECORD_HEADER_LENGTH = _dtls.RECORD_HEADER_LENGTH

__all__ = [
    "SUITES",
    "CipherSuite",
    "DtlsRecordLayer",
    "DtlsTakeoverError",
    "key_block",
    "evp_status",
    "parse_records",
    "prf",
]

_PROBE = b"\x00"
_evp_reason: str | None = None  # why the EVP path is off; "" once it works


class DtlsTakeoverError(TransportError):
    """The records of this connection cannot be taken over; keep OpenSSL's record path."""

    def __init__(self, message: str) -> None:
        super().__init__(message, step="dtls")


@dataclass(frozen=True)
class CipherSuite:
    """What the record layer needs to know about one TLS 1.2 AEAD cipher suite."""

    openssl_name: str
    cipher: str  # "aes-gcm" or "chacha20-poly1305"
    key_length: int
    iv_length: int  # implicit (fixed) IV from the key block
    prf_hash: str

    def aead(self, key: bytes):
        return AESGCM(key) if self.cipher == "aes-gcm" else ChaCha20Poly1305(key)


def _suites() -> dict[str, CipherSuite]:
    suites = {}
    for auth in ("ECDSA", "RSA"):
        for name, cipher, key_length, iv_length, prf_hash in (
            (f"ECDHE-{auth}-AES128-GCM-SHA256", "aes-gcm", 16, 4, "sha256"),
            (f"ECDHE-{auth}-AES256-GCM-SHA384", "aes-gcm", 32, 4, "sha384"),
            (f"ECDHE-{auth}-CHACHA20-POLY1305", "chacha20-poly1305", 32, 12, "sha256"),
        ):
            suites[name] = CipherSuite(name, cipher, key_length, iv_length, prf_hash)
    return suites


#: Suites the layer takes over, by OpenSSL's name (``SSL.Connection.get_cipher_name()``).
SUITES: dict[str, CipherSuite] = _suites()


def prf(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """The TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label + seed) cut to ``length`` bytes."""
    digest = getattr(hashlib, hash_name)
    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return bytes(out[:length])


def key_block(suite: CipherSuite, master_secret: bytes, client_random: bytes,
              server_random: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(client key, server key, client IV, server IV) of RFC 5246 section 6.3 (AEAD: no MAC keys)."""
    k, i = suite.key_length, suite.iv_length
    block = prf(master_secret, b"key expansion", server_random + client_random, 2 * (k + i), suite.prf_hash)
    return block[:k], block[k : 2 * k], block[2 * k : 2 * k + i], block[2 * k + i :]


def _process_libcrypto() -> str | None:
    """Path of the shared libcrypto Python's ``hashlib`` loaded into this process (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import _hashlib  # noqa: F401 - maps Python's libcrypto into the process
    except ImportError:
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith("libcrypto.so"):
                    return fields[5].strip()
    except OSError:
        return None
    return None


def _install_evp() -> str:
    """Install OpenSSL's EVP functions into the compiled layer; "" on success, else the reason."""
    path = _process_libcrypto()
    if path is None:
        return "no shared libcrypto in this process (Linux only)"
    try:
        library = ctypes.CDLL(path)
        version = library.OpenSSL_version_num
        version.restype = ctypes.c_ulong
        if version() < 0x10100000:
            return f"{path} is older than OpenSSL 1.1.0"
        addresses: dict[str, int] = {}
        for name in _dtls.EVP_FUNCTIONS:
            address = ctypes.cast(getattr(library, name), ctypes.c_void_p).value
            if address is None:
                return f"{path}: {name} is a null pointer"
            addresses[name] = address
    except (OSError, AttributeError) as error:
        return f"{path}: {error}"
    _dtls.install_evp(addresses)
    data, nonce, aad = b"clasp_fast known answer" * 20, bytes(range(12)), bytes(range(13))
    for cipher, key in (("aes-gcm", bytes(range(16))), ("aes-gcm", bytes(range(32))),
                        ("chacha20-poly1305", bytes(range(32)))):
        expected = (AESGCM(key) if cipher == "aes-gcm" else ChaCha20Poly1305(key)).encrypt(nonce, data, aad)
        try:
            sealed = _dtls.EvpAead(cipher, key, True).encrypt(nonce, data, aad)
            opened = _dtls.EvpAead(cipher, key, False).decrypt(nonce, expected, aad)
        except ValueError as error:
            return f"{path}: {cipher}: {error}"
        if sealed != expected or opened != data:
            return f"{path}: {cipher} disagrees with cryptography"
    return ""


def evp_status() -> tuple[bool, str]:
    """(True, path note) if records use OpenSSL's EVP functions directly, else (False, the reason)."""
    global _evp_reason
    if _evp_reason is None:
        _evp_reason = _install_evp()
    return (_evp_reason == "", _evp_reason or "OpenSSL EVP from this process's libcrypto")


def _aead_pair(suite: CipherSuite, write_key: bytes, read_key: bytes, crypto: str) -> tuple:
    if crypto not in ("auto", "evp", "cryptography"):
        raise ValueError(f"crypto must be 'auto', 'evp' or 'cryptography', got {crypto!r}")
    if crypto != "cryptography":
        available, reason = evp_status()
        if available:
            return (_dtls.EvpAead(suite.cipher, write_key, True), _dtls.EvpAead(suite.cipher, read_key, False))
        if crypto == "evp":
            raise DtlsTakeoverError(f"OpenSSL's EVP functions are not usable here: {reason}")
    return suite.aead(write_key), suite.aead(read_key)


def _probe_write_sequence(ssl_conn: SSL.Connection) -> int:
    """Sequence number OpenSSL gives its next epoch-1 record, from a probe record never sent."""
    try:
        pending = ssl_conn.bio_read(65536)
    except SSL.WantReadError:
        pending = b""
    if pending:
        raise DtlsTakeoverError(
            f"OpenSSL still has {len(pending)} byte(s) of output that were not sent; "
            "take over only after the handshake's last flight went out")
    ssl_conn.send(_PROBE)
    probe = ssl_conn.bio_read(65536)
    records = parse_records(probe)
    if len(records) != 1 or records[0][0] != CONTENT_APPLICATION_DATA:
        raise DtlsTakeoverError(f"OpenSSL wrote {len(records)} record(s) for the probe, expected one")
    _, _, epoch, sequence, _, _ = records[0]
    if epoch != 1:
        raise DtlsTakeoverError(f"OpenSSL writes epoch {epoch}; only epoch 1 (no renegotiation) is taken over")
    return sequence + 1


class DtlsRecordLayer(_dtls.RecordLayer):
    """The epoch-1 records of one DTLS 1.2 connection (see the module docstring)."""

    __slots__ = ()

    @classmethod
    def from_ssl_connection(cls, ssl_conn: SSL.Connection, is_client: bool, *,
                            read_sequence: int | None = None, crypto: str = "auto") -> "DtlsRecordLayer":
        """Take over the records of ``ssl_conn``, a pyOpenSSL connection whose handshake is complete.

        ``is_client``: the DTLS role of this side. ``read_sequence``: the highest epoch-1 sequence
        number of the peer that OpenSSL has already read (it and everything below count as seen),
        or None if unknown. ``crypto``: "evp" (OpenSSL's EVP functions, see :func:`evp_status`),
        "cryptography", or "auto" (EVP where usable). Raises :class:`DtlsTakeoverError` (and changes
        nothing) for a protocol or suite this layer does not handle.
        """
        version = ssl_conn.get_protocol_version_name()
        if version != "DTLSv1.2":
            raise DtlsTakeoverError(f"protocol {version} is not taken over (DTLS 1.2 only)")
        name = ssl_conn.get_cipher_name()
        suite = SUITES.get(name or "")
        if suite is None:
            raise DtlsTakeoverError(f"cipher suite {name} is not taken over (AEAD suites only)")
        master = ssl_conn.master_key()
        client_random, server_random = ssl_conn.client_random(), ssl_conn.server_random()
        if not master or not client_random or not server_random:
            raise DtlsTakeoverError("the handshake is not complete (no master secret yet)")
        client_key, server_key, client_iv, server_iv = key_block(suite, master, client_random, server_random)
        if is_client:
            write_key, write_iv, read_key, read_iv = client_key, client_iv, server_key, server_iv
        else:
            write_key, write_iv, read_key, read_iv = server_key, server_iv, client_key, client_iv
        write_aead, read_aead = _aead_pair(suite, write_key, read_key, crypto)
        write_sequence = _probe_write_sequence(ssl_conn)
        # From here on OpenSSL must never write an epoch-1 record again (see the module docstring).
        ssl_conn.set_shutdown(ssl_conn.get_shutdown() | SSL.SENT_SHUTDOWN)
        return cls(suite.cipher, write_aead, write_iv, read_aead, read_iv, write_sequence=write_sequence,
                   read_sequence=read_sequence, epoch=1, auth_error=InvalidTag)

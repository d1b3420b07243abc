"""One TLS connection as the generator means it: the spec, and the bytes each side writes.

A :class:`ConnectionSpec` says what was negotiated (version, suite, group or DH size,
chain, SNI, ALPN), how the handshake ends (established, or a fatal alert), how much
application data follows, and which alert rules the connection should trigger: the ground
truth a test compares the sensor's and the detectors' output with. :func:`tls_writes` turns
it into the application writes of both sides, which ``pcap`` frames into TCP.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from tools.tlsgen import handshake as hs
from tools.tlsgen.pcap import Close, TcpConversation, Write

# The suites the scenarios use: code -> key exchange as it shows on the wire (the
# ServerKeyExchange that follows, RFC 5246 7.4.3). TLS 1.3 suites have none.
SUITE_KX = {
    0x0003: "RSA_EXPORT",  # TLS_RSA_EXPORT_WITH_RC4_40_MD5 (RFC 2246 A.5)
    0x0005: "RSA",  # TLS_RSA_WITH_RC4_128_SHA
    0x0014: "DHE",  # TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA
    0x002F: "RSA",  # TLS_RSA_WITH_AES_128_CBC_SHA (RFC 3268)
    0x009E: "DHE",  # TLS_DHE_RSA_WITH_AES_128_GCM_SHA256 (RFC 5288)
    0xC011: "ECDHE",  # TLS_ECDHE_RSA_WITH_RC4_128_SHA (RFC 4492)
    0xC013: "ECDHE",  # TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
    0xC02B: "ECDHE",  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (RFC 5289)
    0xC02F: "ECDHE",  # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    0x1301: "TLS13",  # TLS_AES_128_GCM_SHA256 (RFC 8446 B.4)
    0x1302: "TLS13",  # TLS_AES_256_GCM_SHA384
}
MODERN_SUITES = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
                 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035)
LEGACY_SUITES = (0xC013, 0xC014, 0x0039, 0x0033, 0x002F, 0x0035, 0x000A, 0x0005, 0x0004)
GCM_FINISHED = 40  # 8-byte explicit nonce + 16-byte verify_data message + 16-byte tag
CBC_FINISHED = 48  # IV, message and MAC, padded to the block size


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """What one connection is, and what should be seen and alerted on.

    ``rules`` are the alert rule names (``processors.catalog``) the connection should
    trigger with the scenario's policy; ``maybe_rules`` may also fire, depending on how a
    detector judges (e.g. a chain verifier that refuses SHA-1 or 1024-bit RSA).
    ``failure_alert`` makes the server answer the ClientHello with that fatal alert: then
    ``version`` and ``cipher`` are what the client asked for, no ServerHello is sent and
    ``chain`` should be empty.
    """

    client: tuple[str, int]
    server: tuple[str, int]
    start: float
    version: int
    cipher: int
    chain: tuple[bytes, ...] = ()
    sni: str | None = None
    alpn: bytes | None = None
    group: int | None = None
    dh_bits: int | None = None
    export_rsa_bits: int | None = None
    grease: bool = False
    failure_alert: int | None = None
    app_segments: int = 0
    rules: frozenset[str] = frozenset()
    maybe_rules: frozenset[str] = frozenset()
    label: str = ""

    @property
    def established(self) -> bool:
        return self.failure_alert is None

    @property
    def kx(self) -> str:
        return SUITE_KX[self.cipher]


def _rng(spec: ConnectionSpec, seed: int) -> random.Random:
    return random.Random(f"tlsgen-conn:{seed}:{spec.client}:{spec.server}:{spec.start!r}")


def _client_hello(spec: ConnectionSpec, rng: random.Random) -> bytes:
    grease = rng.choice(hs.GREASE_VALUES) if spec.grease else None
    alpn = (b"h2", b"http/1.1") if spec.alpn is not None else ()
    if spec.version == hs.TLS13:
        return hs.client_hello(
            rng, cipher_suites=MODERN_SUITES, server_name=spec.sni, alpn=alpn,
            supported_versions=(hs.TLS13, hs.TLS12), key_share_groups=(spec.group or hs.X25519,),
            grease=grease, session_id=rng.randbytes(32))
    offered = (spec.cipher, *(c for c in LEGACY_SUITES if c != spec.cipher))
    if spec.version == hs.SSL3:
        return hs.client_hello(rng, version=hs.SSL3, cipher_suites=offered, extensions=False)
    return hs.client_hello(
        rng, version=spec.version, cipher_suites=offered, server_name=spec.sni, alpn=alpn,
        signature_algorithms=hs.DEFAULT_SIGNATURE_ALGORITHMS if spec.version == hs.TLS12 else (),
        grease=grease)


def _server_flight(spec: ConnectionSpec, rng: random.Random) -> bytes:
    messages = hs.server_hello(rng, version=spec.version, cipher_suite=spec.cipher,
                               alpn=spec.alpn) + hs.certificate(spec.chain)
    kx, v = spec.kx, spec.version
    if kx == "DHE":
        prime = hs.dh_prime(spec.dh_bits or 2048, rng)
        messages += hs.server_key_exchange_dhe(prime, v, rng)
    elif kx == "ECDHE":
        messages += hs.server_key_exchange_ecdhe(spec.group or hs.X25519, v, rng)
    elif kx == "RSA_EXPORT" and spec.export_rsa_bits:
        messages += hs.server_key_exchange_rsa(spec.export_rsa_bits, v, rng)
    return hs.records(hs.HANDSHAKE, v, messages + hs.server_hello_done())


def _finished(spec: ConnectionSpec, rng: random.Random) -> bytes:
    """ChangeCipherSpec, then the Finished, already encrypted (RFC 5246 7.4.9)."""
    size = GCM_FINISHED if spec.cipher in (0x009E, 0xC02B, 0xC02F) else CBC_FINISHED
    return hs.change_cipher_spec(spec.version) + hs.encrypted_record(
        hs.HANDSHAKE, spec.version, size, rng)


def _handshake_tls12(spec: ConnectionSpec, rng: random.Random) -> Iterator[Write]:
    v = spec.version
    yield 1, _server_flight(spec, rng)
    kx = {"RSA_EXPORT": "RSA", "DHE": "DHE", "ECDHE": "ECDHE", "RSA": "RSA"}[spec.kx]
    size = hs.KEY_SHARE_LENGTH.get(spec.group or hs.X25519, 65) if kx == "ECDHE" else 256
    cke = hs.client_key_exchange(kx, v, rng, size=size)
    yield 0, hs.records(hs.HANDSHAKE, v, cke) + _finished(spec, rng)
    yield 1, _finished(spec, rng)


def _handshake_tls13(spec: ConnectionSpec, rng: random.Random) -> Iterator[Write]:
    """ServerHello, the compatibility ChangeCipherSpec (RFC 8446 D.4), then one encrypted
    record standing for EncryptedExtensions, Certificate, CertificateVerify and Finished
    (outer type application_data, RFC 8446 5.2); the client answers with its own."""
    hello = hs.server_hello(rng, version=hs.TLS13, cipher_suite=spec.cipher,
                            session_id=rng.randbytes(32), key_share_group=spec.group)
    flight = 64 + sum(len(der) + 5 for der in spec.chain) + 300
    yield 1, (hs.records(hs.HANDSHAKE, hs.TLS12, hello) + hs.change_cipher_spec(hs.TLS12)
              + hs.encrypted_record(hs.APPLICATION_DATA, hs.TLS12, flight, rng))
    yield 0, (hs.change_cipher_spec(hs.TLS12)
              + hs.encrypted_record(hs.APPLICATION_DATA, hs.TLS12, 53, rng))


@lru_cache(maxsize=1)
def _pool() -> bytes:
    """1 MiB of fixed pseudo-random bytes that bulk records are cut from: looks encrypted,
    costs a slice instead of a random draw per byte."""
    return random.Random("tlsgen-bulk-pool").randbytes(1 << 20)


def bulk_stream(total: int, rng: random.Random, chunk: int) -> Iterator[bytes]:
    """Exactly ``total`` bytes of application_data records (each at most 2^14 + 256
    ciphertext bytes, RFC 8446 5.2), yielded in pieces of ``chunk`` bytes."""
    pool, limit, buffered = _pool(), hs.MAX_FRAGMENT + 24 + 5, b""
    remaining = total
    while remaining:
        n = min(limit, remaining)
        if 0 < remaining - n < 6:  # leave room for one more whole record header + byte
            n -= 6
        start = rng.randrange(0, len(pool) - n)
        buffered += b"\x17\x03\x03" + (n - 5).to_bytes(2, "big") + pool[start : start + n - 5]
        remaining -= n
        while len(buffered) >= chunk:
            yield buffered[:chunk]
            buffered = buffered[chunk:]
    if buffered:
        yield buffered


def tls_writes(spec: ConnectionSpec, seed: int, mss: int = 1460) -> Iterator[Write]:
    """Both sides' writes for ``spec``: the handshake, then (if established) a client
    request and ``app_segments`` MSS-sized segments of server application data."""
    rng = _rng(spec, seed)
    record_version = hs.SSL3 if spec.version == hs.SSL3 else hs.TLS10
    if spec.version == hs.TLS13:
        record_version = hs.TLS10  # RFC 8446 5.1: 0x0301 for the first ClientHello
    yield 0, hs.records(hs.HANDSHAKE, record_version, _client_hello(spec, rng))
    if spec.failure_alert is not None:
        yield 1, hs.alert(hs.FATAL, spec.failure_alert, min(spec.version, hs.TLS12))
        return
    if spec.version == hs.TLS13:
        yield from _handshake_tls13(spec, rng)
    else:
        yield from _handshake_tls12(spec, rng)
    v = min(spec.version, hs.TLS12)
    yield 0, hs.encrypted_record(hs.APPLICATION_DATA, v, 120 + rng.randrange(200), rng)
    if spec.app_segments:
        for piece in bulk_stream(spec.app_segments * mss, rng, 44 * mss):
            yield 1, piece


def conversation(spec: ConnectionSpec, seed: int, mss: int = 1460) -> TcpConversation:
    """The TCP conversation carrying ``spec``: the client closes an established session,
    the server closes after a fatal alert."""
    close: Close = "client_fin" if spec.established else "server_fin"
    rng = _rng(spec, seed)
    isn = (rng.getrandbits(32), rng.getrandbits(32))
    return TcpConversation(spec.client, spec.server, spec.start, tls_writes(spec, seed, mss),
                           close, isn)

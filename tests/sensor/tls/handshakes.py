"""Real TLS handshakes in memory, for tests: Python's ``ssl`` over ``ssl.MemoryBIO`` pairs.

No network: a client and a server ``SSLObject`` talk through memory BIOs and every byte
each one sends is recorded. Certificates are generated with ``cryptography`` (a CA and a
leaf signed by it; keys are cached per process so a test file pays for them once).

Typical use::

    from tests.sensor.tls.handshakes import make_handshake, resume_handshake

    hs = make_handshake(version="1.2", alpn=["h2"], sni="example.com")
    hs.client_to_server      # bytes the client sent, records as on the wire
    hs.server_to_client      # bytes the server sent
    hs.server_chain_der      # [leaf DER, CA DER], what the server's Certificate carries
    hs.cipher, hs.version    # what OpenSSL negotiated ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2")

    again = resume_handshake(hs)   # same contexts, ``session=hs.session``: resumed

Options of :func:`make_handshake`: ``version`` ("1.0", "1.1", "1.2", "1.3" or None for the
highest both support), ``ciphers`` (an OpenSSL cipher string for TLS <= 1.2, e.g.
"ECDHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"), ``key_type`` ("rsa" or
"ecdsa"), ``rsa_bits``, ``dh_bits`` (1024 or 2048: the server gets the RFC 2409 group 2
or RFC 7919 ffdhe2048 prime for DHE suites), ``ecdh_curve`` (restrict the server to one
curve, e.g. "secp384r1": with TLS 1.3 this forces a HelloRetryRequest), ``alpn`` (client
offer) and ``server_alpn`` (server preference, defaults to ``alpn``), ``sni`` (None sends
no server_name), ``client_cert`` (the server requires one and the client sends it),
``app_data`` (bytes the client writes after the handshake; the server answers),
``close`` (both sides send close_notify at the end), ``server_ciphers`` (the server's own
cipher string, to make them disagree) and ``allow_failure`` (return the bytes of a failed
handshake, alert included, instead of raising).
"""

from __future__ import annotations

import base64
import datetime
import ssl
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
_PUMP_ROUNDS = 50


@dataclass(frozen=True)
class Credential:
    """A key and its chain: ``chain_der`` is leaf first, then the CA."""

    key_pem: bytes
    chain_der: list[bytes]
    ca_der: bytes

    def chain_pem(self) -> bytes:
        return b"".join(_pem("CERTIFICATE", der) for der in self.chain_der)


@dataclass(frozen=True)
class HandshakeBytes:
    """What one in-memory TLS connection put on the wire, per direction."""

    client_to_server: bytes
    server_to_client: bytes
    server_chain_der: list[bytes]
    client_chain_der: list[bytes]
    version: str
    cipher: str
    alpn: str | None
    session_reused: bool
    session: ssl.SSLSession | None = field(repr=False)
    contexts: tuple[ssl.SSLContext, ssl.SSLContext] = field(repr=False)
    sni: str | None = None


def _pem(label: str, der: bytes) -> bytes:
    b64 = base64.encodebytes(der).replace(b"\n", b"")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label.encode(),
        b"\n".join(lines),
        label.encode(),
    )


def _new_key(key_type: str, rsa_bits: int) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key_type must be 'rsa' or 'ecdsa', not {key_type!r}")


@cache
def credential(
    key_type: str = "rsa", rsa_bits: int = 2048, name: str = "example.com"
) -> Credential:
    """A CA-signed leaf for ``name`` (SAN dNSName) with a key of ``key_type``; cached."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _new_key(key_type, rsa_bits)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"certwatch test CA {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = _new_key(key_type, rsa_bits)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = serialization.Encoding.DER
    return Credential(key_pem, [leaf.public_bytes(der), ca.public_bytes(der)], ca.public_bytes(der))


def _load(ctx: ssl.SSLContext, cred: Credential) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cred.pem"
        path.write_bytes(cred.chain_pem() + cred.key_pem)
        ctx.load_cert_chain(path)


# ---- well-known DH groups, computed from their RFC definitions -------------------------


def _fixed_e(bits: int) -> int:
    """floor(2**bits * e), exact: the series sum of 1/k! in integer arithmetic."""
    guard = 64
    term, total, k = 1 << (bits + guard), 0, 0
    while term:
        total += term
        k += 1
        term //= k
    return total >> guard


def _fixed_pi(bits: int) -> int:
    """floor(2**bits * pi) by Machin's formula, in integer arithmetic."""
    one = 1 << (bits + 64)

    def arctan_inv(x: int) -> int:
        total, term, n, sign = 0, one // x, 1, 1
        while term:
            total += sign * (term // n)
            term //= x * x
            n, sign = n + 2, -sign
        return total

    return (4 * (4 * arctan_inv(5) - arctan_inv(239))) >> 64


@cache
def dh_prime(bits: int) -> int:
    """The 1024-bit MODP group 2 prime (RFC 2409 6.2) or RFC 7919 ffdhe2048 prime."""
    if bits == 1024:
        return 2**1024 - 2**960 - 1 + 2**64 * (_fixed_pi(894) + 129093)
    if bits == 2048:
        return 2**2048 - 2**1984 + (_fixed_e(1918) + 560316) * 2**64 - 1
    raise ValueError("dh_bits must be 1024 or 2048")


def _der_int(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _dh_params_pem(bits: int) -> bytes:
    """PKCS #3 DHParameter ::= SEQUENCE { prime INTEGER, base INTEGER }, generator 2."""
    body = _der_int(dh_prime(bits)) + _der_int(2)
    return _pem("DH PARAMETERS", b"\x30" + _der_len(len(body)) + body)


# ---- the connection ---------------------------------------------------------------------


def _contexts(
    *,
    version: str | None,
    ciphers: str | None,
    server_ciphers: str | None,
    key_type: str,
    rsa_bits: int,
    dh_bits: int | None,
    ecdh_curve: str | None,
    alpn: list[str] | None,
    server_alpn: list[str] | None,
    client_cert: bool,
    server_cred: Credential,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client.check_hostname = False  # tests choose SNI freely; the chain is still verified
    client.load_verify_locations(cadata=server_cred.ca_der)
    _load(server, server_cred)
    for ctx, suites in ((client, ciphers), (server, server_ciphers or ciphers)):
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = _VERSIONS[version]
        if version in ("1.0", "1.1") or dh_bits == 1024:
            # OpenSSL 3's default security level refuses these; tests want to see them.
            ctx.set_ciphers((suites or "DEFAULT") + ":@SECLEVEL=0")
        elif suites is not None:
            ctx.set_ciphers(suites)
    if dh_bits is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dh.pem"
            path.write_bytes(_dh_params_pem(dh_bits))
            server.load_dh_params(str(path))
    if ecdh_curve is not None:
        server.set_ecdh_curve(ecdh_curve)
    if alpn:
        client.set_alpn_protocols(alpn)
    if server_alpn or alpn:
        server.set_alpn_protocols(server_alpn or alpn or [])
    if client_cert:
        client_cred = credential(key_type, rsa_bits, "client.example.com")
        _load(client, client_cred)
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_verify_locations(cadata=client_cred.ca_der)
    return client, server


def _step(obj: ssl.SSLObject, action: str, payload: bytes = b"") -> bool:
    """Run one non-blocking action; True when it completed."""
    try:
        if action == "handshake":
            obj.do_handshake()
        elif action == "write":
            obj.write(payload)
        elif action == "read":
            obj.read(65536)
        elif action == "unwrap":
            obj.unwrap()
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False
    return True


class _Wire:
    """Two SSLObjects joined by memory BIOs, recording each direction."""

    def __init__(self, client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext,
                 sni: str | None, session: ssl.SSLSession | None) -> None:  # fmt: skip
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.client = client_ctx.wrap_bio(
            self.c_in, self.c_out, server_side=False, server_hostname=sni, session=session
        )
        self.server = server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        self.c2s = bytearray()
        self.s2c = bytearray()

    def flush(self) -> bool:
        moved = False
        data = self.c_out.read()
        if data:
            self.c2s += data
            self.s_in.write(data)
            moved = True
        data = self.s_out.read()
        if data:
            self.s2c += data
            self.c_in.write(data)
            moved = True
        return moved

    def run(self, client_action: str, server_action: str, payload: bytes = b"") -> None:
        c_done = s_done = False
        for _ in range(_PUMP_ROUNDS):
            c_done = c_done or _step(self.client, client_action, payload)
            s_done = s_done or _step(self.server, server_action, payload)
            if not self.flush() and c_done and s_done:
                return
        if not (c_done and s_done):
            raise RuntimeError(f"in-memory TLS stalled ({client_action}/{server_action})")


def make_handshake(
    version: str | None = "1.2",
    *,
    sni: str | None = "example.com",
    alpn: list[str] | None = None,
    server_alpn: list[str] | None = None,
    ciphers: str | None = None,
    server_ciphers: str | None = None,
    key_type: str = "rsa",
    rsa_bits: int = 2048,
    dh_bits: int | None = None,
    ecdh_curve: str | None = None,
    client_cert: bool = False,
    app_data: bytes = b"ping",
    close: bool = False,
    allow_failure: bool = False,
) -> HandshakeBytes:
    """Run one full handshake in memory and return the bytes of both directions.

    See the module docstring for the options. Raises ``ssl.SSLError`` if OpenSSL cannot
    agree on the requested parameters, unless ``allow_failure``: then the bytes sent
    until the failure are returned (with the alert that ended it) and ``version`` and
    ``cipher`` are empty.
    """
    server_cred = credential(key_type, rsa_bits, sni or "example.com")
    contexts = _contexts(
        version=version,
        ciphers=ciphers,
        server_ciphers=server_ciphers,
        key_type=key_type,
        rsa_bits=rsa_bits,
        dh_bits=dh_bits,
        ecdh_curve=ecdh_curve,
        alpn=alpn,
        server_alpn=server_alpn,
        client_cert=client_cert,
        server_cred=server_cred,
    )
    client_chain = credential(key_type, rsa_bits, "client.example.com").chain_der
    return _connect(
        contexts, sni, None, server_cred.chain_der, client_chain if client_cert else [],
        app_data, close, allow_failure,
    )  # fmt: skip


def resume_handshake(previous: HandshakeBytes, *, app_data: bytes = b"ping",
                     close: bool = False) -> HandshakeBytes:  # fmt: skip
    """Connect again with the same contexts and ``session=previous.session``: an
    abbreviated (TLS 1.2) or PSK (TLS 1.3) handshake. ``session_reused`` says if it was."""
    if previous.session is None:
        raise ValueError("the previous connection has no session to resume")
    return _connect(
        previous.contexts, previous.sni, previous.session, previous.server_chain_der,
        previous.client_chain_der, app_data, close, False,
    )  # fmt: skip


def _connect(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    sni: str | None,
    session: ssl.SSLSession | None,
    server_chain: list[bytes],
    client_chain: list[bytes],
    app_data: bytes,
    close: bool,
    allow_failure: bool,
) -> HandshakeBytes:
    wire = _Wire(contexts[0], contexts[1], sni, session)
    try:
        wire.run("handshake", "handshake")
    except ssl.SSLError:
        if not allow_failure:
            raise
        while wire.flush():  # deliver the alert the failing side wrote
            pass
        return HandshakeBytes(
            bytes(wire.c2s), bytes(wire.s2c), list(server_chain), list(client_chain),
            "", "", None, False, None, contexts, sni,
        )  # fmt: skip
    if app_data:
        wire.run("write", "read", app_data)  # the server reads: it may send 1.3 tickets
        wire.run("read", "write", app_data)  # the client reads them and the reply
    if close:
        wire.run("unwrap", "unwrap")
    cipher = wire.client.cipher()
    return HandshakeBytes(
        client_to_server=bytes(wire.c2s),
        server_to_client=bytes(wire.s2c),
        server_chain_der=list(server_chain),
        client_chain_der=list(client_chain),
        version=wire.client.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=wire.client.selected_alpn_protocol(),
        session_reused=wire.client.session_reused,
        session=wire.client.session,
        contexts=contexts,
        sni=sni,
    )


# ---- streams of a recorded capture ------------------------------------------------------


def tcp_streams_from_capture(path: str | Path, server_port: int) -> tuple[bytes, bytes]:
    """The two byte streams (client->server, server->client) of the first TCP connection
    to ``server_port`` in a small capture, in sequence order, retransmissions dropped.

    For tests only: it trusts the capture to hold one clean connection. Reads with the
    sensor's own reader and decoder.
    """
    from sensor.capture import open_capture
    from sensor.decode import decode_frame

    chunks: dict[bool, dict[int, bytes]] = {True: {}, False: {}}
    with open_capture(path) as reader:
        for frame in reader:
            seg = decode_frame(frame.linktype, frame.data)
            if seg is None or not seg.payload or server_port not in (seg.src_port, seg.dst_port):
                continue
            chunks[seg.dst_port == server_port].setdefault(seg.seq, seg.payload)
    streams = []
    for to_server in (True, False):
        out, next_seq = bytearray(), -1
        for seq, payload in sorted(chunks[to_server].items()):
            skip = max(0, next_seq - seq) if next_seq >= 0 else 0
            if skip < len(payload):  # else wholly a retransmission of bytes we have
                out += payload[skip:]
                next_seq = seq + len(payload)
        streams.append(bytes(out))
    return streams[0], streams[1]

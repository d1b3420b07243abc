"""Parsers for the bodies of TLS handshake messages (sans-IO).

Each function takes one complete message body, as the record layer
(:class:`sensor.tls.records.TlsRecordParser`) reassembles it, and returns a frozen record
from :mod:`sensor.tls.messages`. The body is complete by construction, so there is no
"need more bytes" case here: anything that does not fit its declared lengths (truncated
vector, length mismatch, trailing garbage) raises :class:`~sensor.errors.HandshakeError`
with a message naming the field.

Wire formats: RFC 8446 section 4 (TLS 1.3), RFC 5246 section 7.4 (TLS 1.2 and earlier),
RFC 6066 (server_name), RFC 7301 (ALPN), RFC 8422 (EC), RFC 6101 appendix E (SSLv2 hellos).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import TypeVar

from sensor.errors import HandshakeError
from sensor.tls.messages import (
    CertificateMessage,
    ClientHello,
    Extension,
    ServerHello,
    ServerKeyExchange,
)

# RFC 8446 4.1.3: a ServerHello whose random is SHA-256("HelloRetryRequest") is an HRR.
HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

# RFC 8422 5.4 ECCurveType, and the Supported Groups code points standing for explicit
# curves (RFC 8422 5.1.1), used as ``named_group`` when a server sends explicit parameters.
_CURVE_EXPLICIT_PRIME, _CURVE_EXPLICIT_CHAR2, _CURVE_NAMED = 1, 2, 3
_GROUP_EXPLICIT_PRIME, _GROUP_EXPLICIT_CHAR2 = 0xFF01, 0xFF02


class _Reader:
    """A cursor over one message body; every read checks the bound and names the field."""

    __slots__ = ("data", "end", "pos", "what")

    def __init__(self, data: bytes, what: str, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int, field: str) -> int:
        start = self.pos
        if n > self.end - start:
            raise HandshakeError(
                f"{self.what}: truncated {field} (needs {n} bytes, {self.end - start} left)"
            )
        self.pos = start + n
        return start

    def uint(self, size: int, field: str) -> int:
        start = self._take(size, field)
        return int.from_bytes(self.data[start : start + size], "big")

    def raw(self, n: int, field: str) -> bytes:
        start = self._take(n, field)
        return self.data[start : start + n]

    def vector(self, len_size: int, field: str, minimum: int = 0, maximum: int = 2**24) -> bytes:
        """An opaque vector with a ``len_size``-byte length prefix (RFC 8446 3.4)."""
        n = self.uint(len_size, f"{field} length")
        if not minimum <= n <= maximum:
            raise HandshakeError(f"{self.what}: {field} length {n} not in [{minimum}, {maximum}]")
        return self.raw(n, field)

    def sub(self, len_size: int, field: str) -> _Reader:
        """A reader over a length-prefixed vector, advancing past it."""
        n = self.uint(len_size, f"{field} length")
        start = self._take(n, field)
        return _Reader(self.data, f"{self.what} {field}", start, start + n)

    def done(self, field: str) -> None:
        if self.pos != self.end:
            raise HandshakeError(
                f"{self.what}: {self.end - self.pos} bytes of trailing data after {field}"
            )


def _u16_list(data: bytes, what: str) -> tuple[int, ...]:
    if len(data) % 2:
        raise HandshakeError(f"{what}: odd length {len(data)} for a list of 16-bit values")
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


def _extensions(r: _Reader) -> tuple[Extension, ...]:
    """The optional extensions block at the end of a hello (RFC 5246 7.4.1.2: it may be
    absent altogether in SSLv3/TLS 1.0 hellos)."""
    if r.remaining() == 0:
        return ()
    block = r.sub(2, "extensions")
    r.done("extensions")
    out: list[Extension] = []
    while block.remaining():
        ext_type = block.uint(2, "extension type")
        out.append(Extension(ext_type, block.vector(2, f"extension 0x{ext_type:04x}")))
    return tuple(out)


def _first(extensions: tuple[Extension, ...], ext_type: int) -> bytes | None:
    # RFC 8446 4.2 forbids duplicates; a passive sensor reads the first one and leaves
    # the duplicate visible in ``extensions`` for fingerprints and anomaly detectors.
    for ext in extensions:
        if ext.type == ext_type:
            return ext.data
    return None


def _server_name(data: bytes) -> str | None:
    """RFC 6066 3: ServerNameList; the first host_name (type 0) entry, or None."""
    if not data:
        return None
    r = _Reader(data, "server_name")
    names = r.sub(2, "server_name_list")
    r.done("server_name_list")
    host: str | None = None
    while names.remaining():
        name_type = names.uint(1, "name_type")
        name = names.vector(2, "host_name", minimum=1, maximum=0xFFFF)
        if name_type == 0 and host is None:
            host = name.decode("ascii", errors="backslashreplace")
    return host


def _alpn_list(data: bytes, what: str) -> tuple[bytes, ...]:
    """RFC 7301 3.1: ProtocolNameList, each name 1..255 bytes."""
    r = _Reader(data, what)
    names = r.sub(2, "protocol_name_list")
    r.done("protocol_name_list")
    out: list[bytes] = []
    while names.remaining():
        out.append(names.vector(1, "protocol name", minimum=1, maximum=255))
    return tuple(out)


def _u16_vector(data: bytes, len_size: int, what: str) -> tuple[int, ...]:
    r = _Reader(data, what)
    body = r.vector(len_size, "list")
    r.done("list")
    return _u16_list(body, what)


def _checked_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello body (RFC 8446 4.1.2, RFC 5246 7.4.1.2).

    Returns a :class:`ClientHello` with the raw fields and the decoded server_name,
    ALPN, supported_versions, supported_groups, ec_point_formats and signature_algorithms
    extensions. Raises :class:`HandshakeError` naming the field that does not fit.

    Two departures from the grammar are tolerated, because a server may well answer such
    a hello (tls_invalid_reads.pcap: an empty compression list and one stray byte, and the
    server replied with a ServerHello) and the fields still read one way only: an empty
    ``legacy_compression_methods`` (RFC 5246 7.4.1.2 requires at least ``null``), and a
    single byte after it, too short to be an extensions block's length. Each is named in
    ``irregularities``.
    """
    r = _Reader(body, "ClientHello")
    legacy_version = r.uint(2, "legacy_version")
    random = r.raw(32, "random")
    session_id = r.vector(1, "legacy_session_id", maximum=32)
    suites = _u16_list(r.vector(2, "cipher_suites", minimum=2, maximum=0xFFFE), "cipher_suites")
    compression = tuple(r.vector(1, "legacy_compression_methods", maximum=255))
    irregularities: list[str] = []
    if not compression:
        irregularities.append("ClientHello: empty legacy_compression_methods")
    if r.remaining() == 1:
        irregularities.append("ClientHello: 1 stray byte where the extensions block starts")
        extensions: tuple[Extension, ...] = ()
    else:
        extensions = _extensions(r)
    sni = _first(extensions, EXT_SERVER_NAME)
    alpn = _first(extensions, EXT_ALPN)
    versions = _first(extensions, EXT_SUPPORTED_VERSIONS)
    groups = _first(extensions, EXT_SUPPORTED_GROUPS)
    formats = _first(extensions, EXT_EC_POINT_FORMATS)
    sigalgs = _first(extensions, EXT_SIGNATURE_ALGORITHMS)
    return ClientHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suites=suites,
        compression_methods=compression,
        extensions=extensions,
        server_name=_server_name(sni) if sni is not None else None,
        alpn=_alpn_list(alpn, "ALPN") if alpn is not None else (),
        supported_versions=(
            _u16_vector(versions, 1, "supported_versions") if versions is not None else ()
        ),
        supported_groups=(_u16_vector(groups, 2, "supported_groups") if groups is not None else ()),
        ec_point_formats=_ec_point_formats(formats) if formats is not None else (),
        signature_algorithms=(
            _u16_vector(sigalgs, 2, "signature_algorithms") if sigalgs is not None else ()
        ),
        irregularities=tuple(irregularities),
    )


def _ec_point_formats(data: bytes) -> tuple[int, ...]:
    r = _Reader(data, "ec_point_formats")
    formats = tuple(r.vector(1, "ec_point_format_list"))
    r.done("ec_point_format_list")
    return formats


def is_draft_server_hello_version(version: int) -> bool:
    """Whether a ServerHello whose version field is ``version`` has the early TLS 1.3
    draft layout: ``version, random, cipher_suite, extensions``, with neither
    legacy_session_id nor compression method. Drafts up to 21 put the negotiated version
    in that field: ``0x7fNN`` (draft-ietf-tls-tls13-NN, 4.1.3), Facebook's Fizz ``0xfbNN``
    for the same drafts, and pre-numbering implementations plain ``0x0304``
    (tls13-draft14.pcap, NSS 2016). Draft 22 restored both fields for middlebox
    compatibility and moved the version to supported_versions (draft-22 4.1.3, RFC 8446
    D.4), so from 0x7f16 on, and with RFC 8446's legacy_version 0x0303, the layout is
    TLS 1.2's.
    """
    if version == 0x0304:
        return True
    return version >> 8 in (0x7F, 0xFB) and (version & 0xFF) < 22


def _checked_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello or HelloRetryRequest body (RFC 8446 4.1.3, RFC 5246 7.4.1.3),
    including the early-draft layout (see :func:`is_draft_server_hello_version`), which
    gives an empty ``session_id`` and ``compression_method`` 0.

    ``is_hello_retry_request`` is set when the random is the RFC 8446 4.1.3 magic value;
    ``selected_version`` comes from supported_versions when present; ``alpn`` is the one
    protocol the server selected. Raises :class:`HandshakeError` on malformed input.
    """
    r = _Reader(body, "ServerHello")
    legacy_version = r.uint(2, "legacy_version")
    random = r.raw(32, "random")
    if is_draft_server_hello_version(legacy_version):
        # Early TLS 1.3 drafts: no legacy_session_id, no compression method.
        session_id, cipher_suite, compression = b"", r.uint(2, "cipher_suite"), 0
    else:
        session_id = r.vector(1, "legacy_session_id", maximum=32)
        cipher_suite = r.uint(2, "cipher_suite")
        compression = r.uint(1, "legacy_compression_method")
    extensions = _extensions(r)
    selected = legacy_version
    versions = _first(extensions, EXT_SUPPORTED_VERSIONS)
    if versions is not None:
        if len(versions) != 2:
            raise HandshakeError(
                f"ServerHello: supported_versions is {len(versions)} bytes, expected 2"
            )
        selected = int.from_bytes(versions, "big")
    alpn: bytes | None = None
    alpn_ext = _first(extensions, EXT_ALPN)
    if alpn_ext is not None:
        names = _alpn_list(alpn_ext, "ServerHello ALPN")
        if len(names) != 1:  # RFC 7301 3.1: exactly one protocol name
            raise HandshakeError(f"ServerHello: ALPN carries {len(names)} names, expected 1")
        alpn = names[0]
    return ServerHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suite=cipher_suite,
        compression_method=compression,
        extensions=extensions,
        selected_version=selected,
        alpn=alpn,
        is_hello_retry_request=random == HELLO_RETRY_REQUEST_RANDOM,
    )


def _checked_certificate(body: bytes, *, tls13: bool) -> CertificateMessage:
    """Parse a Certificate body: RFC 5246 7.4.2 or, with ``tls13``, RFC 8446 4.4.2
    (request context, then entries each with their own extensions, which are skipped).

    Returns the certificates as DER bytes, leaf first, undecoded (X.509 parsing belongs
    to the certificate module). Raises :class:`HandshakeError` on malformed input.
    """
    r = _Reader(body, "Certificate")
    if tls13:
        r.vector(1, "certificate_request_context", maximum=255)
    certs = r.sub(3, "certificate_list")
    r.done("certificate_list")
    out: list[bytes] = []
    while certs.remaining():
        out.append(certs.vector(3, "cert_data", minimum=1, maximum=2**24 - 1))
        if tls13:
            certs.vector(2, "CertificateEntry extensions")
    return CertificateMessage(tuple(out))


#: ServerKeyExchange records by named group: frozen values, shared instead of built per
#: connection. Bounded (a server may name any 16-bit group); a full table is emptied.
NAMED_GROUP_EXCHANGES = 256
_named_group_exchanges: dict[int, ServerKeyExchange] = {}


def _named_group_exchange(named_group: int) -> ServerKeyExchange:
    exchange = _named_group_exchanges.get(named_group)
    if exchange is None:
        if len(_named_group_exchanges) >= NAMED_GROUP_EXCHANGES:
            _named_group_exchanges.clear()
        exchange = _named_group_exchanges[named_group] = ServerKeyExchange(
            named_group=named_group
        )
    return exchange


def parse_server_key_exchange(body: bytes, *, key_exchange: str) -> ServerKeyExchange:
    """Read the ephemeral key parameters of a ServerKeyExchange body.

    ``key_exchange`` is the negotiated suite's ``kx`` from :mod:`sensor.tls.registry`:
    ``DHE``/``DHE_PSK`` give ``dh_prime_bits`` (RFC 5246 7.4.3 ServerDHParams; RFC 4279 2
    puts a psk_identity_hint first), ``ECDHE``/``ECDHE_PSK`` give ``named_group`` (RFC 8422
    5.4; explicit curves give 0xff01/0xff02, RFC 5489 2 for the hint). Any other exchange
    returns an empty record. The signature that follows is not read, since its presence
    and form depend on the version and the suite. Raises :class:`HandshakeError` when the
    parameters do not fit in the body.
    """
    if key_exchange == "ECDHE" and len(body) >= 4 and body[0] == _CURVE_NAMED:
        # The common case read in place: curve_type, named_curve, a 1..255-byte point
        # that fits (what the checked reading requires of it).
        point = body[3]
        if point and 4 + point <= len(body):
            return _named_group_exchange((body[1] << 8) | body[2])
    return _checked_server_key_exchange(body, key_exchange)


def _checked_server_key_exchange(body: bytes, key_exchange: str) -> ServerKeyExchange:
    """:func:`parse_server_key_exchange` field by field, naming the field that does not
    fit."""
    r = _Reader(body, f"ServerKeyExchange ({key_exchange})")
    if key_exchange in ("DHE_PSK", "ECDHE_PSK"):
        r.vector(2, "psk_identity_hint")
    if key_exchange in ("DHE", "DHE_PSK"):
        p = r.vector(2, "dh_p", minimum=1, maximum=0xFFFF)
        r.vector(2, "dh_g", minimum=1, maximum=0xFFFF)
        r.vector(2, "dh_Ys", minimum=1, maximum=0xFFFF)
        return ServerKeyExchange(dh_prime_bits=int.from_bytes(p, "big").bit_length())
    if key_exchange in ("ECDHE", "ECDHE_PSK"):
        curve_type = r.uint(1, "curve_type")
        if curve_type == _CURVE_NAMED:
            named_group = r.uint(2, "named_curve")
            r.vector(1, "public ECPoint", minimum=1, maximum=255)
            return _named_group_exchange(named_group)
        if curve_type == _CURVE_EXPLICIT_PRIME:
            return ServerKeyExchange(named_group=_GROUP_EXPLICIT_PRIME)
        if curve_type == _CURVE_EXPLICIT_CHAR2:
            return ServerKeyExchange(named_group=_GROUP_EXPLICIT_CHAR2)
        raise HandshakeError(f"ServerKeyExchange: unknown ECCurveType {curve_type}")
    return ServerKeyExchange()


# --------------------------------------------------------------------------------------
# SSLv2-format hellos (RFC 6101 appendix E, and the SSL 2.0 draft it refers to). The
# bodies below start after the one-byte message type.


def parse_sslv2_client_hello(body: bytes) -> ClientHello:
    """Parse an SSLv2 CLIENT-HELLO body (after msg_type 1): version, cipher_specs_length,
    session_id_length, challenge_length, then the three vectors.

    Cipher specs are kept as 24-bit ints (``0x00XXYY`` is TLS suite ``0xXXYY``, RFC 5246
    E.2); ``random`` is the challenge as sent (16..32 bytes); there is no compression and
    no extension. Raises :class:`HandshakeError` on malformed input.
    """
    r = _Reader(body, "SSLv2 ClientHello")
    version = r.uint(2, "version")
    specs_len = r.uint(2, "cipher_specs_length")
    session_len = r.uint(2, "session_id_length")
    challenge_len = r.uint(2, "challenge_length")
    if specs_len == 0 or specs_len % 3:
        raise HandshakeError(f"SSLv2 ClientHello: cipher_specs_length {specs_len} not 3*n > 0")
    if session_len not in (0, 16) or not 16 <= challenge_len <= 32:
        raise HandshakeError(
            f"SSLv2 ClientHello: session_id_length {session_len} / challenge_length "
            f"{challenge_len} out of range (0 or 16 / 16..32)"
        )
    specs = r.raw(specs_len, "cipher_specs")
    session_id = r.raw(session_len, "session_id")
    challenge = r.raw(challenge_len, "challenge")
    r.done("challenge")
    return ClientHello(
        legacy_version=version,
        random=challenge,
        session_id=session_id,
        cipher_suites=tuple(
            int.from_bytes(specs[i : i + 3], "big") for i in range(0, specs_len, 3)
        ),
        compression_methods=(),
        extensions=(),
        sslv2_format=True,
    )


def parse_sslv2_server_hello(body: bytes) -> tuple[ServerHello, CertificateMessage]:
    """Parse an SSLv2 SERVER-HELLO body (after msg_type 4): session_id_hit,
    certificate_type, version, certificate_length, cipher_specs_length,
    connection_id_length, then certificate, cipher specs, connection id.

    SSLv2 has the client choose the cipher later (CLIENT-MASTER-KEY, not parsed), so
    ``cipher_suite`` is the first spec the server lists, as a 24-bit int. ``random`` is
    the connection id. The certificate (type 1, X.509) is returned as a one-element chain,
    or an empty one on a session-id hit. Raises :class:`HandshakeError` on malformed input.
    """
    r = _Reader(body, "SSLv2 ServerHello")
    r.uint(1, "session_id_hit")
    cert_type = r.uint(1, "certificate_type")
    version = r.uint(2, "version")
    cert_len = r.uint(2, "certificate_length")
    specs_len = r.uint(2, "cipher_specs_length")
    conn_len = r.uint(2, "connection_id_length")
    if specs_len % 3:
        raise HandshakeError(f"SSLv2 ServerHello: cipher_specs_length {specs_len} not 3*n")
    cert = r.raw(cert_len, "certificate")
    specs = r.raw(specs_len, "cipher_specs")
    connection_id = r.raw(conn_len, "connection_id")
    r.done("connection_id")
    hello = ServerHello(
        legacy_version=version,
        random=connection_id,
        session_id=b"",
        cipher_suite=int.from_bytes(specs[:3], "big"),
        compression_method=0,
        extensions=(),
        selected_version=version,
        sslv2_format=True,
    )
    certs = (cert,) if cert and cert_type == 1 else ()
    return hello, CertificateMessage(certs)


# --------------------------------------------------------------------------------------
# Fast paths. A hello is parsed once per connection, on the sensor's busiest path after
# the per-packet one; reading it through ``_Reader`` costs a method call per field. The
# functions below read the same grammar with plain index arithmetic and return ``None``
# at the first thing that does not fit; the public parsers then run the checked parsers
# above on the same bytes, which raise the error naming the field. So a well-formed
# message takes the fast path and a malformed one gives exactly the error it always did.

#: Interning (memory, not speed): a sensor holds the hellos of every handshake in flight
#: (100,000 at once on a busy tap), and the same client software sends the same lists and
#: most of the same extensions every time. Equal values are shared through these bounded
#: tables (emptied when full: they only save memory, so forgetting never changes a result).
#: Extensions whose body is unique per connection are not interned.
INTERN_ENTRIES = 4096
_tuples: dict[tuple[int, ...], tuple[int, ...]] = {}
_extensions_seen: dict[tuple[int, bytes], Extension] = {}
_UNIQUE_EXTENSIONS = frozenset({0x0015, 0x0023, 0x0029, 0x0033})  # padding, ticket, PSK, key


def _shared(values: tuple[int, ...]) -> tuple[int, ...]:
    """``values``, or the equal tuple interned earlier."""
    if len(_tuples) >= INTERN_ENTRIES:
        _tuples.clear()
    return _tuples.setdefault(values, values)


def _extension(ext_type: int, data: bytes) -> Extension:
    if ext_type in _UNIQUE_EXTENSIONS:
        return Extension(ext_type, data)
    key = (ext_type, data)
    ext = _extensions_seen.get(key)
    if ext is None:
        if len(_extensions_seen) >= INTERN_ENTRIES:
            _extensions_seen.clear()
        ext = _extensions_seen[key] = Extension(ext_type, data)
    return ext


def _fast_u16s(data: bytes, start: int, end: int) -> tuple[int, ...] | None:
    """The big-endian 16-bit values in ``data[start:end]``, or None for an odd length."""
    if (end - start) & 1:
        return None
    return _shared(struct.unpack_from(f">{(end - start) >> 1}H", data, start))


def _fast_u16_vector(data: bytes, len_size: int) -> tuple[int, ...] | None:
    """``_u16_vector`` without the errors: a length-prefixed list filling ``data``."""
    if len(data) < len_size:
        return None
    n = data[0] if len_size == 1 else (data[0] << 8) | data[1]
    if len_size + n != len(data):
        return None
    return _fast_u16s(data, len_size, len(data))


def _fast_extensions(body: bytes, pos: int) -> tuple[Extension, ...] | None:
    """The extensions block from ``pos`` to the end of ``body`` (absent when ``pos`` is the
    end), or None if it does not fill the body exactly."""
    end = len(body)
    if pos == end:
        return ()
    if pos + 2 > end or pos + 2 + ((body[pos] << 8) | body[pos + 1]) != end:
        return None
    pos += 2
    out: list[Extension] = []
    while pos < end:
        if pos + 4 > end:
            return None
        stop = pos + 4 + ((body[pos + 2] << 8) | body[pos + 3])
        if stop > end:
            return None
        out.append(_extension((body[pos] << 8) | body[pos + 1], body[pos + 4 : stop]))
        pos = stop
    return tuple(out)


def _fast_server_name(data: bytes) -> str | bool | None:
    """``_server_name`` without the errors: False when the list does not parse."""
    if not data:
        return None
    end = len(data)
    if end < 2 or 2 + ((data[0] << 8) | data[1]) != end:
        return False
    pos = 2
    host: str | None = None
    while pos < end:
        if pos + 3 > end:
            return False
        n = (data[pos + 1] << 8) | data[pos + 2]
        stop = pos + 3 + n
        if n == 0 or stop > end:
            return False
        if data[pos] == 0 and host is None:
            host = data[pos + 3 : stop].decode("ascii", errors="backslashreplace")
        pos = stop
    return host


def _fast_alpn(data: bytes) -> tuple[bytes, ...] | None:
    """``_alpn_list`` without the errors."""
    end = len(data)
    if end < 2 or 2 + ((data[0] << 8) | data[1]) != end:
        return None
    pos = 2
    out: list[bytes] = []
    while pos < end:
        n = data[pos]
        stop = pos + 1 + n
        if n == 0 or stop > end:
            return None
        out.append(data[pos + 1 : stop])
        pos = stop
    return tuple(out)


#: Server names and ALPN lists of ClientHellos, by value: clients ask the same few servers
#: for the same protocols, and a hello is held until its handshake ends (100,000 of them at
#: once on a busy tap: ~200 bytes each for its own copies). A parsed hello tail holds the
#: shared ones, so the session (``sensor.session``) finds nothing to replace in the hellos
#: made from it. Bounded; a full table is emptied.
SHARED_HELLO_FIELDS = 4096
_shared_names: dict[str, str] = {}
_shared_alpn: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}


_Hashed = TypeVar("_Hashed", bound=Hashable)


def _share(table: dict[_Hashed, _Hashed], value: _Hashed) -> _Hashed:
    """``value``, or the equal one ``table`` shared earlier (a full table is emptied)."""
    shared = table.get(value)
    if shared is None:
        if len(table) >= SHARED_HELLO_FIELDS:
            table.clear()
        shared = table[value] = value
    return shared


def share_server_name(name: str) -> str:
    """``name``, or the equal server name shared earlier."""
    return _share(_shared_names, name)


def share_alpn(alpn: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """``alpn``, or the equal ALPN list shared earlier."""
    return _share(_shared_alpn, alpn)


#: Parsed ClientHello tails (everything after the session id: suites, compression and
#: extensions, with the decoded lists), keyed by the tail's bytes. A client program sends
#: the same tail on every connection unless an extension carries per-connection data (a
#: key share, a PSK, a session ticket: RFC 8446 4.2.8, 4.2.11, RFC 5077 3.2), so for those
#: hellos the parse is one lookup. Tails with such data are not kept (they would not be met
#: again). Bounded in entries and in the size of a tail; a full table is emptied.
HELLO_TAIL_ENTRIES = 1024
HELLO_TAIL_BYTES = 2048
_HelloTail = tuple[
    tuple[int, ...], tuple[int, ...], tuple[Extension, ...], str | None,
    tuple[bytes, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
_hello_tails: dict[bytes, _HelloTail] = {}
_PER_CONNECTION = frozenset({0x0029, 0x0033})  # pre_shared_key, key_share
EXT_SESSION_TICKET = 0x0023


def _fast_client_hello(body: bytes) -> ClientHello | None:
    """A well-formed, regular ClientHello (no ``irregularities``), or None."""
    end = len(body)
    if end < 38:
        return None
    sid_len = body[34]
    pos = 35 + sid_len
    if sid_len > 32 or pos + 2 > end:
        return None
    # Everything from ``pos`` on is a function of those bytes alone (RFC 8446 4.1.2: the
    # random and the session id come before).
    tail_key = body[pos:]
    tail = _hello_tails.get(tail_key)
    if tail is None:
        masked = None
        block = pos + 2 + ((body[pos] << 8) | body[pos + 1])  # after the cipher suites
        if block < end:
            masked = _masked_tail_key(body, pos, block + 1 + body[block])  # and compression
        if masked is not None:
            tail = _masked_tails.get(masked[0])
            if tail is not None:
                extensions = _own_extensions(tail[2], body, masked[1])
                tail = (tail[0], tail[1], extensions, *tail[3:])
        if tail is None:
            tail = _fast_hello_tail(body, pos)
            if tail is None:
                return None
            if len(tail_key) <= HELLO_TAIL_BYTES:
                if not _per_connection(tail[2]):
                    if len(_hello_tails) >= HELLO_TAIL_ENTRIES:
                        _hello_tails.clear()
                    _hello_tails[tail_key] = tail
                elif masked is not None:
                    if len(_masked_tails) >= HELLO_TAIL_ENTRIES:
                        _masked_tails.clear()
                    _masked_tails[masked[0]] = tail
    suites, compression, extensions, name, alpn, versions, groups, formats, sigalgs = tail
    return ClientHello((body[0] << 8) | body[1], body[2:34], body[35 : 35 + sid_len], suites,
                       compression, extensions, name, alpn, versions, groups, formats, sigalgs)


#: The same for hellos whose tail differs between connections only in the bodies of the
#: extensions that carry per-connection data (a TLS 1.3 client's key share on every
#: connection): keyed by the tail with those bodies left out (their types and lengths
#: stay in), and the hello gets its own extensions back (:func:`_own_extensions`).
#: None of the decoded fields comes from those extensions, so the rest of the parse is a
#: function of the key alone. Bounded like ``_hello_tails``.
_masked_tails: dict[bytes, _HelloTail] = {}
_MASKED_EXTENSIONS = frozenset({0x0023, 0x0029, 0x0033})  # ticket, pre_shared_key, key_share
_OwnExtensions = list[tuple[int, int, int, int]]  # (index, type, start, stop) in the body


def _masked_tail_key(
    body: bytes, key_start: int, block: int
) -> tuple[bytes, _OwnExtensions] | None:
    """The tail from ``key_start`` to the end of ``body``, whose extensions block starts at
    ``block``, without the bodies of its per-connection extensions, and where those are;
    None when it has none or the block's framing does not hold (the full parse decides)."""
    end = len(body)
    if block + 2 > end or block + 2 + ((body[block] << 8) | body[block + 1]) != end:
        return None
    start = block + 2
    own: _OwnExtensions = []
    parts: list[bytes] = []
    index = 0
    while start < end:
        if start + 4 > end:
            return None
        ext_type = (body[start] << 8) | body[start + 1]
        stop = start + 4 + ((body[start + 2] << 8) | body[start + 3])
        if stop > end:
            return None
        if ext_type in _MASKED_EXTENSIONS:
            own.append((index, ext_type, start + 4, stop))
            parts.append(body[key_start : start + 4])
            key_start = stop
        start = stop
        index += 1
    if not own:
        return None
    parts.append(body[key_start:])
    return b"".join(parts), own


def _own_extensions(
    extensions: tuple[Extension, ...], body: bytes, own: _OwnExtensions
) -> tuple[Extension, ...]:
    """``extensions`` (of a hello with the same masked key) with this hello's own
    per-connection extensions in place of the first hello's."""
    mine = list(extensions)
    for index, ext_type, start, stop in own:
        mine[index] = Extension(ext_type, body[start:stop])
    return tuple(mine)


def _per_connection(extensions: tuple[Extension, ...]) -> bool:
    """Whether a ClientHello's extensions carry data made for this connection only."""
    for ext in extensions:
        if ext.type in _PER_CONNECTION or (ext.type == EXT_SESSION_TICKET and ext.data):
            return True
    return False


def _fast_hello_tail(body: bytes, pos: int) -> _HelloTail | None:
    """The fields of a ClientHello from its cipher suites (at ``pos``) to its end, or None
    when they are not well-formed and regular (the checked parser then says why)."""
    end = len(body)
    cs_len = (body[pos] << 8) | body[pos + 1]
    pos += 2
    if cs_len < 2 or pos + cs_len + 1 > end:
        return None
    suites = _fast_u16s(body, pos, pos + cs_len)
    pos += cs_len
    comp_len = body[pos]
    pos += 1
    if comp_len == 0 or pos + comp_len > end:
        return None  # an empty list is an irregularity: the checked parser names it
    compression = _shared(tuple(body[pos : pos + comp_len]))
    pos += comp_len
    if suites is None or end - pos == 1:
        return None
    extensions = _fast_extensions(body, pos)
    if extensions is None:
        return None
    sni = alpn = versions = groups = formats = sigalgs = None
    for ext in extensions:
        t = ext.type
        # First occurrence wins, as in ``_first``.
        if t == EXT_SERVER_NAME:
            if sni is None:
                sni = ext.data
        elif t == EXT_SUPPORTED_GROUPS:
            if groups is None:
                groups = ext.data
        elif t == EXT_EC_POINT_FORMATS:
            if formats is None:
                formats = ext.data
        elif t == EXT_SIGNATURE_ALGORITHMS:
            if sigalgs is None:
                sigalgs = ext.data
        elif t == EXT_ALPN:
            if alpn is None:
                alpn = ext.data
        elif t == EXT_SUPPORTED_VERSIONS and versions is None:
            versions = ext.data
    name = _fast_server_name(sni) if sni is not None else None
    alpn_names = _fast_alpn(alpn) if alpn is not None else ()
    version_list = _fast_u16_vector(versions, 1) if versions is not None else ()
    group_list = _fast_u16_vector(groups, 2) if groups is not None else ()
    sigalg_list = _fast_u16_vector(sigalgs, 2) if sigalgs is not None else ()
    if formats is None:
        format_list: tuple[int, ...] | None = ()
    elif formats and formats[0] + 1 == len(formats):
        format_list = _shared(tuple(formats[1:]))
    else:
        format_list = None
    if (
        name is False
        or alpn_names is None
        or version_list is None
        or group_list is None
        or sigalg_list is None
        or format_list is None
    ):
        return None
    return (suites, compression, extensions,
            share_server_name(name) if isinstance(name, str) else None,
            share_alpn(alpn_names) if alpn_names else alpn_names,
            version_list, group_list, format_list, sigalg_list)


#: Parsed ServerHello tails (cipher suite, compression method, extensions, the version
#: supported_versions selects, the ALPN protocol), keyed by the bytes after the session id:
#: a server answers every client of one program with the same tail unless an extension
#: carries per-connection data (a TLS 1.3 key share, RFC 8446 4.2.8), and such tails are
#: not kept. Bounded like ``_hello_tails``.
_ServerTail = tuple[int, int, tuple[Extension, ...], int | None, bytes | None]
_server_tails: dict[bytes, _ServerTail] = {}


def _fast_server_hello(body: bytes) -> ServerHello | None:
    """A well-formed ServerHello in the TLS 1.2 / RFC 8446 layout, or None (which includes
    the early-draft layout, left to the checked parser)."""
    end = len(body)
    if end < 38:
        return None
    legacy_version = (body[0] << 8) | body[1]
    if is_draft_server_hello_version(legacy_version):
        return None
    sid_len = body[34]
    pos = 35 + sid_len
    if sid_len > 32 or pos + 3 > end:
        return None
    # Everything from ``pos`` on is a function of those bytes alone (RFC 8446 4.1.3).
    tail_key = body[pos:]
    tail = _server_tails.get(tail_key)
    if tail is None:
        tail = _fast_server_tail(body, pos)
        if tail is None:
            return None
        if len(tail_key) <= HELLO_TAIL_BYTES and not _per_connection(tail[2]):
            if len(_server_tails) >= HELLO_TAIL_ENTRIES:
                _server_tails.clear()
            _server_tails[tail_key] = tail
    cipher_suite, compression, extensions, selected, alpn = tail
    random = body[2:34]
    return ServerHello(
        legacy_version,
        random,
        body[35 : 35 + sid_len],
        cipher_suite,
        compression,
        extensions,
        legacy_version if selected is None else selected,
        alpn,
        random == HELLO_RETRY_REQUEST_RANDOM,
    )


def _fast_server_tail(body: bytes, pos: int) -> _ServerTail | None:
    """The fields of a ServerHello from its cipher suite (at ``pos``) to its end, or None
    when they are not well-formed (the checked parser then says why)."""
    cipher_suite = (body[pos] << 8) | body[pos + 1]
    compression = body[pos + 2]
    extensions = _fast_extensions(body, pos + 3)
    if extensions is None:
        return None
    selected: int | None = None
    alpn: bytes | None = None
    seen_versions = seen_alpn = False
    for ext in extensions:
        if ext.type == EXT_SUPPORTED_VERSIONS and not seen_versions:
            seen_versions = True
            if len(ext.data) != 2:
                return None
            selected = (ext.data[0] << 8) | ext.data[1]
        elif ext.type == EXT_ALPN and not seen_alpn:
            seen_alpn = True
            names = _fast_alpn(ext.data)
            if names is None or len(names) != 1:
                return None
            alpn = names[0]
    return cipher_suite, compression, extensions, selected, alpn


def _fast_certificate(body: bytes, tls13: bool) -> CertificateMessage | None:
    """A well-formed Certificate body, or None."""
    end = len(body)
    pos = 0
    if tls13:
        if end < 1:
            return None
        pos = 1 + body[0]
    if pos + 3 > end or pos + 3 + int.from_bytes(body[pos : pos + 3], "big") != end:
        return None
    pos += 3
    out: list[bytes] = []
    while pos < end:
        if pos + 3 > end:
            return None
        n = (body[pos] << 16) | (body[pos + 1] << 8) | body[pos + 2]
        stop = pos + 3 + n
        if n == 0 or stop > end:
            return None
        out.append(body[pos + 3 : stop])
        pos = stop
        if tls13:
            if pos + 2 > end:
                return None
            pos += 2 + ((body[pos] << 8) | body[pos + 1])
            if pos > end:
                return None
    return CertificateMessage(tuple(out))


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello body (RFC 8446 4.1.2, RFC 5246 7.4.1.2).

    Returns a :class:`ClientHello` with the raw fields and the decoded server_name,
    ALPN, supported_versions, supported_groups, ec_point_formats and signature_algorithms
    extensions. Raises :class:`HandshakeError` naming the field that does not fit.
    Tolerated departures from the grammar are described at :func:`_checked_client_hello`
    and named in ``irregularities``.
    """
    hello = _fast_client_hello(body)
    return hello if hello is not None else _checked_client_hello(body)


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello or HelloRetryRequest body (RFC 8446 4.1.3, RFC 5246 7.4.1.3),
    including the early-draft layout (see :func:`is_draft_server_hello_version`); see
    :func:`_checked_server_hello` for the fields. Raises :class:`HandshakeError` on
    malformed input.
    """
    hello = _fast_server_hello(body)
    return hello if hello is not None else _checked_server_hello(body)


def parse_certificate(body: bytes, *, tls13: bool) -> CertificateMessage:
    """Parse a Certificate body: RFC 5246 7.4.2 or, with ``tls13``, RFC 8446 4.4.2
    (request context, then entries each with their own extensions, which are skipped).

    Returns the certificates as DER bytes, leaf first, undecoded. Raises
    :class:`HandshakeError` on malformed input.
    """
    message = _fast_certificate(body, tls13)
    return message if message is not None else _checked_certificate(body, tls13=tls13)

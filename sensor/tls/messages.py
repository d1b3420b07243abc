"""Typed records of what the TLS parsers saw on the wire.

These are the contract between the sans-IO parsers (``records``, ``handshake``), the
fingerprint functions and the session tracker. They hold numbers and bytes exactly as sent
(GREASE values included, extensions in wire order); naming and filtering happen later.
"""

from __future__ import annotations

from dataclasses import dataclass

# Handshake message types (RFC 8446 section 4, RFC 5246 section 7.4).
HELLO_REQUEST = 0
CLIENT_HELLO = 1
SERVER_HELLO = 2
NEW_SESSION_TICKET = 4
ENCRYPTED_EXTENSIONS = 8
CERTIFICATE = 11
SERVER_KEY_EXCHANGE = 12
CERTIFICATE_REQUEST = 13
SERVER_HELLO_DONE = 14
CERTIFICATE_VERIFY = 15
CLIENT_KEY_EXCHANGE = 16
FINISHED = 20
CERTIFICATE_STATUS = 22

# Record content types (RFC 8446 section 5.1).
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
HEARTBEAT = 24


@dataclass(frozen=True, slots=True)
class Extension:
    """One hello extension as sent: its code point and its raw body."""

    type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A ClientHello (RFC 8446 4.1.2), or an SSLv2-format one (RFC 6101 appendix E.1).

    The decoded fields are taken from ``extensions``; an absent extension gives an empty
    tuple or ``None``. ``alpn`` keeps the protocol names as bytes because they need not be
    ASCII (JA4 hashes them as sent). ``irregularities`` names what the parser tolerated
    because the meaning of the bytes stayed unambiguous (an empty compression list, a
    stray byte where no extensions block fits); empty for a well-formed hello.
    """

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: tuple[int, ...]
    extensions: tuple[Extension, ...]
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    supported_versions: tuple[int, ...] = ()
    supported_groups: tuple[int, ...] = ()
    ec_point_formats: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    sslv2_format: bool = False
    irregularities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A ServerHello or HelloRetryRequest (RFC 8446 4.1.3, 4.1.4).

    ``selected_version`` is the supported_versions extension's value when present (TLS 1.3),
    else ``legacy_version``. ``alpn`` is the one protocol the server chose, if any.
    """

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: tuple[Extension, ...]
    selected_version: int
    alpn: bytes | None = None
    is_hello_retry_request: bool = False
    sslv2_format: bool = False


@dataclass(frozen=True, slots=True)
class CertificateMessage:
    """A Certificate handshake message: the DER certificates in the order sent, leaf first."""

    certificates: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ServerKeyExchange:
    """What a ServerKeyExchange says about the ephemeral key: a DHE prime size in bits or an
    ECDHE named group (RFC 8422 5.4). Both ``None`` when the suite's exchange is neither."""

    dh_prime_bits: int | None = None
    named_group: int | None = None


@dataclass(frozen=True, slots=True)
class HandshakeMessage:
    """One complete handshake message, reassembled across records: type and body."""

    msg_type: int
    body: bytes


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """A TLS alert (RFC 8446 6). ``encrypted`` alerts carry no readable level/description."""

    level: int | None
    description: int | None
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class ChangeCipherSpecMessage:
    """A ChangeCipherSpec record: everything after it in this direction is encrypted (≤1.2)."""


@dataclass(frozen=True, slots=True)
class EncryptedRecord:
    """A record whose content cannot be read: application data, or a handshake record after
    ChangeCipherSpec (the Finished message). ``content_type`` is the record's outer type."""

    content_type: int
    length: int


@dataclass(frozen=True, slots=True)
class SSLv2ClientHello:
    """Wrapper the record layer yields for an SSLv2-format ClientHello record."""

    client_hello: ClientHello


TlsItem = (
    HandshakeMessage | AlertMessage | ChangeCipherSpecMessage | EncryptedRecord | SSLv2ClientHello
)
"""What the record-layer parser yields, in stream order."""

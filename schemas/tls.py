"""ECS ``tls.*`` and the certwatch extension describing one TLS handshake.

ECS fields carry what a SIEM rule keys on (version, cipher, SNI, JA3, leaf hash and x509);
``certwatch.tls`` carries the rest of what the sensor saw, so a detector never needs a join
across partitions: the whole chain, the hellos' lists, alerts, key exchange and timing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Model
from schemas.x509 import X509, ChainCertificate, Hashes


class TlsClient(Model):
    """ECS ``tls.client.*``."""

    server_name: str | None = None
    ja3: str | None = None
    supported_ciphers: list[str] = Field(default_factory=list)
    hash: Hashes | None = None
    x509: X509 | None = None
    certificate_chain: list[str] = Field(
        default_factory=list, description="base64 DER of each client certificate, leaf first"
    )


class TlsServer(Model):
    """ECS ``tls.server.*``: the leaf certificate the server presented."""

    ja3s: str | None = None
    hash: Hashes | None = None
    x509: X509 | None = None
    subject: str | None = None
    issuer: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    certificate_chain: list[str] = Field(
        default_factory=list, description="base64 DER of each server certificate, leaf first"
    )


class Tls(Model):
    """ECS ``tls.*``. ``version`` is None when no ServerHello was seen."""

    version: str | None = None
    version_protocol: Literal["tls", "ssl", "dtls"] | None = None
    cipher: str | None = None
    curve: str | None = None
    established: bool = False
    resumed: bool = False
    next_protocol: str | None = None
    client: TlsClient = Field(default_factory=TlsClient)
    server: TlsServer = Field(default_factory=TlsServer)


class ClientHelloSummary(Model):
    """The ClientHello as offered: every list in wire order, GREASE values named as such."""

    legacy_version: str
    supported_versions: list[str] = Field(default_factory=list)
    cipher_suites: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=list)
    supported_groups: list[str] = Field(default_factory=list)
    ec_point_formats: list[str] = Field(default_factory=list)
    signature_algorithms: list[str] = Field(default_factory=list)
    alpn: list[str] = Field(default_factory=list)
    session_id_length: int = 0
    sslv2_format: bool = False
    ja3_string: str | None = None
    ja4: str | None = None
    ja4_r: str | None = None
    ja4_o: str | None = None
    ja4_ro: str | None = None


class ServerHelloSummary(Model):
    """The ServerHello: what the server selected."""

    legacy_version: str
    selected_version: str
    cipher_suite: str
    cipher_suite_code: str = Field(description="4 hex digits, e.g. c02f")
    extensions: list[str] = Field(default_factory=list)
    compression_method: int = 0
    hello_retry_request: bool = False
    session_id_echoed: bool = False
    ja3s_string: str | None = None
    ja4s: str | None = Field(default=None, description="FoxIO License 1.1; only when enabled")


class KeyExchange(Model):
    """From the ServerKeyExchange (TLS <= 1.2) or the key_share group (TLS 1.3)."""

    dh_prime_bits: int | None = None
    named_group: str | None = None


class TlsAlert(Model):
    """A TLS alert seen during the handshake. Encrypted alerts have no readable content."""

    sender: Literal["client", "server"]
    level: str | None = None
    description: str | None = None
    encrypted: bool = False


class HandshakeTiming(Model):
    """Durations in nanoseconds of capture time (ECS ``event.duration`` is their sum)."""

    client_hello_to_server_hello: int | None = None
    server_hello_to_handshake_end: int | None = None


HandshakeEnd = Literal[
    "established", "alert", "fin", "rst", "idle_timeout", "capture_end", "evicted", "parse_error"
]


class TlsDetail(Model):
    """``certwatch.tls``: everything seen beyond ECS."""

    client_hello: ClientHelloSummary | None = None
    server_hello: ServerHelloSummary | None = None
    server_chain: list[ChainCertificate] = Field(default_factory=list)
    client_chain: list[ChainCertificate] = Field(default_factory=list)
    certificate_encrypted: bool = Field(
        default=False, description="TLS 1.3: the certificate is sent encrypted and is not seen"
    )
    key_exchange: KeyExchange | None = None
    alerts: list[TlsAlert] = Field(default_factory=list)
    timing: HandshakeTiming = Field(default_factory=HandshakeTiming)
    record_versions: list[str] = Field(default_factory=list)
    ended_by: HandshakeEnd
    parse_error: str | None = None

"""ECS ``x509.*``: how a certificate is described wherever one appears.

Used for ``tls.server.x509``, ``tls.client.x509``, each entry of the chain and the
standalone certificate event. Fields ECS lacks are in :class:`CertificateExtra`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.base import Model


class DistinguishedName(Model):
    """ECS ``x509.subject.*`` / ``x509.issuer.*``: each attribute is a list, as in ECS."""

    distinguished_name: str | None = None
    common_name: list[str] = Field(default_factory=list)
    organization: list[str] = Field(default_factory=list)
    organizational_unit: list[str] = Field(default_factory=list)
    country: list[str] = Field(default_factory=list)
    state_or_province: list[str] = Field(default_factory=list)
    locality: list[str] = Field(default_factory=list)


class X509(Model):
    """ECS ``x509.*``. Absent when ``cryptography`` could not parse the certificate."""

    serial_number: str | None = None
    subject: DistinguishedName | None = None
    issuer: DistinguishedName | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    public_key_algorithm: str | None = None
    public_key_size: int | None = None
    public_key_curve: str | None = None
    public_key_exponent: int | None = None
    signature_algorithm: str | None = None
    alternative_names: list[str] = Field(default_factory=list)
    version_number: str | None = None


class Hashes(Model):
    """ECS ``hash.*`` of a certificate's DER encoding."""

    sha256: str
    sha1: str | None = None


class CertificateExtra(Model):
    """What certwatch knows of a certificate beyond ECS (``certwatch.*`` placement).

    ``parse_error`` says why the certificate could not be read at all; ``parse_errors``
    names each single field that could not be read while the rest was (``"subject:
    ValueError: ..."``), so an empty ECS field can be told from an absent one. It is left
    out (``None``) when every field was read.
    """

    sha256: str
    spki_sha256: str | None = None
    der_length: int
    is_ca: bool | None = None
    self_signed: bool = False
    signature_algorithm_oid: str | None = None
    san_dns: list[str] = Field(default_factory=list)
    san_ip: list[str] = Field(default_factory=list)
    san_email: list[str] = Field(default_factory=list)
    san_uri: list[str] = Field(default_factory=list)
    parse_error: str | None = None
    parse_errors: list[str] | None = None
    ja4x: str | None = None


class ChainCertificate(Model):
    """One certificate of a chain as carried inside a handshake event, leaf first."""

    hash: Hashes
    x509: X509 | None = None
    certwatch: CertificateExtra

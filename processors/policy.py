"""The policy: one YAML file an operator writes by hand, validated field by field.

What is authorised (trust store, pins, allowlist, expected client networks), which rules run,
their thresholds, and how long a finding is suppressed once reported. Every field has a
default, so an empty file (or none at all) is a sensible policy: system trust store, every
rule on, thresholds from the built-in defaults or the chosen compliance profile.

Thresholds that a compliance profile sets are ``None`` by default here: ``None`` means "the
profile's value, else the built-in default" (``processors.profiles`` resolves them), and a
value written in the file always wins over the profile.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from processors.catalog import RULES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """``90``/``"90s"``, ``"15m"``, ``"1h"``, ``"14d"``, ``"2w"`` → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration, like 90s, 15m, 1h or 14d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a duration, like 90s, 15m, 1h or 14d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$"),
                      BeforeValidator(lambda v: str(v).replace(":", "").lower())]
TlsVersion = Literal["1.0", "1.1", "1.2", "1.3"]
Profile = Literal["pci-dss-4", "nist-800-52r2", "mozilla-intermediate", "mozilla-modern"]
WeakCipherClass = Literal["null", "export", "anon", "rc4", "des", "3des", "md5", "cbc", "sha1",
                          "no_forward_secrecy"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trust(Strict):
    system: bool = Field(True, description="trust the OS / certifi root store")
    ca_files: list[Path] = Field(default_factory=list,
                                 description="extra roots (private PKI), PEM, may hold several")


class Pin(Strict):
    """A host that must present a known certificate (HPKP-like, RFC 7469 semantics)."""

    host: str = Field(description="matched against SNI; *.example.com matches one label")
    sha256: list[Sha256Hex] = Field(default_factory=list,
                                    description="the leaf's SHA-256 must be one of these")
    spki_sha256: list[Sha256Hex] = Field(
        default_factory=list, description="some certificate of the chain has one of these SPKIs")
    issuer: str | None = Field(None, description="the leaf's issuer DN (RFC 4514) must be this")

    @model_validator(mode="after")
    def _has_a_pin(self) -> Pin:
        if not (self.sha256 or self.spki_sha256 or self.issuer):
            raise ValueError("a pin needs at least one of sha256, spki_sha256 or issuer")
        return self


class Allowlist(Strict):
    sha256: list[Sha256Hex] = Field(default_factory=list,
                                    description="authorised leaf certificates")


class RuleSettings(Strict):
    enabled: bool = True


class ExpiringSoon(RuleSettings):
    days: int = Field(14, ge=0, description="alert when fewer days than this remain")


class WeakKey(RuleSettings):
    min_rsa_bits: int | None = Field(None, ge=0, description="default 2048")
    min_dsa_bits: int | None = Field(None, ge=0, description="default 2048")
    min_ec_bits: int | None = Field(None, ge=0, description="default 224")


class WeakSignature(RuleSettings):
    forbidden_hashes: list[Literal["md2", "md4", "md5", "sha1", "sha224"]] | None = Field(
        None, description="default [md2, md4, md5, sha1]")


class DeprecatedVersion(RuleSettings):
    min_version: TlsVersion | None = Field(None, description="default 1.2")


class WeakCipher(RuleSettings):
    forbid: list[WeakCipherClass] | None = Field(
        None, description="default [null, export, anon, rc4, des, 3des, md5]")


class WeakDh(RuleSettings):
    min_dh_bits: int | None = Field(None, ge=0, description="default 2048")
    min_ec_bits: int | None = Field(None, ge=0, description="default 224")


class TrafficSpike(RuleSettings):
    """Rate of connections (or failed handshakes) per server key against its baseline."""

    window: Duration = Field(timedelta(minutes=1), description="counting interval")
    warmup_windows: int = Field(10, ge=1, description="windows learnt before alerting")
    min_count: int = Field(20, ge=1, description="a window below this never alerts")
    threshold: float = Field(8.0, gt=0, description="robust deviations above the baseline")
    min_ratio: float = Field(3.0, ge=1, description="and at least this many times the median")
    history: int = Field(60, ge=3, description="windows kept in the baseline")


class ByteRate(Strict):
    """``traffic.spike`` on bytes: payload bytes per server endpoint (ip:port) per window, from
    the sensor's ``certwatch.traffic.stats`` events, against the endpoint's baseline. Uses the
    rule's window, warmup, threshold, ratio and history; off by default."""

    enabled: bool = Field(False, description="learn and judge byte rates too")
    min_bytes: int = Field(10_000_000, ge=1, description="a window below this never alerts")


class TrafficRateSpike(TrafficSpike):
    """``traffic.spike``: the connection rate (handshakes per server key) and, when
    ``bytes.enabled``, the byte rate per server endpoint."""

    bytes: ByteRate = Field(default_factory=ByteRate)


class AllowedSources(Strict):
    host: str = Field(description="server name pattern (SNI) or ip[:port] / [v6]:port")
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(min_length=1)


class UnexpectedSource(RuleSettings):
    servers: list[AllowedSources] = Field(default_factory=list)
    learn: bool = Field(True, description="also learn client networks per server")
    learning_period: Duration = Field(timedelta(hours=1),
                                      description="per server, before new networks alert")
    ipv4_prefix: int = Field(24, ge=8, le=32)
    ipv6_prefix: int = Field(48, ge=16, le=128)
    max_networks_per_server: int = Field(4096, ge=1)


class CertChanged(RuleSettings):
    max_servers: int = Field(100_000, ge=1, description="servers remembered (LRU)")
    max_certificates_per_server: int = Field(16, ge=1)


class Rules(Strict):
    """Per-rule settings, keyed by the rule names of the catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    untrusted_chain: RuleSettings = Field(default_factory=RuleSettings,
                                          alias="cert.untrusted_chain")
    self_signed: RuleSettings = Field(default_factory=RuleSettings, alias="cert.self_signed")
    expired: RuleSettings = Field(default_factory=RuleSettings, alias="cert.expired")
    not_yet_valid: RuleSettings = Field(default_factory=RuleSettings, alias="cert.not_yet_valid")
    expiring_soon: ExpiringSoon = Field(default_factory=ExpiringSoon, alias="cert.expiring_soon")
    hostname_mismatch: RuleSettings = Field(default_factory=RuleSettings,
                                            alias="cert.hostname_mismatch")
    pin_mismatch: RuleSettings = Field(default_factory=RuleSettings, alias="cert.pin_mismatch")
    not_allowlisted: RuleSettings = Field(default_factory=RuleSettings,
                                          alias="cert.not_allowlisted")
    changed: CertChanged = Field(default_factory=CertChanged, alias="cert.changed")
    weak_key: WeakKey = Field(default_factory=WeakKey, alias="cert.weak_key")
    weak_signature: WeakSignature = Field(default_factory=WeakSignature,
                                          alias="cert.weak_signature")
    deprecated_version: DeprecatedVersion = Field(default_factory=DeprecatedVersion,
                                                  alias="tls.deprecated_version")
    weak_cipher: WeakCipher = Field(default_factory=WeakCipher, alias="tls.weak_cipher")
    weak_dh: WeakDh = Field(default_factory=WeakDh, alias="tls.weak_dh")
    traffic_spike: TrafficRateSpike = Field(default_factory=TrafficRateSpike,
                                            alias="traffic.spike")
    handshake_failure_spike: TrafficSpike = Field(default_factory=TrafficSpike,
                                                  alias="tls.handshake_failure_spike")
    unexpected_source: UnexpectedSource = Field(default_factory=UnexpectedSource,
                                                alias="traffic.unexpected_source")

    def settings(self, rule: str) -> RuleSettings:
        """The settings of a rule by its catalogue name."""
        for name, info in type(self).model_fields.items():
            if info.alias == rule:
                value: RuleSettings = getattr(self, name)
                return value
        raise KeyError(rule)

    def enabled(self, rule: str) -> bool:
        return self.settings(rule).enabled


class Policy(Strict):
    """The whole policy file."""

    profile: Profile | None = Field(None, description="compliance profile: sets the version, "
                                    "cipher, key and signature thresholds in one word")
    trust: Trust = Field(default_factory=Trust)
    pins: list[Pin] = Field(default_factory=list)
    allowlist: Allowlist | None = Field(None, description="strict inventory mode when present")
    rules: Rules = Field(default_factory=Rules)
    suppress: dict[str, Duration] = Field(
        default_factory=lambda: {"default": timedelta(hours=1)},
        description="suppression window per rule name, and 'default'")

    @field_validator("suppress")
    @classmethod
    def _known_rules(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        unknown = sorted(set(value) - set(RULES) - {"default"})
        if unknown:
            raise ValueError(f"unknown rule name(s) {', '.join(unknown)}; known: default, "
                             + ", ".join(sorted(RULES)))
        return {"default": timedelta(hours=1), **value}

    def suppression(self, rule: str) -> timedelta:
        """How long a finding of ``rule`` is suppressed after it was reported."""
        return self.suppress.get(rule, self.suppress["default"])

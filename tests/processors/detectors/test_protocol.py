"""tls.deprecated_version, tls.weak_cipher, tls.weak_dh: on real captures and built events."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from processors.base import Finding
from processors.detectors.protocol import (
    DeprecatedVersion,
    WeakCipher,
    WeakDh,
    cipher_classes,
    named_group_bits,
)
from processors.policy import Policy
from schemas.events import HandshakeEvent
from schemas.tls import KeyExchange
from sensor.tls import registry
from tests.processors.events import handshake_event
from tests.support import DATA, handshakes, read_frames, run_sensor

DETECTORS = (DeprecatedVersion, WeakCipher, WeakDh)


@functools.cache
def capture(name: str) -> tuple[HandshakeEvent, ...]:
    return tuple(handshakes(run_sensor(read_frames(DATA / name))))


def inspect(event: HandshakeEvent, policy: Policy | None = None) -> list[Finding]:
    policy = policy or Policy()
    return [f for cls in DETECTORS for f in cls(policy).inspect(event)]


def zeek_ssl_field(name: str, field: str) -> str:
    """One column of the first row of Zeek's ssl.log beside a capture."""
    lines = (DATA / "zeek" / f"{name}.ssl.log").read_text().splitlines()
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    row = next(line for line in lines if not line.startswith("#")).split("\t")
    return row[fields.index(field)]


def policy(data: dict[str, Any]) -> Policy:
    return Policy.model_validate(data)


# -- the cipher-suite classifier against the sensor's registry ----------------------------

# The registry's key exchanges in which no ephemeral share protects past sessions.
STATIC_KX = {"RSA", "DH", "ECDH", "PSK", "RSA_PSK", "KRB5", "FORTEZZA", "NULL"}


def registry_classes(suite: registry.CipherSuite) -> set[str]:
    flags = {"null": suite.null_encryption, "export": suite.export, "anon": suite.anonymous,
             "rc4": suite.rc4, "des": suite.des, "3des": suite.triple_des,
             "md5": suite.md5_mac, "cbc": "CBC" in suite.cipher, "sha1": suite.mac == "SHA",
             "no_forward_secrecy": suite.kx in STATIC_KX}
    return {name for name, on in flags.items() if on}


def test_classifier_agrees_with_the_registry_on_every_suite() -> None:
    mismatches = []
    for suite in registry.CIPHER_SUITES.values():
        got = set(cipher_classes(suite.name))
        if suite.kx == "GOST":  # deliberately unjudged for forward secrecy
            assert "no_forward_secrecy" not in got
        expected = set() if suite.scsv else registry_classes(suite)
        if got != expected:
            mismatches.append((suite.name, sorted(got), sorted(expected)))
    assert mismatches == []
    assert len(registry.CIPHER_SUITES) > 300


@pytest.mark.parametrize(("name", "classes"), [
    ("TLS_RSA_WITH_RC4_128_MD5", {"rc4", "md5", "no_forward_secrecy"}),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", set()),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", {"cbc", "sha1"}),
    ("TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA", {"anon", "export", "des", "cbc", "sha1"}),
    ("TLS_AES_256_GCM_SHA384", set()),
    ("SSL_CK_DES_192_EDE3_CBC_WITH_MD5", {"3des", "cbc", "md5", "no_forward_secrecy"}),
    ("TLS_EMPTY_RENEGOTIATION_INFO_SCSV", set()),
    ("unknown-0x1234", set()),
    (None, set()),
])
def test_classifier_examples(name: str | None, classes: set[str]) -> None:
    assert cipher_classes(name) == classes


# -- real captures ------------------------------------------------------------------------


def test_rc4_md5_capture_is_a_weak_cipher_by_default() -> None:
    (event,) = capture("zeek/tls1.2.pcap")
    assert event.tls.cipher == zeek_ssl_field("tls1.2.pcap", "cipher")
    (finding,) = inspect(event)
    assert finding.rule == "tls.weak_cipher"
    assert finding.details["classes"] == ["md5", "rc4"]  # static RSA is allowed by default
    assert finding.details["cipher"] == "TLS_RSA_WITH_RC4_128_MD5"
    assert finding.requirement is None
    assert finding.identity == ("68.233.76.12:443", "443", "TLS_RSA_WITH_RC4_128_MD5")


@pytest.mark.parametrize("profile", ["nist-800-52r2", "mozilla-intermediate", "mozilla-modern"])
def test_profiles_that_require_forward_secrecy_also_name_it(profile: str) -> None:
    (event,) = capture("zeek/tls1.2.pcap")
    findings = [f for f in inspect(event, policy({"profile": profile}))
                if f.rule == "tls.weak_cipher"]
    assert len(findings) == 1
    assert findings[0].details["classes"] == ["md5", "no_forward_secrecy", "rc4"]
    assert findings[0].requirement is not None


def test_pci_does_not_require_forward_secrecy() -> None:
    (event,) = capture("zeek/tls1.2.pcap")
    (finding,) = inspect(event, policy({"profile": "pci-dss-4"}))
    assert finding.details["classes"] == ["md5", "rc4"]
    assert (finding.requirement or "").startswith("PCI DSS v4.0 req. 4.2.1")


def test_tls_1_1_capture_is_a_deprecated_version() -> None:
    (event,) = capture("zeek/tls1_1.pcap")
    assert zeek_ssl_field("tls1_1.pcap", "version") == "TLSv11"
    (finding,) = inspect(event)
    assert finding.rule == "tls.deprecated_version"
    assert finding.details == {"version": "TLS 1.1", "min_version": "TLS 1.2"}
    assert finding.identity == ("216.58.192.14:443", "443", "TLS 1.1")
    assert finding.requirement is None
    nist = [f for f in inspect(event, policy({"profile": "nist-800-52r2"}))
            if f.rule == "tls.deprecated_version"]
    assert (nist[0].requirement or "").startswith("NIST SP 800-52r2 §3.1")


def test_tls_1_1_capture_passes_when_the_policy_allows_it() -> None:
    (event,) = capture("zeek/tls1_1.pcap")
    relaxed = policy({"rules": {"tls.deprecated_version": {"min_version": "1.1"}}})
    assert inspect(event, relaxed) == []


def test_sslv2_is_below_any_tls_minimum() -> None:
    (event,) = capture("zeek/ssl-v2.pcap")
    lowest = policy({"rules": {"tls.deprecated_version": {"min_version": "1.0"}}})
    versions = [f for f in inspect(event, lowest) if f.rule == "tls.deprecated_version"]
    assert [f.details["version"] for f in versions] == ["SSLv2"]


def test_modern_browsing_capture_is_clean_by_default() -> None:
    events = capture("ja4/latest.pcapng")
    assert {e.tls.version for e in events} == {"1.2", "1.3"}
    assert [f for e in events for f in inspect(e)] == []


def test_mozilla_modern_flags_every_tls_1_2_session_of_that_capture() -> None:
    events = capture("ja4/latest.pcapng")
    findings = [f for e in events for f in inspect(e, policy({"profile": "mozilla-modern"}))]
    assert {f.rule for f in findings} == {"tls.deprecated_version"}
    assert len(findings) == sum(e.tls.version == "1.2" for e in events)
    assert all(f.requirement == "Mozilla Server Side TLS 5.7 modern: TLS 1.3 only"
               for f in findings)


@pytest.mark.parametrize(("name", "bits"), [("zeek/cert-no-cn.pcap", 512),
                                            ("zeek/tls-expired-cert.pcap", 1024)])
def test_small_dhe_primes_in_real_captures(name: str, bits: int) -> None:
    findings = [f for e in capture(name) for f in WeakDh(Policy()).inspect(e)]
    assert [(f.details["bits"], f.details["kind"]) for f in findings] == [(bits, "dh")]
    assert findings[0].identity[-1] == f"DH-{bits}"


def test_dh_minimum_is_tunable() -> None:
    events = capture("zeek/cert-no-cn.pcap") + capture("zeek/tls-expired-cert.pcap")
    tuned = policy({"rules": {"tls.weak_dh": {"min_dh_bits": 1024}}})
    findings = [f for e in events for f in WeakDh(tuned).inspect(e)]
    assert [f.details["bits"] for f in findings] == [512]


# -- built events ---------------------------------------------------------------------------


def with_group(group: str | None, dh_bits: int | None = None, **kw: Any) -> HandshakeEvent:
    return handshake_event(update={"certwatch.tls.key_exchange":
                                   KeyExchange(dh_prime_bits=dh_bits, named_group=group),
                                   "tls.curve": group}, **kw)


@pytest.mark.parametrize(("group", "weak"), [
    ("secp192r1", True), ("sect163k1", True), ("secp160r1", True), ("secp224r1", False),
    ("secp256r1", False), ("x25519", False), ("X25519MLKEM768", False), ("x448", False),
    ("unknown-0x1234", False), ("arbitrary_explicit_prime_curves", False),
])
def test_named_groups_against_the_default_ec_minimum(group: str, weak: bool) -> None:
    findings = WeakDh(Policy()).inspect(with_group(group))
    assert bool(findings) is weak
    if weak:
        assert findings[0].details["kind"] == "ec"
        assert findings[0].identity == ("198.51.100.20:443", "443", group)


def test_mozilla_wants_256_bit_curves_and_says_so() -> None:
    moz = policy({"profile": "mozilla-intermediate"})
    (finding,) = WeakDh(moz).inspect(with_group("secp224r1"))
    assert finding.details == {"group": "secp224r1", "kind": "ec", "bits": 224, "min_bits": 256}
    assert "X25519, prime256v1, secp384r1" in (finding.requirement or "")
    assert WeakDh(moz).inspect(with_group("x25519")) == []


def test_ffdhe_groups_compare_with_the_dh_minimum() -> None:
    event = with_group("ffdhe2048", tls13=True)
    assert WeakDh(Policy()).inspect(event) == []
    strict = policy({"rules": {"tls.weak_dh": {"min_dh_bits": 3072}}})
    (finding,) = WeakDh(strict).inspect(event)
    assert finding.details == {"group": "ffdhe2048", "kind": "dh", "bits": 2048,
                               "min_bits": 3072}
    assert named_group_bits("FFDHE4096") == ("dh", 4096)


def test_what_the_client_merely_offers_is_never_a_finding() -> None:
    offered = ["TLS_RSA_WITH_RC4_128_MD5", "TLS_RSA_EXPORT_WITH_RC4_40_MD5",
               "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA"]
    event = handshake_event(update={"tls.client.supported_ciphers": offered})
    assert inspect(event, policy({"profile": "mozilla-intermediate"})) == []


def test_no_server_hello_means_nothing_to_judge() -> None:
    event = handshake_event(update={"tls.version": None, "tls.cipher": None,
                                    "tls.version_protocol": None})
    assert inspect(event, policy({"profile": "mozilla-modern"})) == []


def test_dtls_1_0_is_below_tls_1_2() -> None:
    event = handshake_event(update={"tls.version": "1.0", "tls.version_protocol": "dtls"})
    (finding,) = DeprecatedVersion(Policy()).inspect(event)
    assert finding.details["version"] == "DTLS 1.0"


def test_identity_ignores_the_client_and_the_time() -> None:
    first = handshake_event(version="1.0", client_port=50000, sni="Old.Example.com")
    again = handshake_event(version="1.0", client_port=61000, client_ip="192.0.2.99",
                            sni="old.example.com")
    (a,), (b,) = (DeprecatedVersion(Policy()).inspect(e) for e in (first, again))
    assert a.identity == b.identity == ("old.example.com", "443", "TLS 1.0")


def test_a_disabled_rule_finds_nothing() -> None:
    (event,) = capture("zeek/tls1.2.pcap")
    off = policy({"rules": {"tls.weak_cipher": {"enabled": False}}})
    assert WeakCipher(off).inspect(event) == []


def test_every_capture_is_judged_without_error() -> None:
    for path in sorted(DATA.glob("*/*")):
        if path.suffix not in (".pcap", ".pcapng") or not path.is_file():
            continue
        for event in capture(str(Path(path).relative_to(DATA))):
            for finding in inspect(event, policy({"profile": "mozilla-modern"})):
                assert finding.identity[0] and finding.message

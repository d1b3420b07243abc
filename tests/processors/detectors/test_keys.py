"""cert.weak_key and cert.weak_signature: on real captures (cross-checked with Zeek's
x509.log) and on certificates made with ``cryptography`` and described by the sensor."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec

from processors.detectors.keys import WeakKey, WeakSignature, signature_hash
from processors.policy import Policy
from schemas.events import HandshakeEvent
from tests.processors.certs import Issued, Pki, issue, name
from tests.processors.events import DEFAULT_TIME, handshake_event
from tests.support import DATA, handshakes, read_frames, run_sensor

NOW = DEFAULT_TIME


@functools.cache
def capture(path: str) -> tuple[HandshakeEvent, ...]:
    return tuple(handshakes(run_sensor(read_frames(DATA / path))))


@functools.cache
def pki() -> Pki:
    return Pki.create(NOW)


def policy(data: dict[str, Any] | None = None) -> Policy:
    return Policy.model_validate(data or {})


def zeek_x509(name_: str) -> list[dict[str, str]]:
    lines = (DATA / "zeek" / f"{name_}.x509.log").read_text().splitlines()
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    return [dict(zip(fields, line.split("\t"), strict=True))
            for line in lines if not line.startswith("#")]


def own_key_cert(key: ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey, cn: str) -> bytes:
    """A certificate for ``key`` issued by the test intermediate (a P-256 CA)."""
    ca = pki().intermediate
    cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


# -- signatures on real captures ------------------------------------------------------------


@pytest.mark.parametrize("capture_name", ["tls1.2.pcap", "tls1_1.pcap", "ecdhe.pcap"])
def test_sha1_signed_certificates_match_zeek_except_self_signed_roots(capture_name: str) -> None:
    (event,) = capture(f"zeek/{capture_name}")
    rows = zeek_x509(capture_name)
    expected = [row["fingerprint"] for row in rows
                if row["certificate.sig_alg"] in ("sha1WithRSAEncryption", "md5WithRSAEncryption")
                and row["certificate.subject"] != row["certificate.issuer"]]
    findings = WeakSignature(Policy()).inspect(event)
    assert [f.identity[-1] for f in findings] == expected
    assert expected  # each capture has at least one
    server = findings[0].identity[0]
    assert all(f.identity[:2] == (server, "443") for f in findings)
    chain = [c.hash.sha256 for c in event.certwatch.tls.server_chain]
    assert [f.certificate_position for f in findings] == [chain.index(s) for s in expected]


def test_self_signed_root_in_the_chain_is_not_reported() -> None:
    (event,) = capture("zeek/tls1.2.pcap")
    root = event.certwatch.tls.server_chain[-1]
    assert root.certwatch.self_signed and root.x509 is not None
    assert root.x509.signature_algorithm == "sha1WithRSAEncryption"
    positions = [f.certificate_position for f in WeakSignature(Policy()).inspect(event)]
    assert positions == [0, 1]


def test_real_captures_have_no_weak_keys() -> None:
    # Zeek agrees: every key in these logs is RSA 2048.
    for capture_name in ("tls1.2.pcap", "tls1_1.pcap", "ecdhe.pcap"):
        assert {row["certificate.key_length"] for row in zeek_x509(capture_name)} == {"2048"}
        (event,) = capture(f"zeek/{capture_name}")
        assert WeakKey(Policy()).inspect(event) == []


def test_modern_capture_is_clean_by_default_and_under_every_profile() -> None:
    for profile in (None, "pci-dss-4", "nist-800-52r2", "mozilla-intermediate"):
        pol = policy({"profile": profile} if profile else None)
        for event in capture("ja4/latest.pcapng"):
            assert WeakKey(pol).inspect(event) == []
            assert WeakSignature(pol).inspect(event) == []


def test_signature_requirement_comes_from_the_profile() -> None:
    (event,) = capture("zeek/tls1.2.pcap")
    findings = WeakSignature(policy({"profile": "nist-800-52r2"})).inspect(event)
    assert {f.requirement for f in findings} == {
        "NIST SP 800-52r2 §3.2.1 with SP 800-131A Rev. 2: certificates signed with SHA-224 "
        "or stronger (no MD5, no SHA-1)"}
    allowed = policy({"profile": "nist-800-52r2",
                      "rules": {"cert.weak_signature": {"forbidden_hashes": ["md5"]}}})
    assert WeakSignature(allowed).inspect(event) == []


# -- keys on generated certificates -----------------------------------------------------------


def event_for(leaf_der: bytes) -> HandshakeEvent:
    return handshake_event([leaf_der, pki().intermediate.der], sni="www.example.com")


def rsa_leaf(bits: int, **kwargs: Any) -> Issued:
    return pki().leaf("www.example.com", rsa_bits=bits, **kwargs)


def test_rsa_1024_leaf_is_a_weak_key() -> None:
    leaf = rsa_leaf(1024)
    (finding,) = WeakKey(Policy()).inspect(event_for(leaf.der))
    assert finding.rule == "cert.weak_key"
    assert finding.certificate_position == 0
    assert finding.identity == ("www.example.com", "443", leaf.sha256)
    assert finding.details["public_key_algorithm"] == "RSA"
    assert finding.details["public_key_size"] == 1024
    assert finding.details["min_bits"] == 2048
    assert finding.requirement is None


def test_weak_key_requirement_and_explicit_minimum() -> None:
    event = event_for(rsa_leaf(1024).der)
    (finding,) = WeakKey(policy({"profile": "pci-dss-4"})).inspect(event)
    assert (finding.requirement or "").startswith("PCI DSS v4.0 req. 4.2.1")
    relaxed = policy({"profile": "pci-dss-4", "rules": {"cert.weak_key": {"min_rsa_bits": 1024}}})
    assert WeakKey(relaxed).inspect(event) == []


@pytest.mark.parametrize(("curve", "bits", "weak_by_default", "weak_for_mozilla"), [
    (ec.SECP192R1(), 192, True, True),
    (ec.SECP224R1(), 224, False, True),
    (ec.SECP256R1(), 256, False, False),
])
def test_ec_key_sizes(curve: ec.EllipticCurve, bits: int, weak_by_default: bool,
                      weak_for_mozilla: bool) -> None:
    event = event_for(own_key_cert(ec.generate_private_key(curve), "www.example.com"))
    default = WeakKey(Policy()).inspect(event)
    mozilla = WeakKey(policy({"profile": "mozilla-intermediate"})).inspect(event)
    assert (bool(default), bool(mozilla)) == (weak_by_default, weak_for_mozilla)
    for finding in default + mozilla:
        assert finding.details["public_key_size"] == bits
        assert finding.details["public_key_curve"] == curve.name


def test_dsa_1024_is_a_weak_key() -> None:
    event = event_for(own_key_cert(dsa.generate_private_key(1024), "www.example.com"))
    (finding,) = WeakKey(Policy()).inspect(event)
    assert (finding.details["public_key_algorithm"], finding.details["min_bits"]) == ("DSA", 2048)


def test_every_certificate_of_the_chain_is_checked_for_its_key() -> None:
    start, end = NOW - timedelta(days=10), NOW + timedelta(days=10)
    weak_ca = issue(name("Weak CA"), issuer=pki().root, not_before=start, not_after=end,
                    ca=True, rsa_bits=1024)
    leaf = issue(name("www.example.com"), issuer=weak_ca, not_before=start, not_after=end,
                 dns=("www.example.com",))
    event = handshake_event([leaf.der, weak_ca.der], sni="www.example.com")
    (finding,) = WeakKey(Policy()).inspect(event)
    assert finding.certificate_position == 1
    assert finding.identity[-1] == weak_ca.sha256


# -- signatures on generated certificates ---------------------------------------------------


def test_sha1_signed_leaf_is_a_weak_signature_and_sha256_is_not() -> None:
    start, end = NOW - timedelta(days=10), NOW + timedelta(days=10)
    rsa_ca = issue(name("RSA CA"), issuer=pki().root, not_before=start, not_after=end, ca=True,
                   rsa_bits=2048)
    sha1_leaf = issue(name("a.example.com"), issuer=rsa_ca, not_before=start, not_after=end,
                      sha1=True)
    sha256_leaf = issue(name("b.example.com"), issuer=rsa_ca, not_before=start, not_after=end)
    detector = WeakSignature(Policy())
    (finding,) = detector.inspect(handshake_event([sha1_leaf.der, rsa_ca.der]))
    assert finding.details["signature_algorithm"] == "sha1WithRSAEncryption"
    assert finding.details["hash"] == "sha1"
    assert finding.identity[-1] == sha1_leaf.sha256
    assert detector.inspect(handshake_event([sha256_leaf.der, rsa_ca.der])) == []


def test_self_signed_sha1_leaf_has_no_weak_signature_but_can_have_a_weak_key() -> None:
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=10)
    key_holder = issue(name("self.example.com"), not_before=start, not_after=end,
                       rsa_bits=1024, sha1=True)
    event = handshake_event([key_holder.der])
    assert event.certwatch.tls.server_chain[0].certwatch.self_signed
    assert WeakSignature(Policy()).inspect(event) == []
    assert [f.rule for f in WeakKey(Policy()).inspect(event)] == ["cert.weak_key"]


@pytest.mark.parametrize(("algorithm", "oid", "digest"), [
    ("md5WithRSAEncryption", None, "md5"),
    ("sha1WithRSAEncryption", None, "sha1"),
    ("ecdsa-with-SHA1", None, "sha1"),
    ("dsaWithSHA1", None, "sha1"),
    ("dsa-with-sha1", None, "sha1"),
    ("dsa_with_SHA224", None, "sha224"),
    ("ecdsa-with-SHA256", None, "sha256"),
    ("sha512WithRSAEncryption", None, "sha512"),
    ("1.3.14.3.2.29", None, "sha1"),  # OIW sha1WithRSASignature, written as its OID
    ("RSASSA-PSS", "1.2.840.113549.1.1.10", None),
    ("ed25519", "1.3.101.112", None),
    ("whatever", "1.2.840.113549.1.1.4", "md5"),
])
def test_signature_hash(algorithm: str, oid: str | None, digest: str | None) -> None:
    assert signature_hash(algorithm, oid) == digest


# -- what is not there is not judged ----------------------------------------------------------


def test_tls13_encrypted_certificate_and_unparsed_certificates_give_nothing() -> None:
    event = handshake_event(tls13=True)
    assert WeakKey(Policy()).inspect(event) == []
    assert WeakSignature(Policy()).inspect(event) == []
    (unparsed,) = capture("zeek/CVE-2015-3194.pcap")
    assert unparsed.certwatch.tls.server_chain[0].x509 is None
    assert WeakKey(Policy()).inspect(unparsed) == []
    assert WeakSignature(Policy()).inspect(unparsed) == []


def test_disabled_rules_find_nothing() -> None:
    (event,) = capture("zeek/tls1.2.pcap")
    off = policy({"rules": {"cert.weak_signature": {"enabled": False},
                            "cert.weak_key": {"enabled": False}}})
    assert WeakSignature(off).inspect(event) == []
    assert WeakKey(off).inspect(event_for(rsa_leaf(1024).der)) == []

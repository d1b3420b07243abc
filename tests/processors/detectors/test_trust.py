"""cert.untrusted_chain: generated PKIs in ``trust.ca_files``, and real captures against the
system bundle judged as of their capture time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509 import ObjectIdentifier
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.catalog import Severity
from processors.detectors.trust import (
    ChainVerifier,
    TrustAnchors,
    TrustStoreError,
    UntrustedChain,
    load_anchors,
    system_bundle,
)
from processors.policy import Policy
from schemas.events import HandshakeEvent
from tests.processors.certs import Pki, issue, name, self_signed, write_pem
from tests.processors.events import handshake_event
from tests.support import DATA, handshakes, read_frames, run_sensor

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
needs_system_bundle = pytest.mark.skipif(system_bundle() is None,
                                         reason="no system CA bundle on this machine")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create(NOW)


def private_policy(tmp_path: Path, pki: Pki, **rules: object) -> Policy:
    """Only the test root is trusted (no system bundle)."""
    roots = write_pem(tmp_path / "roots.pem", pki.root)
    return Policy.model_validate({"trust": {"system": False, "ca_files": [str(roots)]},
                                  "rules": rules})


def test_clean_chain_to_a_private_root_raises_nothing(tmp_path: Path, pki: Pki) -> None:
    leaf = pki.leaf("www.example.com")
    detector = UntrustedChain(private_policy(tmp_path, pki))
    assert detector.inspect(handshake_event(pki.chain(leaf), sni="www.example.com")) == []


@needs_system_bundle
def test_private_root_unknown_to_the_system_store(pki: Pki) -> None:
    leaf = pki.leaf("www.example.com")
    detector = UntrustedChain(Policy())
    [finding] = detector.inspect(handshake_event(pki.chain(leaf), sni="www.example.com"))
    assert finding.rule == "cert.untrusted_chain"
    assert finding.severity is Severity.HIGH
    assert finding.identity == ("www.example.com", "443", leaf.sha256)
    assert finding.certificate_position == 0
    assert "unknown issuer" in finding.message


def test_rogue_ca_with_the_same_names_does_not_verify(tmp_path: Path, pki: Pki) -> None:
    rogue = Pki.create(NOW)  # same subject names, different keys
    leaf = rogue.leaf("www.example.com")
    detector = UntrustedChain(private_policy(tmp_path, pki))
    [finding] = detector.inspect(handshake_event(rogue.chain(leaf), sni="www.example.com"))
    assert "a signature does not verify" in finding.message


def test_missing_intermediate_is_an_unknown_issuer(tmp_path: Path, pki: Pki) -> None:
    leaf = pki.leaf("www.example.com")
    detector = UntrustedChain(private_policy(tmp_path, pki))
    [finding] = detector.inspect(handshake_event([leaf.der], sni="www.example.com"))
    assert "unknown issuer" in finding.message


def test_judged_at_the_event_time(tmp_path: Path, pki: Pki) -> None:
    leaf = pki.leaf("www.example.com", days_before=30, days_after=60)
    chain = pki.chain(leaf)
    detector = UntrustedChain(private_policy(tmp_path, pki))
    assert detector.inspect(handshake_event(chain, time=NOW)) == []
    [late] = detector.inspect(handshake_event(chain, time=NOW + timedelta(days=61)))
    assert "expired or not yet valid" in late.message
    [early] = detector.inspect(handshake_event(chain, time=NOW - timedelta(days=31)))
    assert "expired or not yet valid" in early.message


def test_name_is_not_this_rules_business(tmp_path: Path, pki: Pki) -> None:
    """A wrong host and a CN-only leaf still verify: cert.hostname_mismatch judges names."""
    detector = UntrustedChain(private_policy(tmp_path, pki))
    wrong_host = pki.leaf("other.example.net")
    cn_only = pki.leaf(common_name="www.example.com")
    for leaf in (wrong_host, cn_only):
        assert detector.inspect(handshake_event(pki.chain(leaf), sni="www.example.com")) == []


def test_client_only_certificate_does_not_verify_for_a_server(tmp_path: Path,
                                                              pki: Pki) -> None:
    def leaf(*usages: ObjectIdentifier) -> bytes:
        return issue(name("www.example.com"), issuer=pki.intermediate,
                     not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30),
                     dns=("www.example.com",), usages=usages).der

    detector = UntrustedChain(private_policy(tmp_path, pki))
    [finding] = detector.inspect(handshake_event(
        [leaf(ExtendedKeyUsageOID.CLIENT_AUTH), pki.intermediate.der]))
    assert "serverAuth" in str(finding.details["error"])
    # No EKU at all means "any use" (RFC 5280 4.2.1.12), and anyExtendedKeyUsage too.
    for usages in ((), (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)):
        assert detector.inspect(handshake_event([leaf(*usages), pki.intermediate.der])) == []


def test_weak_rsa_key_and_sha1_signature_fail_the_web_pki_profile(tmp_path: Path) -> None:
    start, end = NOW - timedelta(days=100), NOW + timedelta(days=100)
    root = issue(name("RSA Root"), not_before=start, not_after=end, ca=True, rsa_bits=2048)
    weak_ca = issue(name("Weak CA"), issuer=root, not_before=start, not_after=end, ca=True,
                    rsa_bits=1024)
    weak = issue(name("weak.example"), issuer=weak_ca, not_before=start, not_after=end,
                 dns=("weak.example",))
    # A weak *leaf* key signs nothing in the chain: that is cert.weak_key's business.
    weak_leaf = issue(name("weak-leaf.example"), issuer=root, not_before=start,
                      not_after=end, dns=("weak-leaf.example",), rsa_bits=1024)
    sha1 = issue(name("sha1.example"), issuer=root, not_before=start, not_after=end,
                 dns=("sha1.example",), sha1=True)
    good = issue(name("good.example"), issuer=root, not_before=start, not_after=end,
                 dns=("good.example",))
    roots = write_pem(tmp_path / "rsa.pem", root)
    detector = UntrustedChain(Policy.model_validate(
        {"trust": {"system": False, "ca_files": [str(roots)]}}))
    assert detector.inspect(handshake_event([good.der])) == []
    assert detector.inspect(handshake_event([weak_leaf.der])) == []
    [weak_finding] = detector.inspect(handshake_event([weak.der, weak_ca.der]))
    assert "RSA key shorter than 2048 bits" in weak_finding.message
    [sha1_finding] = detector.inspect(handshake_event([sha1.der]))
    assert "signature algorithm" in sha1_finding.message


def test_self_signed_leaf_listed_in_ca_files_is_trusted(tmp_path: Path) -> None:
    cert = self_signed(NOW, "box.internal")
    roots = write_pem(tmp_path / "box.pem", cert)
    trusted = UntrustedChain(Policy.model_validate(
        {"trust": {"system": False, "ca_files": [str(roots)]}}))
    assert trusted.inspect(handshake_event([cert.der], sni="box.internal")) == []
    [finding] = UntrustedChain(Policy()).inspect(handshake_event([cert.der], sni="box.internal"))
    assert finding.identity == ("box.internal", "443", cert.sha256)


def test_no_visible_chain_no_finding(pki: Pki) -> None:
    detector = UntrustedChain(Policy())
    assert detector.inspect(handshake_event(tls13=True, sni="www.example.com")) == []
    assert detector.inspect(handshake_event([], sni="www.example.com")) == []


def test_undecodable_der_is_counted_not_judged(pki: Pki) -> None:
    detector = UntrustedChain(Policy())
    event = handshake_event(pki.chain(pki.leaf("a.example")),
                            update={"tls.server.certificate_chain": ["not base64!"]})
    assert detector.inspect(event) == []
    assert detector.undecodable == 1


def test_disabled_rule(pki: Pki) -> None:
    detector = UntrustedChain(Policy.model_validate(
        {"rules": {"cert.untrusted_chain": {"enabled": False}}}))
    assert detector.inspect(handshake_event(pki.chain(pki.leaf("a.example")))) == []


def test_verdicts_are_cached_per_chain_and_day(tmp_path: Path, pki: Pki) -> None:
    leaf = pki.leaf("www.example.com")
    detector = UntrustedChain(private_policy(tmp_path, pki), cache_size=1)
    verifier = detector.verifier
    assert verifier is not None
    for hours in (0, 1, 2):
        detector.inspect(handshake_event(pki.chain(leaf), time=NOW + timedelta(hours=hours)))
    assert (verifier.misses, verifier.hits) == (1, 2)
    detector.inspect(handshake_event(pki.chain(leaf), time=NOW + timedelta(days=1)))
    assert (verifier.misses, verifier.evictions) == (2, 1)


def test_bad_ca_files_are_policy_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TrustStoreError, match="cannot read"):
        UntrustedChain(Policy.model_validate({"trust": {"ca_files": [str(missing)]}}))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TrustStoreError, match="unreadable"):
        UntrustedChain(Policy.model_validate({"trust": {"ca_files": [str(garbage)]}}))


def test_several_roots_per_ca_file(tmp_path: Path, pki: Pki) -> None:
    other = Pki.create(NOW, label="Other")
    roots = write_pem(tmp_path / "two.pem", other.root, pki.root)
    detector = UntrustedChain(Policy.model_validate(
        {"trust": {"system": False, "ca_files": [str(roots)]}}))
    for authority in (pki, other):
        leaf = authority.leaf("x.example")
        assert detector.inspect(handshake_event(authority.chain(leaf))) == []


# -- real captures ----------------------------------------------------------------------------

def capture_events(relative: str) -> list[HandshakeEvent]:
    return [e for e in handshakes(run_sensor(read_frames(DATA / relative)))
            if e.tls.server.certificate_chain]


def system_roots_named(*common_names: str) -> None:
    """Skip unless the system bundle has every root named (bundles change over the years)."""
    anchors = load_anchors(Policy().trust)
    subjects = {cert.subject.rfc4514_string() for cert in anchors.certificates}
    for cn in common_names:
        if not any(f"CN={cn}" in subject for subject in subjects):
            pytest.skip(f"the system bundle ({anchors.sources}) lacks {cn}")


def test_real_2023_chains_verify_as_of_capture_time() -> None:
    system_roots_named("DigiCert Global Root G2", "DigiCert Global Root CA")
    events = capture_events("ja4/latest.pcapng")
    assert len(events) == 4
    detector = UntrustedChain(Policy())
    assert [f for e in events for f in detector.inspect(e)] == []
    # The same handshakes judged in 2025: the leaves (valid until 2023/2024) have expired.
    later = [e.model_copy(update={"timestamp": datetime(2025, 1, 1, tzinfo=UTC)})
             for e in events]
    findings = [f for e in later for f in detector.inspect(e)]
    assert len(findings) == 4
    assert all("expired or not yet valid" in f.message for f in findings)


def test_real_2014_ecdsa_chain_verifies_as_of_2014() -> None:
    system_roots_named("COMODO ECC Certification Authority")
    [event] = capture_events("zeek/ecdsa-cert.pcap")
    assert UntrustedChain(Policy()).inspect(event) == []


@needs_system_bundle
def test_real_2013_sha1_chain_does_not_verify() -> None:
    """tls1.2.pcap (2013) chains to AddTrust External CA Root, which expired in 2020 and left
    the bundles, through SHA-1 signatures that the web PKI profile refuses: untrusted."""
    [event] = capture_events("zeek/tls1.2.pcap")
    [finding] = UntrustedChain(Policy()).inspect(event)
    assert finding.identity[0] == "68.233.76.12:443"
    assert "signature algorithm the web PKI forbids" in finding.message


def test_real_curveball_chain_is_untrusted() -> None:
    """CVE-2020-0601 test site: a fake root with explicit curve parameters."""
    [event] = capture_events("ja4/badcurveball.pcap")
    [finding] = UntrustedChain(Policy()).inspect(event)
    assert finding.identity[0] == "bad.curveballtest.com"


def test_real_unparseable_leaf_is_untrusted() -> None:
    [event] = capture_events("suricata/tls-issuer-zero.pcap")
    [finding] = UntrustedChain(Policy()).inspect(event)
    assert finding.details["reason"] == "the leaf certificate cannot be parsed"


def test_real_tls13_captures_raise_nothing() -> None:
    events = handshakes(run_sensor(read_frames(
        DATA / "zeek/tls13draft23-chrome67.0.3368.0-canary.pcap")))
    assert events and all(e.certwatch.tls.certificate_encrypted for e in events)
    detector = UntrustedChain(Policy())
    assert [f for e in events for f in detector.inspect(e)] == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_corrupted_chains_give_a_verdict_never_an_exception(data: st.DataObject) -> None:
    """cryptography parses lazily and raises several exception types: each corrupted chain
    must still come out as a verdict (and never as trusted when the leaf signature broke)."""
    pki = _FUZZ_PKI
    leaf = bytearray(_FUZZ_LEAF.der)
    for _ in range(data.draw(st.integers(1, 6))):
        leaf[data.draw(st.integers(0, len(leaf) - 1))] = data.draw(st.integers(0, 255))
    anchors = TrustAnchors((pki.root.cert,), frozenset(), ("test",))
    verdict = ChainVerifier(anchors).verify([bytes(leaf), pki.intermediate.der], NOW)
    assert verdict.trusted or verdict.reason


_FUZZ_PKI = Pki.create(NOW, label="Fuzz")
_FUZZ_LEAF = _FUZZ_PKI.leaf("fuzz.example")

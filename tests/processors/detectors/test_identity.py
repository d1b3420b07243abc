"""cert.hostname_mismatch (RFC 6125 matching in processors.hostnames) and cert.self_signed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from processors.catalog import Severity
from processors.detectors.identity import HostnameMismatch, SelfSigned
from processors.hostnames import certificate_covers, matches
from processors.policy import Policy
from tests.processors.certs import Pki, self_signed, write_pem
from tests.processors.events import handshake_event
from tests.support import DATA, handshakes, read_frames, run_sensor

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create(NOW)


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("www.example.com", "www.example.com", True),
    ("WWW.Example.COM", "www.example.com.", True),  # case-insensitive, trailing dot
    ("*.example.com", "www.example.com", True),
    ("*.example.com", "WWW.EXAMPLE.COM", True),
    ("*.example.com", "example.com", False),  # one label, not zero
    ("*.example.com", "a.b.example.com", False),  # one label, not two
    ("*.example.com", ".example.com", False),  # not an empty label
    ("w*.example.com", "www.example.com", False),  # partial-label wildcards: never
    ("www.*.com", "www.example.com", False),  # only the left-most label
    ("*.*.example.com", "a.b.example.com", False),
    ("*.com", "example.com", False),  # at least two labels after the wildcard
    ("*", "localhost", False),
    ("xn--bcher-kva.example", "XN--BCHER-KVA.example", True),  # A-labels compared as is
    ("*.xn--bcher-kva.example", "www.xn--bcher-kva.example", True),
    ("bücher.example", "xn--bcher-kva.example", False),  # no U-label conversion
    ("www.example.com", "*.example.com", False),  # a wildcard host matches nothing
])
def test_rfc6125_matching(pattern: str, host: str, expected: bool) -> None:
    assert matches(pattern, host) is expected


def test_common_name_only_when_there_is_no_dns_san() -> None:
    assert certificate_covers("www.example.com", [], [], "www.example.com")
    assert not certificate_covers("www.example.com", ["other.example.com"], [],
                                  "www.example.com")
    assert certificate_covers("192.0.2.1", [], ["192.0.2.1"], None)
    assert certificate_covers("[2001:db8::1]", [], ["2001:db8:0:0::1"], None)
    assert not certificate_covers("192.0.2.1", ["192.0.2.1"], [], "192.0.2.1")


def mismatch(chain: list[bytes], sni: str | None) -> list[str]:
    return [f.rule for f in HostnameMismatch(Policy()).inspect(handshake_event(chain, sni=sni))]


def test_wrong_host(pki: Pki) -> None:
    leaf = pki.leaf("www.example.com", "example.com")
    [finding] = HostnameMismatch(Policy()).inspect(
        handshake_event(pki.chain(leaf), sni="mail.example.com"))
    assert (finding.rule, finding.severity) == ("cert.hostname_mismatch", Severity.HIGH)
    assert finding.identity == ("mail.example.com", "443", leaf.sha256)
    assert finding.certificate_position == 0
    assert "www.example.com, example.com" in finding.message
    assert mismatch(pki.chain(leaf), "example.com") == []
    assert mismatch(pki.chain(leaf), "WWW.EXAMPLE.COM") == []


def test_wildcard_leaf(pki: Pki) -> None:
    chain = pki.chain(pki.leaf("*.example.com"))
    assert mismatch(chain, "api.example.com") == []
    assert mismatch(chain, "example.com") == ["cert.hostname_mismatch"]
    assert mismatch(chain, "a.api.example.com") == ["cert.hostname_mismatch"]


def test_cn_fallback_and_ip_sans(pki: Pki) -> None:
    cn_only = pki.chain(pki.leaf(common_name="legacy.example.com"))
    assert mismatch(cn_only, "legacy.example.com") == []
    assert mismatch(cn_only, "other.example.com") == ["cert.hostname_mismatch"]
    with_ip = pki.chain(pki.leaf("www.example.com", ips=("198.51.100.20",)))
    assert mismatch(with_ip, "198.51.100.20") == []
    assert mismatch(with_ip, "198.51.100.21") == ["cert.hostname_mismatch"]


def test_no_sni_or_no_chain_nothing_to_judge(pki: Pki) -> None:
    assert mismatch(pki.chain(pki.leaf("www.example.com")), None) == []
    detector = HostnameMismatch(Policy())
    assert detector.inspect(handshake_event(tls13=True, sni="www.example.com")) == []
    off = HostnameMismatch(Policy.model_validate(
        {"rules": {"cert.hostname_mismatch": {"enabled": False}}}))
    assert off.inspect(handshake_event(pki.chain(pki.leaf("a.example")), sni="b.example")) == []


def test_real_captures_match_their_sni() -> None:
    """Every real handshake with SNI and a chain names its server correctly (wildcards on
    latest.pcapng, several SANs on tls-alpn-h2.pcap)..."""
    events = [e for path in ("ja4/latest.pcapng", "ja4/tls-alpn-h2.pcap", "ja4/badcurveball.pcap",
                             "ndpi/443-curl.pcap", "zeek/client-certificate.pcap")
              for e in handshakes(run_sensor(read_frames(DATA / path)))
              if e.tls.client.server_name and e.certwatch.tls.server_chain]
    assert len(events) == 8
    detector = HostnameMismatch(Policy())
    assert [f for e in events for f in detector.inspect(e)] == []
    # ... and the same certificates presented for another name are mismatches.
    wrong = [e.model_copy(update={"tls": e.tls.model_copy(update={"client": e.tls.client
             .model_copy(update={"server_name": "intruder.example"})})}) for e in events]
    assert len([f for e in wrong for f in detector.inspect(e)]) == len(events)


# -- self-signed ------------------------------------------------------------------------------

def self_signed_findings(policy: Policy, chain: list[bytes], sni: str = "box.internal"
                         ) -> list[str]:
    return [f.rule for f in SelfSigned(policy).inspect(handshake_event(chain, sni=sni))]


def test_self_signed_leaf() -> None:
    cert = self_signed(NOW, "box.internal")
    [finding] = SelfSigned(Policy()).inspect(handshake_event([cert.der], sni="box.internal"))
    assert (finding.rule, finding.severity) == ("cert.self_signed", Severity.MEDIUM)
    assert finding.identity == ("box.internal", "443", cert.sha256)
    assert "CN=box.internal" in finding.message


def test_ca_issued_leaf_is_not_self_signed(pki: Pki) -> None:
    assert self_signed_findings(Policy(), pki.chain(pki.leaf("box.internal"))) == []


def test_self_signed_leaf_vouched_for_by_the_policy(tmp_path: Path) -> None:
    cert = self_signed(NOW, "box.internal")
    chain = [cert.der]
    trusted = write_pem(tmp_path / "box.pem", cert)
    in_store = Policy.model_validate({"trust": {"ca_files": [str(trusted)]}})
    allowlisted = Policy.model_validate({"allowlist": {"sha256": [cert.sha256.upper()]}})
    pinned = Policy.model_validate({"pins": [{"host": "box.internal",
                                              "sha256": [cert.sha256]}]})
    pinned_elsewhere = Policy.model_validate({"pins": [{"host": "other.internal",
                                                        "sha256": [cert.sha256]}]})
    for policy in (in_store, allowlisted, pinned):
        assert self_signed_findings(policy, chain) == []
    assert self_signed_findings(pinned_elsewhere, chain) == ["cert.self_signed"]
    off = Policy.model_validate({"rules": {"cert.self_signed": {"enabled": False}}})
    assert self_signed_findings(off, chain) == []


@pytest.mark.parametrize("path", ["zeek/ssl-v2.pcap", "zeek/cert-no-cn.pcap"])
def test_real_self_signed_servers(path: str) -> None:
    [event] = handshakes(run_sensor(read_frames(DATA / path)))
    [finding] = SelfSigned(Policy()).inspect(event)
    assert finding.identity[2] == event.certwatch.tls.server_chain[0].hash.sha256


def test_real_ca_issued_chains_are_not_self_signed() -> None:
    events = handshakes(run_sensor(read_frames(DATA / "zeek/tls1.2.pcap")))
    # The chain ends in a self-signed root, but the leaf is what the rule is about.
    assert events[0].certwatch.tls.server_chain[-1].certwatch.self_signed
    assert SelfSigned(Policy()).inspect(events[0]) == []

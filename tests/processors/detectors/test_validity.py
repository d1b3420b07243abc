"""cert.expired / cert.not_yet_valid / cert.expiring_soon, on generated certificates and on
the real expired-certificate capture, cross-checked against tshark's view of the dates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from processors.base import Finding
from processors.catalog import Severity
from processors.detectors.validity import Validity
from processors.policy import Policy
from tests.processors.certs import Pki, issue, name
from tests.processors.events import handshake_event
from tests.support import DATA, handshakes, read_frames, run_sensor

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create(NOW)


def judge(chain: list[bytes], policy: Policy | None = None,
          time: datetime = NOW) -> list[Finding]:
    return Validity(policy or Policy()).inspect(
        handshake_event(chain, sni="www.example.com", time=time))


def test_valid_leaf_raises_nothing(pki: Pki) -> None:
    assert judge(pki.chain(pki.leaf("www.example.com", days_after=90))) == []


def test_expired_leaf(pki: Pki) -> None:
    leaf = pki.leaf("www.example.com", days_before=400, days_after=-3)
    [finding] = judge(pki.chain(leaf))
    assert (finding.rule, finding.severity) == ("cert.expired", Severity.HIGH)
    assert finding.certificate_position == 0
    assert finding.identity == ("www.example.com", "443", leaf.sha256)
    assert finding.details["days_expired"] == 3
    assert "expired on 2024-04-28" in finding.message


def test_not_yet_valid_leaf(pki: Pki) -> None:
    leaf = pki.leaf("www.example.com", days_before=-2, days_after=90)
    [finding] = judge(pki.chain(leaf))
    assert (finding.rule, finding.severity) == ("cert.not_yet_valid", Severity.HIGH)
    assert finding.details["days_until_valid"] == 2
    assert finding.identity == ("www.example.com", "443", leaf.sha256)


def test_expiring_soon_uses_the_policy_threshold(pki: Pki) -> None:
    leaf = pki.leaf("www.example.com", days_after=10)
    [finding] = judge(pki.chain(leaf))  # default: 14 days
    assert (finding.rule, finding.severity) == ("cert.expiring_soon", Severity.LOW)
    assert finding.details["days_remaining"] == 10
    assert finding.identity == ("www.example.com", "443", leaf.sha256)
    five = Policy.model_validate({"rules": {"cert.expiring_soon": {"days": 5}}})
    assert judge(pki.chain(leaf), five) == []
    thirty = Policy.model_validate({"rules": {"cert.expiring_soon": {"days": 30}}})
    assert [f.rule for f in judge(pki.chain(pki.leaf("a.example", days_after=29)), thirty)] \
        == ["cert.expiring_soon"]


def test_validity_bounds_are_inclusive(pki: Pki) -> None:
    """RFC 5280 4.1.2.5: valid at notAfter itself (dates are whole seconds)."""
    leaf = pki.leaf("www.example.com", days_before=10, days_after=0)
    findings = judge(pki.chain(leaf), time=leaf.cert.not_valid_after_utc)
    assert [f.rule for f in findings] == ["cert.expiring_soon"]
    later = judge(pki.chain(leaf), time=leaf.cert.not_valid_after_utc + timedelta(seconds=1))
    assert [f.rule for f in later] == ["cert.expired"]


def test_expired_intermediate_is_reported_at_its_position(pki: Pki) -> None:
    old_ca = issue(name("Old Issuing CA"), issuer=pki.root, ca=True,
                   not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=5))
    leaf = issue(name("www.example.com"), issuer=old_ca, dns=("www.example.com",),
                 not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=300))
    [finding] = judge([leaf.der, old_ca.der])
    assert finding.rule == "cert.expired"
    assert finding.certificate_position == 1
    assert finding.identity == ("www.example.com", "443", old_ca.sha256)
    assert "chain certificate #1" in finding.message


def test_disabled_rules_stay_quiet(pki: Pki) -> None:
    off = Policy.model_validate({"rules": {name: {"enabled": False} for name in (
        "cert.expired", "cert.not_yet_valid", "cert.expiring_soon")}})
    for leaf in (pki.leaf("a.example", days_after=-1), pki.leaf("a.example", days_before=-1),
                 pki.leaf("a.example", days_after=1)):
        assert judge(pki.chain(leaf), off) == []
        assert len(judge(pki.chain(leaf))) == 1


def test_tls13_has_no_chain_to_judge() -> None:
    assert Validity(Policy()).inspect(handshake_event(tls13=True, sni="x.example")) == []


def test_real_expired_capture_judged_at_capture_time() -> None:
    """tls-expired-cert.pcap (March 2014): www.spidh.org's leaf expired 9 days before the
    handshake; www.tobu-estate.com's expires the day after its handshake. The expected dates
    come from tshark's view of the capture, not from our sensor."""
    capture = DATA / "zeek/tls-expired-cert.pcap"
    view = json.loads(capture.with_name(capture.name + ".tshark.json").read_text())
    tshark_leaves = {m["chain"][0]["sha256"]: m["chain"][0] for m in view["handshake_messages"]
                     if m["msg"] == "Certificate"}
    detector = Validity(Policy())
    events = handshakes(run_sensor(read_frames(capture)))
    assert len(events) == 2
    for event in events:
        [finding] = detector.inspect(event)
        leaf = tshark_leaves[finding.identity[2]]
        not_after = datetime.fromisoformat(leaf["not_after"])
        expected = "cert.expired" if not_after < event.timestamp else "cert.expiring_soon"
        assert finding.rule == expected
        assert finding.certificate_position == 0
        assert finding.details["not_after"] == not_after.isoformat()
    rules = sorted(f.rule for e in events for f in detector.inspect(e))
    assert rules == ["cert.expired", "cert.expiring_soon"]


def test_real_2013_capture_is_valid_as_of_2013() -> None:
    """tls1.2.pcap's chain (AddTrust root until 2020) was valid in January 2013, even though
    every certificate of it has expired since."""
    [event] = handshakes(run_sensor(read_frames(DATA / "zeek/tls1.2.pcap")))
    assert Validity(Policy()).inspect(event) == []
    later = event.model_copy(update={"timestamp": datetime(2021, 1, 1, tzinfo=UTC)})
    assert sorted(f.certificate_position or 0 for f in Validity(Policy()).inspect(later)) \
        == [0, 1, 2]

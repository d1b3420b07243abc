"""cert.changed: per-server memory of leaves, its bounds, and the first-sighting rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processors.catalog import Severity
from processors.detectors.changed import CertificateChanged
from processors.policy import Policy
from tests.processors.certs import Issued, Pki
from tests.processors.events import handshake_event
from tests.support import DATA, handshakes, read_frames, run_sensor

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create(NOW)


@pytest.fixture(scope="module")
def leaves(pki: Pki) -> list[Issued]:
    return [pki.leaf("www.example.com") for _ in range(4)]


def policy(**settings: object) -> Policy:
    return Policy.model_validate({"rules": {"cert.changed": settings}})


def see(detector: CertificateChanged, pki: Pki, leaf: Issued, sni: str | None = "www.example.com",
        port: int = 443) -> list[str]:
    event = handshake_event(pki.chain(leaf), sni=sni, server_port=port)
    return [f.rule for f in detector.inspect(event)]


def test_first_sighting_learns_then_a_new_leaf_is_reported(pki: Pki,
                                                           leaves: list[Issued]) -> None:
    a, b = leaves[:2]
    detector = CertificateChanged(Policy())
    assert see(detector, pki, a) == []
    assert see(detector, pki, a) == []
    [finding] = detector.inspect(handshake_event(pki.chain(b), sni="www.example.com"))
    assert (finding.rule, finding.severity) == ("cert.changed", Severity.LOW)
    assert finding.identity == ("www.example.com", "443", b.sha256)
    assert finding.details["previous_sha256"] == a.sha256
    assert finding.details["new_sha256"] == b.sha256
    # Both are known now: a server alternating between them is quiet.
    assert see(detector, pki, a) == []
    assert see(detector, pki, b) == []


def test_servers_are_keyed_by_name_and_port(pki: Pki, leaves: list[Issued]) -> None:
    a, b = leaves[:2]
    detector = CertificateChanged(Policy())
    assert see(detector, pki, a) == []
    assert see(detector, pki, b, port=8443) == []  # another server: first sighting
    assert see(detector, pki, b, sni="api.example.com") == []
    assert see(detector, pki, b, sni=None) == []  # keyed 198.51.100.20:443
    assert see(detector, pki, b) == ["cert.changed"]
    assert len(detector) == 4


def test_certificates_per_server_are_bounded(pki: Pki, leaves: list[Issued]) -> None:
    a, b, c, _ = leaves
    detector = CertificateChanged(policy(max_certificates_per_server=2))
    assert see(detector, pki, a) == []
    assert see(detector, pki, b) == ["cert.changed"]
    assert see(detector, pki, c) == ["cert.changed"]  # forgets a, the oldest
    assert detector.evicted_certificates == 1
    assert see(detector, pki, a) == ["cert.changed"]


def test_servers_are_bounded_lru(pki: Pki, leaves: list[Issued]) -> None:
    a, b = leaves[:2]
    detector = CertificateChanged(policy(max_servers=2))
    for name in ("one.example", "two.example"):
        assert see(detector, pki, a, sni=name) == []
    assert see(detector, pki, a, sni="one.example") == []  # one is now the most recent
    assert see(detector, pki, a, sni="three.example") == []  # evicts two
    assert (len(detector), detector.evicted_servers) == (2, 1)
    assert see(detector, pki, b, sni="two.example") == []  # forgotten: learnt (evicts one)
    assert see(detector, pki, b, sni="one.example") == []  # forgotten (evicts three)
    assert see(detector, pki, a, sni="two.example") == ["cert.changed"]  # still known
    assert detector.evicted_servers == 3


def test_no_chain_neither_learns_nor_alerts(pki: Pki, leaves: list[Issued]) -> None:
    detector = CertificateChanged(Policy())
    assert detector.inspect(handshake_event(tls13=True, sni="www.example.com")) == []
    assert len(detector) == 0
    off = CertificateChanged(policy(enabled=False))
    assert see(off, pki, leaves[0]) == see(off, pki, leaves[1]) == []


def test_real_capture_two_servers_each_seen_once() -> None:
    """tls-expired-cert.pcap: two different servers, two leaves: learning only."""
    events = handshakes(run_sensor(read_frames(DATA / "zeek/tls-expired-cert.pcap")))
    detector = CertificateChanged(Policy())
    assert [f for e in events for f in detector.inspect(e)] == []
    assert len(detector) == 2
    # The second server presenting the first one's certificate is a change.
    first, second = events
    swapped = second.model_copy(update={"tls": second.tls.model_copy(
        update={"server": first.tls.server}), "certwatch": second.certwatch.model_copy(
        update={"tls": first.certwatch.tls})})
    [finding] = detector.inspect(swapped)
    assert finding.details["previous_sha256"] == second.certwatch.tls.server_chain[0].hash.sha256
    assert finding.details["new_sha256"] == first.certwatch.tls.server_chain[0].hash.sha256

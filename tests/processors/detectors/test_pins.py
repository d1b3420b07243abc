"""cert.pin_mismatch (sha256, SPKI and issuer pins) and cert.not_allowlisted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processors.catalog import Severity
from processors.detectors.pins import NotAllowlisted, PinMismatch, normalise_dn, same_dn
from processors.policy import Policy
from tests.processors.certs import Pki
from tests.processors.events import handshake_event
from tests.support import DATA, handshakes, read_frames, run_sensor

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create(NOW)


@pytest.fixture(scope="module")
def rogue() -> Pki:
    """A CA with the very same names as ``pki`` but other keys (a mis-issuing or MITM CA)."""
    return Pki.create(NOW)


def pins(*entries: dict[str, Any]) -> PinMismatch:
    return PinMismatch(Policy.model_validate({"pins": list(entries)}))


def rules(detector: PinMismatch | NotAllowlisted, chain: list[bytes],
          sni: str | None = "www.example.com") -> list[str]:
    return [f.rule for f in detector.inspect(handshake_event(chain, sni=sni))]


def test_sha256_pin_catches_a_rogue_ca_certificate(pki: Pki, rogue: Pki) -> None:
    genuine = pki.leaf("www.example.com")
    forged = rogue.leaf("www.example.com")
    detector = pins({"host": "www.example.com", "sha256": [genuine.sha256]})
    assert rules(detector, pki.chain(genuine)) == []
    [finding] = detector.inspect(handshake_event(rogue.chain(forged), sni="www.example.com"))
    assert (finding.rule, finding.severity) == ("cert.pin_mismatch", Severity.CRITICAL)
    assert finding.identity == ("www.example.com", "443", forged.sha256)
    assert finding.details["failed"] == ["sha256"]
    assert finding.certificate_position == 0


def test_spki_pin_on_the_intermediate_survives_leaf_renewal(pki: Pki, rogue: Pki) -> None:
    detector = pins({"host": "www.example.com",
                     "spki_sha256": [pki.intermediate.spki_sha256]})
    for _ in range(2):  # two different leaves from the pinned CA
        assert rules(detector, pki.chain(pki.leaf("www.example.com"))) == []
    [finding] = detector.inspect(handshake_event(
        rogue.chain(rogue.leaf("www.example.com")), sni="www.example.com"))
    assert finding.details["failed"] == ["spki_sha256"]


def test_issuer_pin_normalised(pki: Pki) -> None:
    chain = pki.chain(pki.leaf("www.example.com"))
    # The issuer is "CN=Test Issuing CA,O=certwatch tests"; written the OpenSSL way round,
    # with spaces and another case, it is the same DN.
    for written in ("CN=Test Issuing CA,O=certwatch tests",
                    "o = Certwatch  Tests, cn=test issuing ca",
                    "2.5.4.10=certwatch tests,2.5.4.3=Test Issuing CA"):
        assert rules(pins({"host": "www.example.com", "issuer": written}), chain) == []
    [finding] = pins({"host": "www.example.com", "issuer": "CN=Other CA,O=certwatch tests"}
                     ).inspect(handshake_event(chain, sni="www.example.com"))
    assert finding.details["failed"] == ["issuer"]


def test_every_constraint_of_an_entry_must_hold(pki: Pki) -> None:
    genuine = pki.leaf("www.example.com")
    detector = pins({"host": "www.example.com", "sha256": [genuine.sha256],
                     "issuer": "CN=Other CA"})
    [finding] = detector.inspect(handshake_event(pki.chain(genuine), sni="www.example.com"))
    assert finding.details["failed"] == ["issuer"]


def test_a_backup_pin_entry_is_enough(pki: Pki) -> None:
    current, backup = pki.leaf("www.example.com"), pki.leaf("www.example.com")
    detector = pins({"host": "www.example.com", "sha256": ["00" * 32]},
                    {"host": "www.example.com", "sha256": [backup.sha256]})
    assert rules(detector, pki.chain(backup)) == []
    assert rules(detector, pki.chain(current)) == ["cert.pin_mismatch"]


def test_wildcard_pin_host_covers_one_label(pki: Pki, rogue: Pki) -> None:
    detector = pins({"host": "*.example.com", "spki_sha256": [pki.intermediate.spki_sha256]})
    forged = rogue.chain(rogue.leaf("*.example.com", "example.com"))
    assert rules(detector, forged, "api.example.com") == ["cert.pin_mismatch"]
    assert rules(detector, forged, "example.com") == []  # not covered by *.example.com
    assert rules(detector, forged, "a.b.example.com") == []
    assert rules(detector, forged, "www.example.org") == []


def test_no_sni_no_chain_or_disabled_nothing_to_judge(pki: Pki, rogue: Pki) -> None:
    forged = rogue.chain(rogue.leaf("www.example.com"))
    pin = {"host": "www.example.com", "sha256": ["00" * 32]}
    assert rules(pins(pin), forged, sni=None) == []
    assert pins(pin).inspect(handshake_event(tls13=True, sni="www.example.com")) == []
    off = PinMismatch(Policy.model_validate(
        {"pins": [pin], "rules": {"cert.pin_mismatch": {"enabled": False}}}))
    assert rules(off, forged) == []


def test_dn_normalisation() -> None:
    assert normalise_dn(r"CN=a\,b,O=x") == ((("CN", "a,b"),), (("O", "x"),))
    assert normalise_dn(r"CN=caf\C3\A9") == ((("CN", "café"),),)
    assert normalise_dn("CN=a+UID=b") == normalise_dn("UID=b+CN=a")
    assert same_dn("CN=R3,O=Let's Encrypt,C=US", "C=US, O=Let's Encrypt, CN=R3")
    assert not same_dn("CN=R3,O=Let's Encrypt,C=US", "CN=R4,O=Let's Encrypt,C=US")
    assert not same_dn("", "")


def test_real_capture_pinned_to_its_issuer() -> None:
    """www.cloudflare.com (tls-alpn-h2.pcap, 2020) pinned to DigiCert's EV CA as tshark
    names it: quiet; pinned to Let's Encrypt: critical."""
    [event] = [e for e in handshakes(run_sensor(read_frames(DATA / "ja4/tls-alpn-h2.pcap")))
               if e.certwatch.tls.server_chain]
    digicert = ("CN=DigiCert ECC Extended Validation Server CA,OU=www.digicert.com,"
                "O=DigiCert Inc,C=US")
    assert pins({"host": "www.cloudflare.com", "issuer": digicert}).inspect(event) == []
    [finding] = pins({"host": "*.cloudflare.com",
                      "issuer": "CN=R3,O=Let's Encrypt,C=US"}).inspect(event)
    assert finding.identity[0] == "www.cloudflare.com"


# -- allowlist --------------------------------------------------------------------------------

def test_allowlist(pki: Pki) -> None:
    known, unknown = pki.leaf("www.example.com"), pki.leaf("www.example.com")
    detector = NotAllowlisted(Policy.model_validate(
        {"allowlist": {"sha256": [":".join(known.sha256[i:i + 2].upper()
                                           for i in range(0, 64, 2))]}}))
    assert rules(detector, pki.chain(known)) == []
    [finding] = detector.inspect(handshake_event(pki.chain(unknown), sni="www.example.com"))
    assert (finding.rule, finding.severity) == ("cert.not_allowlisted", Severity.MEDIUM)
    assert finding.identity == ("www.example.com", "443", unknown.sha256)
    # Strict mode applies to every server, with or without SNI.
    assert rules(detector, pki.chain(unknown), sni=None) == ["cert.not_allowlisted"]


def test_no_allowlist_means_no_strict_mode(pki: Pki) -> None:
    assert rules(NotAllowlisted(Policy()), pki.chain(pki.leaf("a.example"))) == []
    off = NotAllowlisted(Policy.model_validate(
        {"allowlist": {"sha256": []}, "rules": {"cert.not_allowlisted": {"enabled": False}}}))
    assert rules(off, pki.chain(pki.leaf("a.example"))) == []
    empty = NotAllowlisted(Policy.model_validate({"allowlist": {"sha256": []}}))
    assert rules(empty, pki.chain(pki.leaf("a.example"))) == ["cert.not_allowlisted"]
    assert empty.inspect(handshake_event(tls13=True)) == []

"""Pathological certificates (issue 7), carried in real handshake bytes through the whole
sensor and then the processors: the event is still produced with what could be read,
nothing crashes.

Certificates are made with ``cryptography``; what it refuses to make (negative or oversized
serials, invalid UTF-8, BER booleans, long-form lengths) is made by editing the DER of a
certificate it did make. Every case travels in a TLS 1.2 handshake of its own, framed by
``tools.tlsgen``, one capture for all.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.events import CertificateEvent, HandshakeEvent, SensorEvent
from tests.support import read_frames, run_sensor
from tools.tlsgen import handshake as hs
from tools.tlsgen.certs import der, der_children
from tools.tlsgen.connection import ConnectionSpec, conversation
from tools.tlsgen.pcap import write_capture

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SAN_COUNT, CHAIN_DEPTH = 3000, 20
FUZZ_SEEDS = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "x509"


@cache
def _key(label: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(hashlib.sha256(label.encode()).digest()) % 2**200
                                 + 1, ec.SECP256R1())


def make(cn: str, *, issuer: tuple[str, str] | None = None, sans: int = 1, ca: bool = False,
         critical_unknown: bool = False, serial: int = 0x1234_5678) -> bytes:
    """A certificate for ``cn`` signed by ``issuer`` (its CN and key label), else self-signed."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer \
        else name
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
               .public_key(_key(cn).public_key()).serial_number(serial)
               .not_valid_before(NOW - timedelta(days=10))
               .not_valid_after(NOW + timedelta(days=300))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectAlternativeName(
                   [x509.DNSName(cn)] + [x509.DNSName(f"n{i}.{cn}") for i in range(sans - 1)]),
                   critical=False))
    if critical_unknown:
        # A private OID no verifier knows, marked critical (RFC 5280 4.2: must be rejected
        # by a verifier, but the certificate still parses).
        builder = builder.add_extension(x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.55555.7.1"), b"\x05\x00"), critical=True)
    signer = _key(issuer[1] if issuer else cn)
    # RFC 6979 signatures: the same bytes every run (the fuzz seeds are compared to them).
    certificate = builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True)
    return certificate.public_bytes(Encoding.DER)


def with_serial(cert: bytes, content: bytes) -> bytes:
    """``cert`` with its serialNumber INTEGER's content replaced (RFC 5280 4.1.2.2 wants it
    positive and at most 20 octets; cryptography will not write otherwise)."""
    outer = der_children(cert)
    fields = der_children(outer[0])
    fields[1] = der(0x02, content)  # [0] version, serialNumber, ...
    return der(0x30, der(0x30, b"".join(fields)) + outer[1] + outer[2])


def long_form_lengths(cert: bytes) -> bytes:
    """``cert`` with its outer SEQUENCE's length in a needlessly long form (0x84 + four
    bytes): BER allows it, DER (X.690 10.1) does not."""
    body = b"".join(der_children(cert))
    return b"\x30\x84" + len(body).to_bytes(4, "big") + body


def chain_deep() -> tuple[bytes, ...]:
    """A leaf and CHAIN_DEPTH - 1 intermediates above it, each issuing the next."""
    names = [f"ca{i}.deep.example" for i in range(CHAIN_DEPTH - 1)] + ["deep.example.com"]
    certs = [make(names[0], ca=True)]
    for parent, child in itertools.pairwise(names):
        certs.append(make(child, issuer=(parent, parent), ca=child != names[-1]))
    return tuple(reversed(certs))  # leaf first, as a server sends it


@cache
def cases() -> dict[str, tuple[bytes, ...]]:
    base = make("serial.example.com")
    utf8 = make("XXXXXXXXXX.example.com")
    ca = make("ber.example.com", ca=True)
    return {
        "huge-san": (make("san.example.com", sans=SAN_COUNT),),
        "deep-chain": chain_deep(),
        "negative-serial": (with_serial(base, b"\xff\x01\x02"),),
        "zero-serial": (with_serial(base, b"\x00"),),
        "long-serial": (with_serial(base, bytes(range(1, 26))),),
        # Same length as the ten X's, so no length changes: \xff is never valid UTF-8.
        "invalid-utf8": (utf8.replace(b"XXXXXXXXXX", b"\xff\xfe\xc3(ab\xed\xa0\x80z"),),
        "critical-unknown": (make("critical.example.com", critical_unknown=True),),
        # cA and critical TRUE as 0x01: BER (X.690 8.2.2) allows any non-zero octet, DER
        # (11.1) only 0xFF.
        "ber-boolean": (ca.replace(b"\x01\x01\xff", b"\x01\x01\x01"),),
        "long-form-length": (long_form_lengths(make("longform.example.com")),),
        "not-der": (b"certificate? no: " + bytes(range(256)) * 4,),
        "empty-certificate-message": (),
    }


def sni(case: str) -> str:
    return f"{case}.test"


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[SensorEvent]:
    logging.disable(logging.CRITICAL)
    try:
        path = tmp_path_factory.mktemp("pathological") / "pathological.pcap"
        start = NOW.timestamp()
        specs = [ConnectionSpec((f"10.9.{i}.1", 50000), (f"192.0.2.{50 + i}", 443), start + i,
                                version=hs.TLS12, cipher=0xC02B, group=hs.X25519, sni=sni(name),
                                chain=chain)
                 for i, (name, chain) in enumerate(cases().items())]
        write_capture(path, (conversation(spec, 1) for spec in specs))
        return run_sensor(read_frames(path))
    finally:
        logging.disable(logging.NOTSET)


def handshake_for(events: list[SensorEvent], case: str) -> HandshakeEvent:
    found = [e for e in events if isinstance(e, HandshakeEvent)
             and e.tls.client.server_name == sni(case)]
    assert len(found) == 1, case
    return found[0]


def certificate_events(events: list[SensorEvent], der_bytes: bytes) -> list[CertificateEvent]:
    digest = hashlib.sha256(der_bytes).hexdigest()
    return [e for e in events if isinstance(e, CertificateEvent) and e.hash.sha256 == digest]


@pytest.mark.parametrize("case", list(cases()))
def test_every_case_gives_an_established_handshake_carrying_the_chain_as_sent(
        events: list[SensorEvent], case: str) -> None:
    event = handshake_for(events, case)
    assert event.tls.established
    assert event.certwatch.tls.parse_error is None
    sent = cases()[case]
    assert [c.hash.sha256 for c in event.certwatch.tls.server_chain] == [
        hashlib.sha256(d).hexdigest() for d in sent]
    assert [base64.b64decode(d) for d in event.tls.server.certificate_chain] == list(sent)
    for position, der_bytes in enumerate(sent):
        (announced,) = certificate_events(events, der_bytes)
        assert announced.certwatch.seen.position == position


def test_huge_san_list_is_read_whole(events: list[SensorEvent]) -> None:
    leaf = handshake_for(events, "huge-san").certwatch.tls.server_chain[0]
    assert leaf.x509 is not None
    assert len(leaf.x509.alternative_names) == SAN_COUNT
    assert leaf.certwatch.san_dns[-1] == f"n{SAN_COUNT - 2}.san.example.com"


def test_deep_chain_keeps_every_link(events: list[SensorEvent]) -> None:
    chain = handshake_for(events, "deep-chain").certwatch.tls.server_chain
    assert len(chain) == CHAIN_DEPTH
    subjects = [c.x509.subject.common_name for c in chain if c.x509 and c.x509.subject]
    issuers = [c.x509.issuer.common_name for c in chain if c.x509 and c.x509.issuer]
    assert len(subjects) == CHAIN_DEPTH
    assert subjects[1:] == issuers[:-1]  # each certificate issued by the next one sent
    assert [c.certwatch.is_ca for c in chain] == [False] + [True] * (CHAIN_DEPTH - 1)


@pytest.mark.parametrize(("case", "serial"), [
    ("zero-serial", "00"), ("long-serial", bytes(range(1, 26)).hex())])
def test_out_of_profile_serials_are_reported_as_sent(events: list[SensorEvent], case: str,
                                                      serial: str) -> None:
    leaf = handshake_for(events, case).certwatch.tls.server_chain[0]
    assert leaf.x509 is not None
    assert (leaf.x509.serial_number or "").lower().lstrip("0") == serial.lstrip("0")
    assert leaf.x509.subject is not None
    assert leaf.x509.subject.common_name == ["serial.example.com"]


def test_negative_serial_is_not_mistaken_for_a_positive_one(events: list[SensorEvent]) -> None:
    leaf = handshake_for(events, "negative-serial").certwatch.tls.server_chain[0]
    assert leaf.x509 is not None
    serial = (leaf.x509.serial_number or "").lower()
    # Two's complement 0xff0102 is -0x00fefe; whichever notation, never plain "ff0102"
    # read as positive without a sign.
    assert serial in ("-fefe", "-00fefe", "ff0102"), serial
    assert leaf.x509.subject is not None
    assert leaf.x509.subject.common_name == ["serial.example.com"]


def test_invalid_utf8_name_leaves_the_rest_readable(events: list[SensorEvent]) -> None:
    leaf = handshake_for(events, "invalid-utf8").certwatch.tls.server_chain[0]
    # The key, validity and hashes do not depend on the broken name.
    assert leaf.certwatch.spki_sha256
    if leaf.x509 is not None:
        assert leaf.x509.public_key_algorithm is not None
        assert leaf.x509.not_after is not None
    else:
        assert leaf.certwatch.parse_error


def test_invalid_utf8_name_is_reported_as_a_field_error_in_the_events(
        events: list[SensorEvent]) -> None:
    """Issue 7: the event says why the subject is empty, naming the field."""
    event = handshake_for(events, "invalid-utf8")
    leaf = event.certwatch.tls.server_chain[0]
    assert leaf.x509 is not None and leaf.x509.subject is not None
    assert leaf.x509.subject.common_name == []  # unreadable, so empty...
    errors = leaf.certwatch.parse_errors or []
    # ... and the reason is there, one entry per field, the field named first.
    assert [e.split(":", 1)[0] for e in errors if e.startswith("subject:")] == ["subject"]
    assert all(": " in e for e in errors)
    assert leaf.certwatch.parse_error is None  # the rest of the certificate was read
    (announced,) = certificate_events(events, cases()["invalid-utf8"][0])
    assert announced.certwatch.certificate.parse_errors == errors
    # Same in the JSON a SIEM or a processor receives.
    document = json.loads(event.model_dump_json(by_alias=True, exclude_none=True))
    assert document["certwatch"]["tls"]["server_chain"][0]["certwatch"]["parse_errors"] == errors


def test_readable_certificates_carry_no_parse_errors_member(events: list[SensorEvent]) -> None:
    event = handshake_for(events, "critical-unknown")
    assert event.certwatch.tls.server_chain[0].certwatch.parse_errors is None
    document = json.loads(event.model_dump_json(by_alias=True, exclude_none=True))
    assert "parse_errors" not in document["certwatch"]["tls"]["server_chain"][0]["certwatch"]


def test_unknown_critical_extension_does_not_hide_the_certificate(
        events: list[SensorEvent]) -> None:
    leaf = handshake_for(events, "critical-unknown").certwatch.tls.server_chain[0]
    assert leaf.certwatch.parse_error is None
    assert leaf.x509 is not None
    assert leaf.x509.alternative_names == ["critical.example.com"]


@pytest.mark.parametrize("case", ["ber-boolean", "long-form-length", "not-der"])
def test_non_der_is_described_with_a_reason_or_read_leniently(events: list[SensorEvent],
                                                              case: str) -> None:
    leaf = handshake_for(events, case).certwatch.tls.server_chain[0]
    sent = cases()[case][0]
    assert leaf.certwatch.der_length == len(sent)
    if case == "not-der":
        assert leaf.certwatch.parse_error
        assert leaf.x509 is None
    else:
        # Either refused with a reason, or read: then the names are the ones encoded.
        assert leaf.certwatch.parse_error or (leaf.x509 is not None and leaf.x509.subject)


def test_empty_certificate_message_gives_a_handshake_without_chain(
        events: list[SensorEvent]) -> None:
    event = handshake_for(events, "empty-certificate-message")
    assert event.certwatch.tls.server_chain == []
    assert event.tls.server.hash is None or event.tls.server.hash.sha256 is None


def test_processors_take_every_case_without_error(events: list[SensorEvent]) -> None:
    processor = Processor(Policy(), DETECTORS)
    alerts = {case: {a.rule.name for a in processor.process(handshake_for(events, case))}
              for case in cases()}
    assert not processor.stats.detector_errors
    # None of these chains leads to a root of the system store.
    for case in ("huge-san", "deep-chain", "critical-unknown", "zero-serial"):
        assert "cert.untrusted_chain" in alerts[case] or "cert.self_signed" in alerts[case], (
            case, alerts[case])
    # The SNI names none of the certificates' names.
    assert "cert.hostname_mismatch" in alerts["huge-san"]


def fuzz_seeds() -> Iterator[tuple[str, bytes]]:
    for name, chain in cases().items():
        for n, der_bytes in enumerate(chain[:1]):
            yield f"seed-{name}-{n}", der_bytes


def test_pathological_certificates_are_kept_as_x509_fuzz_seeds() -> None:
    """The harness replays tests/data/fuzz/x509/* and seeds its mutation loop with them
    (fuzz/run.py ``extra_seeds``): the files must be these certificates, byte for byte."""
    for name, der_bytes in fuzz_seeds():
        path = FUZZ_SEEDS / name
        assert path.is_file(), f"{path} missing: write it from this module's cases()"
        assert path.read_bytes() == der_bytes, path

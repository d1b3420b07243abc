"""describe_certificate on generated certificates of every key type, on certificates patched
into shapes ``cryptography`` dislikes, on garbage, and on the real certificates that sit
contiguously in the test captures (cross-checked against tshark's view of them)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.x509 import CertificateCache, CertificateInfo, describe_certificate

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = sorted(p for p in DATA.glob("*/*") if p.suffix in (".pcap", ".pcapng"))
START = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
DER = serialization.Encoding.DER


# ----------------------------------------------------------------- reusable cross-check


def assert_matches_tshark(info: CertificateInfo, entry: Mapping[str, Any]) -> None:
    """Assert that ``info`` agrees with one certificate of a ``*.tshark.json`` chain.

    ``entry`` is an element of ``handshake_messages[i]["chain"]`` for a ``Certificate``
    message (tshark 4.0 extracted the DER, pyca/cryptography described it). Every field the
    entry has is compared; fields it lacks are not. For golden tests over the captures once
    the reassembler hands over DER: ``assert_matches_tshark(describe_certificate(der), e)``.
    """
    assert (info.sha256, info.sha1, info.der_length) == (
        entry["sha256"],
        entry["sha1"],
        entry["der_len"],
    )
    if "parse_error" in entry:
        assert info.parse_error is not None
        return
    assert info.parse_error is None
    assert info.subject == entry["subject"]
    assert info.issuer == entry["issuer"]
    assert info.serial_number == entry["serial_hex"]
    assert info.not_before is not None and info.not_after is not None
    assert info.not_before.isoformat() == entry["not_before"]
    assert info.not_after.isoformat() == entry["not_after"]
    assert info.signature_algorithm_oid == entry["sig_alg_oid"]
    assert info.signature_algorithm == entry["sig_alg"]
    key_type = entry.get("key_type", "")
    if key_type.startswith("unparsed"):  # cryptography could not load the key
        assert any(name == "public_key" for name, _ in info.field_errors)
    else:
        assert info.public_key_algorithm == key_type
        assert info.public_key_size == entry.get("key_bits")
        assert info.public_key_curve == entry.get("curve")
    if "san_dns" in entry:
        assert list(info.san_dns) == entry["san_dns"]
    if "san_ip" in entry:
        assert list(info.san_ip) == entry["san_ip"]
    if entry.get("self_signed_name") is False:
        assert not info.self_signed


def certificates_in(capture: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """(DER, tshark chain entry) for each certificate of the capture whose bytes are
    contiguous in the file (it did not straddle a TCP segment), found by SHA-256."""
    wanted = {}
    for message in json.loads(Path(f"{capture}.tshark.json").read_text())["handshake_messages"]:
        for entry in message.get("chain", ()):
            wanted[entry["sha256"]] = entry
    data, found = capture.read_bytes(), {}
    for match in re.finditer(rb"\x30\x82", data):  # SEQUENCE with a 2-byte length
        end = match.start() + 4 + int.from_bytes(data[match.start() + 2 : match.start() + 4])
        der = data[match.start() : end]
        digest = hashlib.sha256(der).hexdigest()
        if digest in wanted:
            found[digest] = (der, wanted[digest])
    return list(found.values())


REAL = [(cap, der, entry) for cap in CAPTURES for der, entry in certificates_in(cap)]


def test_enough_real_certificates_are_found_in_the_captures() -> None:
    # Guards the golden test below against silently testing nothing.
    assert len(REAL) >= 10
    assert any("parse_error" in entry for _, _, entry in REAL)


@pytest.mark.parametrize(
    ("capture", "der", "entry"), REAL, ids=[f"{c.name}-{e['sha256'][:8]}" for c, _, e in REAL]
)
def test_real_certificates_match_tshark(capture: Path, der: bytes, entry: dict[str, Any]) -> None:
    assert_matches_tshark(describe_certificate(der), entry)


def test_explicit_curve_key_still_reports_algorithm_and_size() -> None:
    # badcurveball.pcap: its leaf loads, and its CA (explicit curve parameters) is what
    # CVE-2020-0601 abused; here the leaf is checked, the key fallback is unit-tested below.
    leaf = [d for c, d, e in REAL if c.name == "badcurveball.pcap"]
    assert leaf
    info = describe_certificate(leaf[0])
    assert (info.public_key_algorithm, info.public_key_size) == ("EC", 384)


# ------------------------------------------------------------------- generated certificates


def _name(cn: str, org: str = "Example Org") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NZ"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit A"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit B"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _build(
    key: Any,
    *,
    subject: x509.Name,
    issuer: x509.Name | None = None,
    signer: Any = None,
    serial: int = 0x0ABCDEF,
    ca: bool | None = None,
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    digest: hashes.SHA256 | hashes.SHA384 | None = None,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(START)
        .not_valid_after(START + datetime.timedelta(days=90))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    signer = signer or key
    if isinstance(signer, ed25519.Ed25519PrivateKey):
        digest = None
    elif digest is None:
        digest = hashes.SHA256()
    return builder.sign(signer, digest).public_bytes(DER)


KEYS: dict[str, tuple[Callable[[], Any], str, int, str | None]] = {
    "rsa1024": (lambda: rsa.generate_private_key(65537, 1024), "RSA", 1024, None),
    "rsa2048": (lambda: rsa.generate_private_key(3, 2048), "RSA", 2048, None),
    "p256": (lambda: ec.generate_private_key(ec.SECP256R1()), "EC", 256, "secp256r1"),
    "p384": (lambda: ec.generate_private_key(ec.SECP384R1()), "EC", 384, "secp384r1"),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, "Ed25519", 256, None),
    "dsa2048": (lambda: dsa.generate_private_key(2048), "DSA", 2048, None),
}
SIGNATURES = {
    "rsa1024": ("sha256WithRSAEncryption", "1.2.840.113549.1.1.11"),
    "rsa2048": ("sha256WithRSAEncryption", "1.2.840.113549.1.1.11"),
    "p256": ("ecdsa-with-SHA256", "1.2.840.10045.4.3.2"),
    "p384": ("ecdsa-with-SHA256", "1.2.840.10045.4.3.2"),
    "ed25519": ("ed25519", "1.3.101.112"),
    "dsa2048": ("dsa_with_SHA256", "2.16.840.1.101.3.4.3.2"),
}


@pytest.mark.parametrize("kind", KEYS)
def test_self_signed_certificate_of_each_key_type(kind: str) -> None:
    make, algorithm, bits, curve = KEYS[kind]
    key = make()
    der = _build(key, subject=_name("root.example"), ca=True)
    info = describe_certificate(der)
    spki = key.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert info.parse_error is None and info.field_errors == ()
    assert info.sha256 == hashlib.sha256(der).hexdigest()
    assert info.sha1 == hashlib.sha1(der).hexdigest()
    assert info.der_length == len(der)
    assert info.spki_sha256 == hashlib.sha256(spki).hexdigest()
    assert info.serial_number == "ABCDEF"
    assert info.subject == info.issuer == "CN=root.example,OU=Unit B,OU=Unit A,O=Example Org,C=NZ"
    assert info.subject_cn == "root.example"
    assert info.subject_dict() == {
        "common_name": ["root.example"],
        "organization": ["Example Org"],
        "organizational_unit": ["Unit A", "Unit B"],
        "country": ["NZ"],
    }
    assert info.not_before == START
    assert info.not_after == START + datetime.timedelta(days=90)
    assert info.not_before.tzinfo is not None
    assert (info.public_key_algorithm, info.public_key_size, info.public_key_curve) == (
        algorithm,
        bits,
        curve,
    )
    expected_exponent = {"rsa1024": 65537, "rsa2048": 3}.get(kind)
    assert info.public_key_exponent == expected_exponent
    assert (info.signature_algorithm, info.signature_algorithm_oid) == SIGNATURES[kind]
    assert info.version == 3
    assert info.is_ca is True
    assert info.self_signed and info.self_signature_valid is True


def test_ca_signed_leaf_with_every_kind_of_alternative_name() -> None:
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("Example CA")
    leaf_key = rsa.generate_private_key(65537, 2048)
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("www.example.org"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
            x509.RFC822Name("ops@example.org"),
            x509.UniformResourceIdentifier("https://example.org/"),
            x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
            x509.DNSName("*.example.org"),
        ]
    )
    der = _build(
        leaf_key,
        subject=_name("www.example.org", org="Leaf Org"),
        issuer=ca_name,
        signer=ca_key,
        ca=False,
        extensions=((san, False),),
        digest=hashes.SHA384(),
    )
    info = describe_certificate(der)
    assert info.alternative_names == (
        "www.example.org",
        "192.0.2.7",
        "ops@example.org",
        "https://example.org/",
        "2001:db8::1",
        "*.example.org",
    )
    assert info.san_dns == ("www.example.org", "*.example.org")
    assert info.san_ip == ("192.0.2.7", "2001:db8::1")
    assert info.san_email == ("ops@example.org",)
    assert info.san_uri == ("https://example.org/",)
    assert info.issuer_cn == "Example CA"
    assert info.issuer_dict()["organization"] == ["Example Org"]
    assert info.subject_dict()["organization"] == ["Leaf Org"]
    assert info.signature_algorithm == "ecdsa-with-SHA384"
    assert info.is_ca is False
    assert not info.self_signed and info.self_signature_valid is None


def test_certificate_without_basic_constraints_is_not_a_ca() -> None:
    info = describe_certificate(_build(ec.generate_private_key(ec.SECP256R1()), subject=_name("x")))
    assert info.is_ca is False  # RFC 5280 4.2.1.9: cA defaults to FALSE


def test_same_name_but_signed_by_another_key_is_not_self_signed() -> None:
    # An attacker's copy of a root's name with its own key: the names match, the
    # signature does not verify with the embedded key.
    name = _name("Lookalike Root")
    der = _build(
        ec.generate_private_key(ec.SECP256R1()),
        subject=name,
        signer=ec.generate_private_key(ec.SECP256R1()),
    )
    info = describe_certificate(der)
    assert info.subject == info.issuer
    assert info.self_signature_valid is False
    assert info.self_signed is False


# ---------------------------------------------------------------- patched certificates


def _patch(der: bytes, old: bytes, new: bytes, count: int = 1) -> bytes:
    assert der.count(old) == count, (old, der.count(old))
    return der.replace(old, new)


def test_md5_and_sha1_signatures_are_named() -> None:
    # cryptography refuses to *sign* with MD5/SHA-1, so sign with SHA-256 and rewrite both
    # AlgorithmIdentifiers (tbs and outer) to the weak OIDs: what a CA of 2005 sent.
    key = rsa.generate_private_key(65537, 1024)
    der = _build(key, subject=_name("old.example"))
    sha256_rsa = bytes.fromhex("2a864886f70d01010b")
    for last, name in ((0x04, "md5WithRSAEncryption"), (0x05, "sha1WithRSAEncryption")):
        info = describe_certificate(_patch(der, sha256_rsa, sha256_rsa[:-1] + bytes([last]), 2))
        assert info.signature_algorithm == name
        assert info.signature_algorithm_oid == f"1.2.840.113549.1.1.{last}"
        assert info.subject_cn == "old.example"
        # The signature was made over SHA-256, so it cannot verify as MD5/SHA-1; either it
        # is checked (False → not self-signed) or unverifiable (None → names decide).
        assert info.self_signature_valid in (False, None)
        assert info.self_signed is (info.self_signature_valid is None)


def test_negative_serial_keeps_its_sign_and_every_other_field() -> None:
    der = _build(ec.generate_private_key(ec.SECP256R1()), subject=_name("neg"), serial=0x7F01)
    patched = _patch(der, b"\x02\x02\x7f\x01", b"\x02\x02\xff\x01")  # INTEGER -255
    info = describe_certificate(patched)
    assert info.serial_number == "-FF"
    assert info.parse_error is None
    assert info.subject_cn == "neg" and info.public_key_curve == "secp256r1"


def test_invalid_utf8_in_subject_leaves_the_other_fields() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("still.example")])
    der = _build(
        ec.generate_private_key(ec.SECP256R1()),
        subject=_name("BADNAME"),
        issuer=_name("Good CA"),
        signer=ca_key,
        ca=False,
        extensions=((san, False),),
    )
    info = describe_certificate(_patch(der, b"\x0c\x07BADNAME", b"\x0c\x07\xff\xfeBADNA"))
    assert info.parse_error is None
    assert info.subject is None and info.subject_cn is None and info.subject_fields == ()
    assert [name for name, _ in info.field_errors] == ["subject"]
    assert info.issuer_cn == "Good CA"
    assert info.san_dns == ("still.example",)
    assert info.public_key_algorithm == "EC" and info.is_ca is False
    assert info.not_after == START + datetime.timedelta(days=90)


def test_bad_san_extension_leaves_the_other_fields() -> None:
    san = x509.SubjectAlternativeName([x509.DNSName("a.example")])
    der = _build(
        ec.generate_private_key(ec.SECP256R1()),
        subject=_name("badsan"),
        ca=True,
        extensions=((san, False),),
    )
    # [2] dNSName → [9] (GeneralName has no [9]); the extension no longer parses.
    info = describe_certificate(_patch(der, b"\x82\x09a.example", b"\x89\x09a.example"))
    assert info.parse_error is None
    assert [name for name, _ in info.field_errors] == ["alternative_names"]
    assert info.alternative_names == ()
    assert info.subject_cn == "badsan"
    assert info.is_ca is True  # read from the DER, not from cryptography's all-or-nothing


def test_unknown_critical_extension_is_no_obstacle() -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    der = _build(
        rsa.generate_private_key(65537, 2048), subject=_name("crit"), extensions=((unknown, True),)
    )
    info = describe_certificate(der)
    assert info.parse_error is None and info.field_errors == ()
    assert info.subject_cn == "crit" and info.public_key_size == 2048


# --------------------------------------------------------------------------- garbage


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x80\x00\x00", b"\x04\x00", b"\xff" * 64])
def test_garbage_records_a_parse_error_and_fingerprints(der: bytes) -> None:
    info = describe_certificate(der)
    assert info.parse_error
    assert info.sha256 == hashlib.sha256(der).hexdigest()
    assert info.der_length == len(der)
    assert info.subject is None


GOOD = _build(ec.generate_private_key(ec.SECP256R1()), subject=_name("trunc"), ca=True)


def test_every_truncation_records_a_parse_error() -> None:
    for end in range(len(GOOD)):
        assert describe_certificate(GOOD[:end]).parse_error, end


def test_unknown_version_is_a_parse_error_with_the_version_kept() -> None:
    # cryptography raises InvalidVersion (not a ValueError) for X.509 versions it lacks.
    patched = _patch(GOOD, b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x07")
    info = describe_certificate(patched)
    assert info.parse_error is not None and "version" in info.parse_error.lower()
    assert info.version == 8 and info.serial_number == "ABCDEF"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert describe_certificate(data).der_length == len(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255))
def test_any_single_byte_change_never_raises(position: int, value: int) -> None:
    mutated = GOOD[:position] + bytes([value]) + GOOD[position + 1 :]
    info = describe_certificate(mutated)
    assert info.sha256 == hashlib.sha256(mutated).hexdigest()


# ----------------------------------------------------------------------------- cache


def test_cache_counts_hits_misses_and_evicts_the_least_recently_used() -> None:
    ders = [
        _build(ec.generate_private_key(ec.SECP256R1()), subject=_name(f"c{i}")) for i in range(3)
    ]
    cache = CertificateCache(max_entries=2)
    first = cache.describe(ders[0])
    cache.describe(ders[1])
    assert cache.describe(ders[0]) is first  # hit, and now most recently used
    cache.describe(ders[2])  # evicts ders[1]
    assert (cache.hits, cache.misses, cache.evictions, len(cache)) == (1, 3, 1, 2)
    cache.describe(ders[1])
    assert (cache.misses, cache.evictions) == (4, 2)
    assert cache.describe(ders[2]).subject_cn == "c2"
    assert cache.hits == 2


def test_cache_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError):
        CertificateCache(max_entries=0)

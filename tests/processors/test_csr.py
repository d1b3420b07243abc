"""`certwatch csr check` rules on CSRs generated here with cryptography (PEM and DER).

cryptography refuses to sign a CSR with SHA-1/MD5 or to build an RSA key with an even exponent,
so those CSRs are assembled by hand in DER (RFC 2986 §4) around a real TBS and real signature.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.csr import (
    CsrError,
    CsrFinding,
    check_csr,
    exit_status,
    load_csr,
    load_private_key,
    normalise_host,
)

DER, PEM = serialization.Encoding.DER, serialization.Encoding.PEM
SHA1_RSA = bytes.fromhex("2a864886f70d010105")  # 1.2.840.113549.1.1.5
MD5_RSA = bytes.fromhex("2a864886f70d010104")  # 1.2.840.113549.1.1.4
MD2_RSA = bytes.fromhex("2a864886f70d010102")  # 1.2.840.113549.1.1.2
RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")
ECDSA_SHA1 = bytes.fromhex("2a8648ce3d0401")  # 1.2.840.10045.4.1, no parameters (RFC 5758 §3.2)


@cache
def rsa_key(bits: int = 2048, exponent: int = 65537) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(exponent, bits)


def make_csr(key: CertificateIssuerPrivateKeyTypes | None = None, *, cn: str | None = "a.test",
             dns: Sequence[str] | None = ("a.test",),
             ips: Sequence[str] = ()) -> x509.CertificateSigningRequest:
    key = key if key is not None else rsa_key()
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if dns is not None:
        general: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        general += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    # EdDSA hashes internally (RFC 8032), so it takes no hash algorithm.
    eddsa = isinstance(key, ed25519.Ed25519PrivateKey)
    return builder.sign(key, None if eddsa else hashes.SHA256())


def rules(findings: list[CsrFinding], level: str | None = None) -> list[str]:
    return [f.rule for f in findings if level is None or f.level == level]


def problems(findings: list[CsrFinding]) -> list[str]:
    return [f"{f.level}:{f.rule}" for f in findings if f.level != "info"]


# --- a minimal DER writer, to build what cryptography will not sign -----------------------------

def tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def body_of(der: bytes) -> bytes:
    skip = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    return der[skip:]


def der_int(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def assemble(tbs: bytes, oid: bytes, signature: bytes, params: bytes = b"\x05\x00") -> bytes:
    """CertificationRequest ::= SEQUENCE { info, AlgorithmIdentifier, BIT STRING } (RFC 2986)."""
    algorithm = tlv(0x30, tlv(0x06, oid) + params)
    return tlv(0x30, tbs + algorithm + tlv(0x03, b"\x00" + signature))


def legacy_signed(hash_: hashes.HashAlgorithm, oid: bytes) -> x509.CertificateSigningRequest:
    key = rsa_key()
    tbs = make_csr(key).tbs_certrequest_bytes
    return load_csr(assemble(tbs, oid, key.sign(tbs, padding.PKCS1v15(), hash_)))


# --- key and signature rules -------------------------------------------------------------------

def test_clean_rsa_csr_has_only_info_lines() -> None:
    findings = check_csr(make_csr(), hosts=["a.test"], key=rsa_key())
    assert problems(findings) == []
    assert exit_status(findings) == 0
    summary = " | ".join(f.message for f in findings)
    assert "CN=a.test" in summary and "RSA 2048 bits" in summary and "DNS:a.test" in summary


@pytest.mark.parametrize(("bits", "weak"), [(1024, True), (2048, False), (4096, False)])
def test_rsa_key_size(bits: int, weak: bool) -> None:
    findings = check_csr(make_csr(rsa_key(bits)))
    assert ("cert.weak_key" in rules(findings, "error")) is weak
    assert exit_status(findings) == int(weak)
    if weak:
        assert "RSA key of 1024 bits; at least 2048 required" in [f.message for f in findings]


def test_rsa_threshold_is_tunable() -> None:
    assert "cert.weak_key" not in rules(check_csr(make_csr(rsa_key(1024)), min_rsa_bits=1024))
    assert "cert.weak_key" in rules(check_csr(make_csr(rsa_key(2048)), min_rsa_bits=3072))


def test_ec_keys() -> None:
    assert problems(check_csr(make_csr(ec.generate_private_key(ec.SECP256R1())))) == []
    p192 = make_csr(ec.generate_private_key(ec.SECP192R1()))
    assert problems(check_csr(p192)) == ["error:cert.weak_key"]
    # Allowed by a lower threshold, but still a curve no public CA certifies.
    assert problems(check_csr(p192, min_ec_bits=192)) == ["warning:csr.key_type"]


def test_ed25519_is_fine() -> None:
    findings = check_csr(make_csr(ed25519.Ed25519PrivateKey.generate()))
    assert problems(findings) == []
    assert any(f.message == "key: Ed25519" for f in findings)


def test_dsa_key() -> None:
    findings = check_csr(make_csr(dsa.generate_private_key(1024)))
    assert problems(findings) == ["error:cert.weak_key", "warning:csr.key_type"]


def test_small_rsa_exponent_warns() -> None:
    findings = check_csr(make_csr(rsa_key(2048, 3)))
    assert problems(findings) == ["warning:csr.rsa_exponent"]
    assert exit_status(findings) == 0


def test_even_rsa_exponent_is_an_error() -> None:
    key = rsa_key()
    csr = make_csr(key)
    old_spki = key.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    rsa_body = tlv(0x30, der_int(key.public_key().public_numbers().n) + der_int(65538))
    new_spki = tlv(0x30, tlv(0x30, tlv(0x06, RSA_ENCRYPTION) + b"\x05\x00")
                   + tlv(0x03, b"\x00" + rsa_body))
    tbs = tlv(0x30, body_of(csr.tbs_certrequest_bytes).replace(old_spki, new_spki))
    bad = load_csr(assemble(tbs, SHA1_RSA, csr.signature))
    findings = check_csr(bad, key=key)
    assert "csr.unsupported_key" in rules(findings, "error")
    assert exit_status(findings) == 1


@pytest.mark.parametrize(("hash_", "oid", "name"), [(hashes.SHA1(), SHA1_RSA, "SHA1"),
                                                    (hashes.MD5(), MD5_RSA, "MD5")])
def test_weak_signature_hash(hash_: hashes.HashAlgorithm, oid: bytes, name: str) -> None:
    csr = legacy_signed(hash_, oid)
    findings = check_csr(csr)
    # The hand-built CSR verifies: only the hash is at fault.
    assert problems(findings) == ["error:cert.weak_signature"]
    assert any(f.message.startswith(f"signed with {name};") for f in findings)
    assert problems(check_csr(csr, forbidden_hashes=())) == []


def test_ecdsa_sha1_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    tbs = make_csr(key).tbs_certrequest_bytes
    csr = load_csr(assemble(tbs, ECDSA_SHA1, key.sign(tbs, ec.ECDSA(hashes.SHA1())), b""))
    assert problems(check_csr(csr)) == ["error:cert.weak_signature"]
    forged = load_csr(assemble(tbs, ECDSA_SHA1, key.sign(tbs + b"x", ec.ECDSA(hashes.SHA1())),
                               b""))
    assert problems(check_csr(forged)) == ["error:csr.bad_signature", "error:cert.weak_signature"]


def test_md2_signature_is_named_even_though_unverifiable() -> None:
    key = rsa_key()
    tbs = make_csr(key).tbs_certrequest_bytes
    csr = load_csr(assemble(tbs, MD2_RSA, key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())))
    findings = check_csr(csr, forbidden_hashes=("md2", "md5", "sha1"))
    assert set(problems(findings)) == {"error:csr.bad_signature", "error:cert.weak_signature"}


def test_tampered_signature() -> None:
    der = bytearray(make_csr().public_bytes(DER))
    der[-1] ^= 0x01  # the signature BIT STRING is the last field of the CertificationRequest
    findings = check_csr(load_csr(bytes(der)), hosts=["a.test"])
    assert problems(findings) == ["error:csr.bad_signature"]
    assert exit_status(findings) == 1


def test_key_must_match() -> None:
    csr = make_csr(rsa_key(2048))
    assert "csr.key_mismatch" in rules(check_csr(csr, key=rsa_key(4096)), "error")
    assert "csr.key_mismatch" in rules(check_csr(csr, key=ec.generate_private_key(ec.SECP256R1())))
    assert "csr.key_mismatch" not in rules(check_csr(csr, key=rsa_key(2048)))


# --- names -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("host", "covered"), [
    ("www.example.com", True), ("WWW.Example.COM.", True), ("example.com", False),
    ("a.b.example.com", False), ("*.example.com", True), ("*.other.com", False),
])
def test_wildcard_san(host: str, covered: bool) -> None:
    csr = make_csr(cn="*.example.com", dns=["*.example.com"])
    findings = check_csr(csr, hosts=[host])
    assert ("cert.hostname_mismatch" in rules(findings, "error")) is not covered


def test_wildcard_host_needs_a_wildcard_san() -> None:
    csr = make_csr(cn="www.example.com", dns=["www.example.com", "api.example.com"])
    findings = check_csr(csr, hosts=["*.example.com"])
    assert rules(findings, "error") == ["cert.hostname_mismatch"]


def test_san_not_asked_for_warns() -> None:
    csr = make_csr(cn="a.test", dns=["a.test", "b.test"])
    findings = check_csr(csr, hosts=["a.test"])
    assert problems(findings) == ["warning:csr.unexpected_san"]
    assert "DNS:b.test" in findings[-1].message
    assert exit_status(findings) == 0


def test_missing_san_falls_back_to_cn() -> None:
    csr = make_csr(cn="legacy.test", dns=None)
    assert problems(check_csr(csr, hosts=["legacy.test"])) == ["warning:csr.no_subject_alt_name"]
    findings = check_csr(csr, hosts=["other.test"])
    assert problems(findings) == ["warning:csr.no_subject_alt_name",
                                  "error:cert.hostname_mismatch", "warning:csr.unexpected_san"]
    assert any("other.test is not covered by the CSR's CN" in f.message for f in findings)


def test_cn_outside_san_warns() -> None:
    csr = make_csr(cn="c.test", dns=["a.test"])
    assert problems(check_csr(csr)) == ["warning:csr.cn_not_in_san"]


def test_malformed_subject_attribute_warns() -> None:
    # cryptography only warns when it reads a three-letter countryName back (RFC 5280 App. A
    # bounds it to two); the warning must become a finding, not leak or crash.
    with pytest.warns(UserWarning, match="length"):
        country = x509.NameAttribute(NameOID.COUNTRY_NAME, "USA", _validate=False)
    name = x509.Name([country, x509.NameAttribute(NameOID.COMMON_NAME, "a.test")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).add_extension(
        x509.SubjectAlternativeName([x509.DNSName("a.test")]), critical=False,
    ).sign(rsa_key(), hashes.SHA256())
    findings = check_csr(load_csr(csr.public_bytes(PEM)))
    assert problems(findings) == ["warning:csr.bad_subject"]


def test_ip_san() -> None:
    csr = make_csr(cn=None, dns=["a.test", "192.0.2.9"], ips=["192.0.2.1", "2001:db8::1"])
    hosts = ["a.test", "192.0.2.1", "2001:DB8:0::1"]
    findings = check_csr(csr, hosts=hosts)
    # A dNSName spelling an address is not an iPAddress SAN (RFC 6125 §6.2.1).
    assert problems(findings) == ["warning:csr.unexpected_san"]
    assert "DNS:192.0.2.9" in findings[-1].message
    assert "cert.hostname_mismatch" in rules(check_csr(csr, hosts=["192.0.2.9"]))


def test_idn_host_matches_a_label_san() -> None:
    csr = make_csr(cn=None, dns=["xn--bcher-kva.example"])
    assert problems(check_csr(csr, hosts=["bücher.example"])) == []


@pytest.mark.parametrize("host", ["", "a..b", "*.com", "a.*.example.com", "bad host.test",
                                  "-a.test", "x" * 64 + ".test"])
def test_invalid_host_is_a_usage_error(host: str) -> None:
    with pytest.raises(ValueError, match="not a valid host name"):
        check_csr(make_csr(), hosts=[host])


def test_normalise_host() -> None:
    assert normalise_host("Example.COM.") == "example.com"
    assert normalise_host("2001:DB8::0:1") == ipaddress.ip_address("2001:db8::1")


# --- loading -----------------------------------------------------------------------------------

def test_load_pem_and_der_give_the_same_request() -> None:
    csr = make_csr()
    pem, der = csr.public_bytes(PEM), csr.public_bytes(DER)
    for data in (pem, der, b"openssl req output\n" + pem + b"trailer\n",
                 pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")):
        assert load_csr(data).public_bytes(DER) == der


def self_signed_certificate() -> x509.Certificate:
    key = rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty input"),
    (b" \n", "empty input"),
    (b"garbage", "not a CSR"),
    (self_signed_certificate().public_bytes(PEM), "PEM input holds CERTIFICATE, not"),
    (self_signed_certificate().public_bytes(DER), "neither PEM nor a DER"),
    (make_csr().public_bytes(DER)[:-10], "not a CSR"),
    (make_csr().public_bytes(DER).replace(b"\x02\x01\x00", b"\x02\x01\x05", 1),
     "5 is not a valid CSR version"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n",
     "malformed PEM"),
])
def test_not_a_csr(data: bytes, message: str) -> None:
    with pytest.raises(CsrError, match=message):
        load_csr(data)


def test_load_private_key_pem_der_and_encrypted() -> None:
    key = rsa_key()
    expected = key.private_numbers()
    pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    encrypted = key.private_bytes(PEM, pkcs8, serialization.BestAvailableEncryption(b"pw"))
    for data, password in ((key.private_bytes(PEM, pkcs8, plain), None),
                           (key.private_bytes(DER, pkcs8, plain), None),
                           (key.private_bytes(PEM, serialization.PrivateFormat.
                                              TraditionalOpenSSL, plain), None),
                           (encrypted, b"pw")):
        loaded = load_private_key(data, password)
        assert isinstance(loaded, rsa.RSAPrivateKey) and loaded.private_numbers() == expected
    for data, password in ((encrypted, None), (encrypted, b"wrong"), (b"", None),
                           (b"garbage", None), (make_csr().public_bytes(PEM), None)):
        with pytest.raises(CsrError):
            load_private_key(data, password)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_der_is_rejected_or_checked_never_crashes(data: st.DataObject) -> None:
    der = bytearray(make_csr(dns=["a.test", "b.test"], ips=["192.0.2.1"]).public_bytes(DER))
    for _ in range(data.draw(st.integers(1, 4))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    try:
        csr = load_csr(bytes(der))
    except CsrError:
        return
    findings = check_csr(csr, hosts=["a.test"], key=rsa_key())
    assert all(f.level in ("error", "warning", "info") for f in findings)

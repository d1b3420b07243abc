"""The IANA tables: spot checks against the registry, totality, GREASE, and a cross-check
of every suite the local OpenSSL knows against its own description of that suite."""

from __future__ import annotations

import re
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensor.tls import registry as reg

GREASE = {0x0A0A, 0x1A1A, 0x2A2A, 0x3A3A, 0x4A4A, 0x5A5A, 0x6A6A, 0x7A7A,
          0x8A8A, 0x9A9A, 0xAAAA, 0xBABA, 0xCACA, 0xDADA, 0xEAEA, 0xFAFA}  # fmt: skip

LOOKUPS_16 = [
    reg.cipher_suite_name,
    reg.extension_name,
    reg.group_name,
    reg.signature_scheme_name,
    reg.version_name,
]
LOOKUPS_8 = [
    reg.ec_point_format_name,
    reg.alert_level_name,
    reg.alert_description_name,
    reg.handshake_type_name,
    reg.content_type_name,
]


def test_grease_is_exactly_the_rfc8701_values() -> None:
    assert {v for v in range(0x10000) if reg.is_grease(v)} == GREASE


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x1301, "TLS_AES_128_GCM_SHA256"),
        (0x1303, "TLS_CHACHA20_POLY1305_SHA256"),
        (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        (0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
        (0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
        (0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
        (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA"),
        (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
        (0x00FF, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"),
        (0x5600, "TLS_FALLBACK_SCSV"),
        (0xC0AC, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM"),
    ],
)
def test_cipher_suite_names_match_iana(code: int, name: str) -> None:
    assert reg.cipher_suite_name(code) == name
    assert reg.cipher_suite(code).iana


def test_parts_of_an_ecdhe_rsa_gcm_suite() -> None:
    suite = reg.cipher_suite(0xC02F)
    assert (suite.kx, suite.auth, suite.cipher, suite.mac) == (
        "ECDHE", "RSA", "AES_128_GCM", "SHA256"
    )  # fmt: skip
    assert suite.aead and not suite.weak


@pytest.mark.parametrize(
    ("code", "flag"),
    [
        (0x0005, "rc4"),
        (0x0004, "md5_mac"),
        (0x0003, "export"),
        (0x0014, "export"),
        (0x0018, "anonymous"),
        (0xC018, "anonymous"),
        (0x0000, "null_encryption"),
        (0x0002, "null_encryption"),
        (0x0009, "des"),
        (0x000A, "triple_des"),
        (0xC012, "triple_des"),
        (0x0700C0, "triple_des"),  # SSLv2 DES-192-EDE3
        (0x020080, "export"),  # SSLv2 RC4-128-EXPORT40
    ],
)
def test_weak_suites_carry_their_flag(code: int, flag: str) -> None:
    suite = reg.cipher_suite(code)
    assert getattr(suite, flag) is True
    assert suite.weak


def test_modern_suites_and_signalling_values_are_not_weak() -> None:
    for code in (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02C, 0xCCA8, 0x009F, 0x00FF, 0x5600):
        assert not reg.cipher_suite(code).weak, hex(code)
    assert reg.cipher_suite(0x00FF).scsv


def test_non_iana_suites_are_known_but_marked() -> None:
    for code in (0xFF85, 0xCC13, 0xCC14, 0xCC15):
        suite = reg.cipher_suite(code)
        assert not suite.name.startswith("unknown") and not suite.iana
    assert reg.cipher_suite(0xCC13).cipher == "CHACHA20_POLY1305"


def test_tls13_and_dh_anon_key_exchange() -> None:
    assert reg.cipher_suite(0x1301).kx == "ANY"
    # DH_anon sends its parameters in a ServerKeyExchange like DHE (RFC 5246 7.4.3).
    assert reg.cipher_suite(0x0034).kx == "DHE"
    assert reg.cipher_suite(0x00AA).kx == "DHE_PSK"


@given(st.integers(min_value=0, max_value=0xFFFFFF))
def test_cipher_suite_lookup_is_total(code: int) -> None:
    suite = reg.cipher_suite(code)
    assert suite.code == code
    if code not in reg.CIPHER_SUITES and not reg.is_grease(code):
        digits = 4 if code <= 0xFFFF else 6
        assert suite.name == f"unknown-0x{code:0{digits}x}"
        assert not suite.weak


@given(st.integers(min_value=0, max_value=0xFFFF))
def test_16_bit_lookups_are_total(code: int) -> None:
    for lookup in LOOKUPS_16:
        name = lookup(code)
        assert isinstance(name, str) and name
        if name.startswith("unknown-"):
            assert name == f"unknown-0x{code:04x}"
    assert reg.group(code).code == code
    assert isinstance(reg.version_ecs(code), tuple)


@given(st.integers(min_value=0, max_value=0xFF))
def test_8_bit_lookups_are_total(code: int) -> None:
    for lookup in LOOKUPS_8:
        assert lookup(code)


def test_grease_is_named_as_such() -> None:
    for code in GREASE:
        for lookup in (reg.cipher_suite_name, reg.extension_name, reg.group_name):
            assert lookup(code) == f"GREASE-0x{code:04x}"


@pytest.mark.parametrize(
    ("version", "name", "ecs"),
    [
        (0x0002, "SSLv2", ("ssl", "2.0")),
        (0x0300, "SSLv3", ("ssl", "3.0")),
        (0x0301, "TLSv1.0", ("tls", "1.0")),
        (0x0302, "TLSv1.1", ("tls", "1.1")),
        (0x0303, "TLSv1.2", ("tls", "1.2")),
        (0x0304, "TLSv1.3", ("tls", "1.3")),
        (0x7F17, "TLSv1.3-draft23", ("tls", "1.3")),
        (0x7F1C, "TLSv1.3-draft28", ("tls", "1.3")),
        (0xFB17, "TLSv1.3-draft23-fb", ("tls", "1.3")),
        (0xFEFF, "DTLSv1.0", ("dtls", "1.0")),
        (0xFEFD, "DTLSv1.2", ("dtls", "1.2")),
        (0xFEFC, "DTLSv1.3", ("dtls", "1.3")),
        (0x0305, "unknown-0x0305", ("unknown", "unknown-0x0305")),
    ],
)
def test_versions(version: int, name: str, ecs: tuple[str, str]) -> None:
    assert reg.version_name(version) == name
    assert reg.version_ecs(version) == ecs


def test_groups_including_post_quantum_hybrids() -> None:
    assert reg.group(29) == reg.Group(29, "x25519", "ec")
    assert reg.group(23).name == "secp256r1"
    assert reg.group(256) == reg.Group(256, "ffdhe2048", "ffdhe")
    assert reg.group(0x11EC) == reg.Group(0x11EC, "X25519MLKEM768", "hybrid")
    assert reg.group(0x6399) == reg.Group(0x6399, "X25519Kyber768Draft00", "hybrid")
    assert reg.group(0x1234).kind == "unknown"


def test_other_tables_spot_checks() -> None:
    assert reg.extension_name(0) == "server_name"
    assert reg.extension_name(16) == "application_layer_protocol_negotiation"
    assert reg.extension_name(43) == "supported_versions"
    assert reg.extension_name(0xFE0D) == "encrypted_client_hello"
    assert reg.extension_name(0xFF01) == "renegotiation_info"
    assert reg.signature_scheme_name(0x0804) == "rsa_pss_rsae_sha256"
    assert reg.signature_scheme_name(0x0403) == "ecdsa_secp256r1_sha256"
    assert reg.signature_scheme_name(0x0807) == "ed25519"
    assert reg.signature_scheme_name(0x0402) == "dsa_sha256"  # TLS 1.2 (hash, sig) pair
    assert reg.alert_description_name(40) == "handshake_failure"
    assert reg.alert_description_name(112) == "unrecognized_name"
    assert reg.alert_level_name(2) == "fatal"
    assert reg.handshake_type_name(11) == "certificate"
    assert reg.content_type_name(23) == "application_data"
    assert reg.ec_point_format_name(0) == "uncompressed"
    assert reg.alert_description_name(0xEE) == "unknown-0xee"


# OpenSSL's own description of each suite is an independent source for the parts.
_KEA = {"kx-rsa": "RSA", "kx-dhe": "DHE", "kx-ecdhe": "ECDHE", "kx-psk": "PSK",
        "kx-dhe-psk": "DHE_PSK", "kx-ecdhe-psk": "ECDHE_PSK", "kx-rsa-psk": "RSA_PSK",
        "kx-srp": "SRP", "kx-any": "ANY", "kx-gost": "GOST", "kx-gost18": "GOST"}  # fmt: skip
_AUTH = {"auth-rsa": "RSA", "auth-dss": "DSS", "auth-ecdsa": "ECDSA", "auth-null": "anon",
         "auth-psk": "PSK", "auth-srp": "SRP", "auth-any": "ANY"}  # fmt: skip


def _openssl_suites() -> list[dict[str, object]]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return list(ctx.get_ciphers())  # type: ignore[arg-type]


def test_every_suite_openssl_knows_is_in_the_table_with_matching_parts() -> None:
    suites = _openssl_suites()
    assert len(suites) > 50
    for info in suites:
        code = int(str(info["id"])) & 0xFFFF
        suite = reg.cipher_suite(code)
        assert suite.iana, (info["name"], hex(code))
        assert suite.kx == _KEA[str(info["kea"])], info["name"]
        expected_auth = _AUTH[str(info["auth"])]
        if suite.kx.endswith("PSK") and expected_auth == "RSA":
            expected_auth = "PSK"  # RSA_PSK: OpenSSL names the certificate, we the PSK
        assert suite.auth == expected_auth, info["name"]
        assert suite.aead == info["aead"], info["name"]
        symmetric = str(info["symmetric"] or "null")
        ours = suite.cipher.lower().replace("_", "-")
        ours = re.sub(r"^3des-ede-cbc$", "des-ede3-cbc", ours)
        assert symmetric.startswith(ours.split("-")[0]), (info["name"], symmetric, ours)
        assert suite.null_encryption == (symmetric == "null"), info["name"]

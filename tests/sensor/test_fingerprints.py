"""Fingerprints of real hellos: JA3/JA3S against tshark, JA4/JA4S against FoxIO's reference
output, JA4X against the specification worked by hand.

The hellos come from the captures' bytes, decoded by ``sensor.tls.handshake``: a hello that
fits in one packet is contiguous in a pcap/pcapng file, so scanning the file for TLS
handshake records finds it without any capture or TCP reassembly code.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sensor import fingerprints as fp
from sensor.errors import HandshakeError
from sensor.tls.handshake import parse_client_hello, parse_server_hello
from sensor.tls.messages import ClientHello, Extension, ServerHello

DATA = Path(__file__).resolve().parents[1] / "data"
JA4_CAPTURES = sorted(p for p in (DATA / "ja4").iterdir() if p.suffix in (".pcap", ".pcapng"))
ALL_CAPTURES = sorted(p for p in DATA.glob("*/*") if p.suffix in (".pcap", ".pcapng"))


def _hello_bodies(capture: Path, msg_type: int) -> Iterator[bytes]:
    """Bodies of the handshake messages of ``msg_type`` that start a TLS record and fit in
    it, found anywhere in the capture file."""
    data = capture.read_bytes()
    pos = data.find(b"\x16\x03")
    while pos >= 0:
        head = data[pos : pos + 9]
        if len(head) == 9 and head[2] <= 4 and head[5] == msg_type:
            record_len = int.from_bytes(head[3:5], "big")
            body_len = int.from_bytes(head[6:9], "big")
            if body_len + 4 <= record_len and pos + 9 + body_len <= len(data):
                yield data[pos + 9 : pos + 9 + body_len]
        pos = data.find(b"\x16\x03", pos + 1)


def client_hellos(capture: Path) -> list[ClientHello]:
    out = []
    for body in _hello_bodies(capture, 1):
        try:
            out.append(parse_client_hello(body))
        except HandshakeError:
            continue  # not a ClientHello after all (bytes that merely look like a header)
    return out


def server_hellos(capture: Path) -> list[ServerHello]:
    out = []
    for body in _hello_bodies(capture, 2):
        try:
            out.append(parse_server_hello(body))
        except HandshakeError:
            continue
    return out


def _tshark(capture: Path) -> dict[str, object]:
    return json.loads(Path(f"{capture}.tshark.json").read_text())  # type: ignore[no-any-return]


def _tshark_values(capture: Path, msg: str, key: str) -> set[str]:
    messages = _tshark(capture)["handshake_messages"]
    assert isinstance(messages, list)
    return {m[key] for m in messages if m["msg"] == msg and m.get(key)}


def _hello(
    *,
    ciphers: tuple[int, ...] = (0x1301,),
    extensions: tuple[int, ...] = (),
    legacy_version: int = 0x0303,
    **fields: object,
) -> ClientHello:
    return ClientHello(
        legacy_version=legacy_version,
        random=bytes(32),
        session_id=b"",
        cipher_suites=ciphers,
        compression_methods=(0,),
        extensions=tuple(Extension(t, b"") for t in extensions),
        **fields,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------- JA3 / JA3S


@pytest.mark.parametrize("capture", ALL_CAPTURES, ids=lambda p: p.name)
def test_ja3_and_ja3s_equal_tshark_for_every_hello_in_every_capture(capture: Path) -> None:
    # tshark computes JA3/JA3S itself: an independent implementation on the same bytes,
    # except where it misreads them (see TSHARK_MISREADS in test_pipeline_golden and the
    # hand-checked values in test_corpus_cases).
    wrong = TSHARK_WRONG.get(capture.name, {})
    assert {fp.ja3(ch) for ch in client_hellos(capture)} - wrong.get("ours", set()) == (
        _tshark_values(capture, "ClientHello", "ja3") - wrong.get("tshark", set())
    )
    assert {fp.ja3s(sh) for sh in server_hellos(capture)} - wrong.get("ours", set()) == (
        _tshark_values(capture, "ServerHello", "ja3s") - wrong.get("tshark", set())
    )


# capture -> {"tshark": its wrong values, "ours": the right values in their place}.
TSHARK_WRONG: dict[str, dict[str, set[str]]] = {
    # JA3 string cut at the empty compression list: "769,4-5-10-9-100-98-3-6-19-18-37,".
    "tls_invalid_reads.pcap": {
        "tshark": {"88d4e76accc5dbd6e8ba82e094f04049"},
        "ours": {hashlib.md5(b"769,4-5-10-9-100-98-3-6-19-18-37,,,").hexdigest()},
    },
    # Draft-14 ServerHello read with a session id: "772,44205," instead of "772,49195,40".
    "tls13-draft14.pcap": {
        "tshark": {"24839eca4f44616f70548d4a2c0f09fc"},
        "ours": {hashlib.md5(b"772,49195,40").hexdigest()},
    },
}


def test_ja3_string_is_the_salesforce_format_without_grease() -> None:
    ch = _hello(
        ciphers=(0x2A2A, 0x1301, 0xC02F, 0x00FF),
        extensions=(0x3A3A, 0x0000, 0x000A, 0x000B, 0x0010, 0xFAFA),
        supported_groups=(0x4A4A, 0x001D, 0x0017),
        ec_point_formats=(0,),
    )
    # Written out by hand from the definition: decimal, '-'-joined, GREASE dropped.
    expected = "771,4865-49199-255,0-10-11-16,29-23,0"
    assert fp.ja3_string(ch) == expected
    assert fp.ja3(ch) == hashlib.md5(expected.encode()).hexdigest()


def test_grease_set_is_every_value_the_registry_calls_grease() -> None:
    # The fingerprints drop GREASE with a set written out from RFC 8701; it must be exactly
    # the values the registry's definition recognises among all 16-bit values.
    from sensor.tls.registry import is_grease

    assert {v for v in range(0x10000) if is_grease(v)} == fp._GREASE
    assert len(fp._GREASE) == 16


def test_ja3_of_a_hello_without_extensions_keeps_empty_fields() -> None:
    ch = _hello(ciphers=(0x0005, 0x000A), legacy_version=0x0300)
    assert fp.ja3_string(ch) == "768,5-10,,,"


def test_ja3s_string_lists_the_server_extensions_in_wire_order() -> None:
    sh = ServerHello(
        0x0303,
        bytes(32),
        b"",
        0xC030,
        0,
        tuple(Extension(t, b"") for t in (0xFF01, 0x0000, 0x000B)),
        0x0303,
    )
    assert fp.ja3s_string(sh) == "771,49200,65281-0-11"


# ---------------------------------------------------------------------------------- JA4


def _ja4_reference(capture: Path) -> list[dict[str, str]]:
    streams = json.loads(Path(f"{capture}.ja4-python.json").read_text())
    return [s for s in streams if "JA4.1" in s or "JA4S" in s]


def _ja4_cases() -> list[tuple[Path, dict[str, str]]]:
    return [(c, s) for c in JA4_CAPTURES for s in _ja4_reference(c) if "JA4.1" in s]


@pytest.mark.parametrize(
    ("capture", "ref"), _ja4_cases(), ids=lambda v: v.name if isinstance(v, Path) else v["domain"]
)
def test_ja4_variants_equal_the_reference_output(capture: Path, ref: dict[str, str]) -> None:
    (ch,) = [c for c in client_hellos(capture) if c.server_name == ref["domain"]]
    expected = {k: ref[f"{k}.1"] for k in ("JA4", "JA4_r", "JA4_o", "JA4_ro")}
    if capture.name == "tls-non-ascii-alpn.pcapng":
        # The first ALPN value is 0xBA 0xAD. JA4.md: a non-alphanumeric end byte means
        # "first and last characters of the hex representation" = "bd". The reference
        # tools still print "99" (an older revision's rule); we follow the spec.
        assert ch.alpn[0] == b"\xba\xad"
        expected = {k: v.replace("t13d151699_", "t13d1516bd_") for k, v in expected.items()}
    got = {"JA4": fp.ja4(ch), "JA4_r": fp.ja4_r(ch), "JA4_o": fp.ja4_o(ch), "JA4_ro": fp.ja4_ro(ch)}
    assert got == expected


@pytest.mark.parametrize("capture", JA4_CAPTURES, ids=lambda p: p.name)
def test_ja4s_equals_the_reference_output(capture: Path) -> None:
    refs = [s for s in _ja4_reference(capture) if "JA4S" in s]
    assert refs
    ours = {(fp.ja4s(sh), fp.ja4s_r(sh)) for sh in server_hellos(capture)}
    for ref in refs:
        assert (ref["JA4S"], ref["JA4S_r"]) in ours


def test_ja4_spec_worked_example() -> None:
    # The example of JA4.md, section "Cipher hash" / "Extension hash" / "Raw Output".
    ciphers = (
        0x0A0A,
        0x1301,
        0x1302,
        0x1303,
        0xC02B,
        0xC02F,
        0xC02C,
        0xC030,
        0xCCA9,
        0xCCA8,
        0xC013,
        0xC014,
        0x009C,
        0x009D,
        0x002F,
        0x0035,
    )
    extensions = (
        0x1A1A,
        0x001B,
        0x0000,
        0x0033,
        0x0010,
        0x4469,
        0x0017,
        0x002D,
        0x000D,
        0x0005,
        0x0023,
        0x0012,
        0x002B,
        0xFF01,
        0x000B,
        0x000A,
        0x0015,
        0x2A2A,
    )
    ch = _hello(
        ciphers=ciphers,
        extensions=extensions,
        server_name="example.com",
        alpn=(b"h2", b"http/1.1"),
        supported_versions=(0x3A3A, 0x0304, 0x0303),
        signature_algorithms=(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601),
    )
    assert fp.ja4(ch) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert fp.ja4_o(ch) == "t13d1516h2_acb858a92679_18f69afefd3d"
    assert fp.ja4_ro(ch) == (
        "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,"
        "0035_001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,"
        "0015_0403,0804,0401,0503,0805,0501,0806,0601"
    )
    # Without signature algorithms the c string ends without an underscore (same spec).
    no_sigalgs = _hello(ciphers=ciphers, extensions=extensions)
    assert fp.ja4(no_sigalgs).endswith("_6d807ffa2a79")


@pytest.mark.parametrize(
    ("value", "chars"),
    [  # JA4.md "ALPN Extension Value", every example it gives
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h", "hh"),
        (b"", "00"),
        (None, "00"),
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
    ],
)
def test_alpn_characters_follow_the_spec_examples(value: bytes | None, chars: str) -> None:
    assert fp.alpn_chars(value) == chars


@pytest.mark.parametrize(
    ("legacy", "supported", "version"),
    [
        (0x0303, (0x0A0A, 0x0304, 0x0303), "13"),  # GREASE ignored, highest wins
        (0x0303, (0x0303, 0x0304), "13"),  # order does not matter
        (0x0303, (0xDADA,), "12"),  # only GREASE: as if absent, legacy version
        (0x0301, (), "10"),
        (0x0300, (), "s3"),
        (0x0002, (), "s2"),
        (0xFEFD, (), "d2"),
        (0xFEFD, (0xFEFD, 0xFEFC), "d3"),  # DTLS counts down: 0xfefc (1.3) is the newest
        (0x0303, (0x7F17,), "00"),  # a draft version is "unknown"
    ],
)
def test_ja4_version(legacy: int, supported: tuple[int, ...], version: str) -> None:
    ch = _hello(legacy_version=legacy, supported_versions=supported)
    assert fp.ja4(ch, transport="d")[1:3] == version


def test_ja4_counts_cap_at_99_and_empty_lists_hash_to_zeros() -> None:
    many = _hello(ciphers=tuple(range(1, 120)), extensions=tuple(range(0x100, 0x200)))
    assert fp.ja4(many)[4:8] == "9999"
    empty = _hello(ciphers=())
    # No ciphers and no extensions: zeros, not sha256 of the empty string; IP destination.
    assert fp.ja4(empty) == "t12i000000_000000000000_000000000000"
    assert fp.ja4_r(empty) == "t12i000000__"
    only_sni = _hello(extensions=(0x0000,), server_name="a")
    assert fp.ja4(only_sni).split("_")[2] == "000000000000"  # SNI is left out of the hash


def test_ja4_transport_marker() -> None:
    ch = _hello()
    assert fp.ja4(ch, transport="q").startswith("q")
    with pytest.raises(ValueError, match="transport"):
        fp.ja4(ch, transport="x")


def test_ja4s_spec_example() -> None:
    # JA4S.md: extensions 0005,0017,ff01,0000, cipher c030, TLS 1.2, no ALPN.
    sh = ServerHello(
        0x0303,
        bytes(32),
        b"",
        0xC030,
        0,
        tuple(Extension(t, b"") for t in (0x0005, 0x0017, 0xFF01, 0x0000)),
        0x0303,
    )
    assert fp.ja4s(sh) == "t120400_c030_4e8089b08790"
    assert fp.ja4s_r(sh) == "t120400_c030_0005,0017,ff01,0000"


# ---------------------------------------------------------------------------------- JA4X


def _cert_with_names_in_order() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [  # encoded in this order: CN, C, ST, O (JA4X.md's example)
            x509.NameAttribute(NameOID.COMMON_NAME, "example"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "State"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org"),
        ]
    )
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .add_extension(  # 2.5.29.15, 2.5.29.37, 2.5.29.17 in this order
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example")]), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_ja4x_reproduces_the_spec_example() -> None:
    der = _cert_with_names_in_order()
    # JA4X.md: "550403,550406,550408,55040a = 96a6439c8f5c",
    # "551d0f,551d25,551d11 = aae71e8db6d7".
    assert fp.ja4x_r(der) == (
        "550403,550406,550408,55040a_550403,550406,550408,55040a_551d0f,551d25,551d11"
    )
    assert fp.ja4x(der) == "96a6439c8f5c_96a6439c8f5c_aae71e8db6d7"


def test_ja4x_needs_only_the_structure() -> None:
    der = _cert_with_names_in_order()
    # An invalid UTF8String in the names makes cryptography refuse them; JA4X reads OIDs.
    broken = der.replace(b"\x0c\x07example", b"\x0c\x07\xff\xfe\xfd\xfc\xfb\xfa\xf9")
    assert broken != der
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(broken).subject  # noqa: B018
    assert fp.ja4x(broken) == fp.ja4x(der)


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x03\x02\x01\x01", b"garbage" * 10])
def test_ja4x_of_garbage_is_none(der: bytes) -> None:
    assert fp.ja4x(der) is None
    assert fp.ja4x_r(der) is None


def test_ja4x_of_a_certificate_without_extensions_has_a_zero_extension_hash() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cn_hash = hashlib.sha256(b"550403").hexdigest()[:12]
    assert fp.ja4x(cert.public_bytes(serialization.Encoding.DER)) == (
        f"{cn_hash}_{cn_hash}_000000000000"
    )


def test_ja4x_of_real_certificates_equals_the_reference_output() -> None:
    from tests.sensor.test_x509 import certificates_in

    checked = 0
    for capture in JA4_CAPTURES:
        reference = {
            v for s in _ja4_reference_all(capture) for k, v in s.items() if k.startswith("JA4X.")
        }
        for der, _entry in certificates_in(capture):
            assert fp.ja4x(der) in reference
            checked += 1
    assert checked >= 2  # the leaves of badcurveball.pcap and tls-alpn-h2.pcap


def _ja4_reference_all(capture: Path) -> list[dict[str, str]]:
    return json.loads(Path(f"{capture}.ja4-python.json").read_text())  # type: ignore[no-any-return]

"""Handshake message bodies from real OpenSSL handshakes (Python ``ssl`` in memory)."""

from __future__ import annotations

import contextlib
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.errors import HandshakeError
from sensor.tls import messages as m
from sensor.tls import registry
from sensor.tls.handshake import (
    parse_certificate,
    parse_client_hello,
    parse_server_hello,
    parse_server_key_exchange,
    parse_sslv2_client_hello,
    parse_sslv2_server_hello,
)
from sensor.tls.records import TlsRecordParser
from tests.sensor.tls.handshakes import HandshakeBytes, make_handshake, resume_handshake


def messages(data: bytes) -> dict[int, bytes]:
    """Body of the first handshake message of each type in one direction."""
    out: dict[int, bytes] = {}
    for item in TlsRecordParser().feed(data):
        if isinstance(item, m.HandshakeMessage):
            out.setdefault(item.msg_type, item.body)
    return out


def suite_code(openssl_name: str) -> int:
    """IANA code of a suite OpenSSL names, from OpenSSL itself."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    for info in ctx.get_ciphers():
        if info["name"] == openssl_name:
            return int(info["id"]) & 0xFFFF
    raise LookupError(openssl_name)


@pytest.fixture(scope="module")
def tls12() -> HandshakeBytes:
    return make_handshake(
        "1.2",
        sni="www.example.org",
        alpn=["h2", "http/1.1"],
        ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:AES128-SHA",
    )


@pytest.fixture(scope="module")
def tls13() -> HandshakeBytes:
    return make_handshake("1.3", sni="tls13.example", alpn=["http/1.1"])


def test_client_hello_tls12(tls12: HandshakeBytes) -> None:
    hello = parse_client_hello(messages(tls12.client_to_server)[m.CLIENT_HELLO])
    assert hello.server_name == "www.example.org"
    assert hello.alpn == (b"h2", b"http/1.1")
    real = [c for c in hello.cipher_suites if c != 0x00FF]  # OpenSSL adds the SCSV
    assert real == [0xC02F, 0xC030, 0x002F]
    assert hello.legacy_version == 0x0303 and len(hello.random) == 32
    assert hello.supported_versions == ()  # a 1.2-only client does not send it
    assert {29, 23} <= set(hello.supported_groups)  # x25519, secp256r1
    assert 0 in hello.ec_point_formats
    assert {0x0804, 0x0401} <= set(hello.signature_algorithms)
    assert hello.compression_methods == (0,)


def test_client_hello_tls13(tls13: HandshakeBytes) -> None:
    hello = parse_client_hello(messages(tls13.client_to_server)[m.CLIENT_HELLO])
    assert hello.server_name == "tls13.example"
    assert hello.alpn == (b"http/1.1",)
    assert hello.supported_versions == (0x0304,)
    assert {0x1301, 0x1302, 0x1303} <= set(hello.cipher_suites)
    assert len(hello.session_id) == 32  # RFC 8446 D.4 middlebox compatibility mode


def test_client_hello_without_sni() -> None:
    hs = make_handshake("1.2", sni=None)
    hello = parse_client_hello(messages(hs.client_to_server)[m.CLIENT_HELLO])
    assert hello.server_name is None and 0 not in [e.type for e in hello.extensions]


def test_server_hello_tls12(tls12: HandshakeBytes) -> None:
    hello = parse_server_hello(messages(tls12.server_to_client)[m.SERVER_HELLO])
    assert hello.cipher_suite == suite_code(tls12.cipher) == 0xC02F
    assert hello.alpn == b"h2"
    assert hello.selected_version == hello.legacy_version == 0x0303
    assert not hello.is_hello_retry_request


def test_server_hello_tls13(tls13: HandshakeBytes) -> None:
    hello = parse_server_hello(messages(tls13.server_to_client)[m.SERVER_HELLO])
    assert hello.legacy_version == 0x0303 and hello.selected_version == 0x0304
    assert hello.cipher_suite == suite_code(tls13.cipher)
    assert hello.alpn is None  # ALPN travels in EncryptedExtensions in 1.3


def test_hello_retry_request_detected() -> None:
    hs = make_handshake("1.3", ecdh_curve="secp384r1")
    hrr = parse_server_hello(messages(hs.server_to_client)[m.SERVER_HELLO])
    assert hrr.is_hello_retry_request and hrr.selected_version == 0x0304


def test_certificate_tls12(tls12: HandshakeBytes) -> None:
    cert = parse_certificate(messages(tls12.server_to_client)[m.CERTIFICATE], tls13=False)
    assert list(cert.certificates) == tls12.server_chain_der


def test_client_certificate_tls12() -> None:
    hs = make_handshake("1.2", client_cert=True)
    cert = parse_certificate(messages(hs.client_to_server)[m.CERTIFICATE], tls13=False)
    assert list(cert.certificates) == hs.client_chain_der


def test_certificate_tls13_layout(tls13: HandshakeBytes) -> None:
    # The 1.3 Certificate is encrypted on the wire; build one from the real DER by the
    # RFC 8446 4.4.2 layout: context, then entries each followed by their extensions.
    leaf, ca = tls13.server_chain_der
    sct_ext = (18).to_bytes(2, "big") + (3).to_bytes(2, "big") + b"abc"

    def entry(der: bytes, ext: bytes) -> bytes:
        return len(der).to_bytes(3, "big") + der + len(ext).to_bytes(2, "big") + ext

    entries = entry(leaf, sct_ext) + entry(ca, b"")
    body = b"\x02\xab\xcd" + len(entries).to_bytes(3, "big") + entries
    assert parse_certificate(body, tls13=True).certificates == (leaf, ca)
    with pytest.raises(HandshakeError):
        parse_certificate(body, tls13=False)


@pytest.mark.parametrize(("curve", "group"), [(None, 29), ("secp384r1", 24)])
def test_server_key_exchange_ecdhe(curve: str | None, group: int) -> None:
    hs = make_handshake("1.2", ciphers="ECDHE-RSA-AES128-GCM-SHA256", ecdh_curve=curve)
    suite = parse_server_hello(messages(hs.server_to_client)[m.SERVER_HELLO]).cipher_suite
    ske = messages(hs.server_to_client)[m.SERVER_KEY_EXCHANGE]
    kx = registry.cipher_suite(suite).kx
    assert kx == "ECDHE"
    assert parse_server_key_exchange(ske, key_exchange=kx) == m.ServerKeyExchange(named_group=group)


@pytest.mark.parametrize("bits", [1024, 2048])
def test_server_key_exchange_dhe(bits: int) -> None:
    hs = make_handshake("1.2", ciphers="DHE-RSA-AES128-GCM-SHA256", dh_bits=bits)
    msgs = messages(hs.server_to_client)
    kx = registry.cipher_suite(parse_server_hello(msgs[m.SERVER_HELLO]).cipher_suite).kx
    assert kx == "DHE"
    ske = parse_server_key_exchange(msgs[m.SERVER_KEY_EXCHANGE], key_exchange=kx)
    assert ske == m.ServerKeyExchange(dh_prime_bits=bits)


def test_server_key_exchange_other_exchange_is_empty(tls12: HandshakeBytes) -> None:
    ske = messages(tls12.server_to_client)[m.SERVER_KEY_EXCHANGE]
    assert parse_server_key_exchange(ske, key_exchange="RSA") == m.ServerKeyExchange()


def test_resumption_echoes_the_session_id() -> None:
    again = resume_handshake(make_handshake("1.2"))
    assert again.session_reused
    client = parse_client_hello(messages(again.client_to_server)[m.CLIENT_HELLO])
    server = parse_server_hello(messages(again.server_to_client)[m.SERVER_HELLO])
    assert client.session_id and server.session_id == client.session_id  # RFC 5077 3.4
    assert 35 in [e.type for e in client.extensions]  # session_ticket


# ---- malformed bodies --------------------------------------------------------------------


def test_every_truncation_of_a_client_hello_raises_but_two(tls12: HandshakeBytes) -> None:
    body = messages(tls12.client_to_server)[m.CLIENT_HELLO]
    hello = parse_client_hello(body)
    assert hello.irregularities == ()
    # The one legal prefix ends right before the extensions block (RFC 5246 7.4.1.2).
    legal = 2 + 32 + 1 + len(hello.session_id) + 2 + 2 * len(hello.cipher_suites) + 1 + 1
    for cut in range(len(body)):
        if cut in (legal, legal + 1):
            short = parse_client_hello(body[:cut])
            assert short.extensions == () and short.server_name is None
            assert short.cipher_suites == hello.cipher_suites
            # One byte more cannot be an extensions block: tolerated, but said.
            assert len(short.irregularities) == cut - legal
            continue
        with pytest.raises(HandshakeError):
            parse_client_hello(body[:cut])


def test_trailing_garbage_is_rejected(tls12: HandshakeBytes) -> None:
    msgs = messages(tls12.client_to_server)
    with pytest.raises(HandshakeError, match="trailing"):
        parse_client_hello(msgs[m.CLIENT_HELLO] + b"\x00")
    with pytest.raises(HandshakeError, match="trailing"):
        parse_server_hello(messages(tls12.server_to_client)[m.SERVER_HELLO] + b"\x00\x00")
    cert = messages(tls12.server_to_client)[m.CERTIFICATE]
    with pytest.raises(HandshakeError, match="trailing"):
        parse_certificate(cert + b"\x00", tls13=False)


def test_server_key_exchange_truncated(tls12: HandshakeBytes) -> None:
    ske = messages(tls12.server_to_client)[m.SERVER_KEY_EXCHANGE]
    with pytest.raises(HandshakeError, match="truncated"):
        parse_server_key_exchange(ske[:10], key_exchange="ECDHE")
    with pytest.raises(HandshakeError):
        parse_server_key_exchange(ske[:10], key_exchange="DHE")


def test_non_ascii_server_name_is_kept_visible(tls12: HandshakeBytes) -> None:
    body = messages(tls12.client_to_server)[m.CLIENT_HELLO]
    odd = body.replace(b"www.example.org", b"www.exampl\xe9.org")
    assert parse_client_hello(odd).server_name == "www.exampl\\xe9.org"


def test_sni_length_mismatch(tls12: HandshakeBytes) -> None:
    body = messages(tls12.client_to_server)[m.CLIENT_HELLO]
    name = b"www.example.org"
    i = body.index(name)
    # host_name length says one byte more than there is
    bad = body[: i - 2] + (len(name) + 1).to_bytes(2, "big") + body[i:]
    with pytest.raises(HandshakeError, match="server_name"):
        parse_client_hello(bad)


def test_sslv2_parsers_reject_bad_lengths() -> None:
    with pytest.raises(HandshakeError, match="cipher_specs_length"):
        parse_sslv2_client_hello(b"\x00\x02\x00\x04\x00\x00\x00\x10" + bytes(20))
    with pytest.raises(HandshakeError, match="truncated"):
        parse_sslv2_server_hello(b"\x00\x01\x00\x02\x01\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["DHE", "ECDHE", "DHE_PSK", "ECDHE_PSK", "RSA"]))
def test_random_bodies_only_raise_handshake_errors(body: bytes, kx: str) -> None:
    for parse in (
        parse_client_hello,
        parse_server_hello,
        lambda b: parse_certificate(b, tls13=False),
        lambda b: parse_certificate(b, tls13=True),
        lambda b: parse_server_key_exchange(b, key_exchange=kx),
        parse_sslv2_client_hello,
        parse_sslv2_server_hello,
    ):
        with contextlib.suppress(HandshakeError):
            parse(body)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_client_hello_body_only_raises_handshake_errors(data: st.DataObject) -> None:
    body = bytearray(_CH_BODY)
    for _ in range(data.draw(st.integers(1, 6))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(HandshakeError):
        parse_client_hello(bytes(body))


_CH_BODY = messages(make_handshake("1.3", alpn=["h2"], sni="x.example").client_to_server)[
    m.CLIENT_HELLO
]

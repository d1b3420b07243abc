"""The record layer on real byte streams: handshakes made in memory by OpenSSL through
Python's ``ssl`` module, and the SSLv2 capture from Zeek's test traces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.errors import HandshakeError, ParseError, TlsRecordError
from sensor.tls import messages as m
from sensor.tls.handshake import parse_server_hello, parse_sslv2_server_hello
from sensor.tls.records import (
    SSLV2_RECORD,
    SSLV2_SERVER_HELLO,
    TlsRecordParser,
    looks_like_tls_start,
)
from tests.sensor.tls.handshakes import (
    HandshakeBytes,
    make_handshake,
    resume_handshake,
    tcp_streams_from_capture,
)

DATA = Path(__file__).resolve().parents[2] / "data"


def kinds(items: list[m.TlsItem]) -> list[object]:
    """Items reduced to what a reader compares: handshake types, CCS, alerts, records."""
    out: list[object] = []
    for item in items:
        if isinstance(item, m.HandshakeMessage):
            out.append(item.msg_type)
        elif isinstance(item, m.ChangeCipherSpecMessage):
            out.append("CCS")
        elif isinstance(item, m.EncryptedRecord):
            out.append(f"enc{item.content_type}")
        elif isinstance(item, m.AlertMessage):
            out.append("alert-enc" if item.encrypted else f"alert{item.level}/{item.description}")
        else:
            out.append(type(item).__name__)
    return out


def feed_all(data: bytes, chunks: list[int] | None = None) -> list[m.TlsItem]:
    parser = TlsRecordParser()
    if chunks is None:
        return parser.feed(data)
    items: list[m.TlsItem] = []
    pos = 0
    for size in chunks:
        items += parser.feed(data[pos : pos + size])
        pos += size
    return items + parser.feed(data[pos:])


@pytest.fixture(scope="module")
def tls12() -> HandshakeBytes:
    return make_handshake("1.2", alpn=["h2"], close=True)


@pytest.fixture(scope="module")
def tls13() -> HandshakeBytes:
    return make_handshake("1.3", alpn=["h2"], close=True)


def test_tls12_streams_give_the_handshake_in_order(tls12: HandshakeBytes) -> None:
    c = kinds(feed_all(tls12.client_to_server))
    s = kinds(feed_all(tls12.server_to_client))
    # RFC 5246 7.3 full handshake; app data, then close_notify encrypted after CCS.
    assert c == [m.CLIENT_HELLO, m.CLIENT_KEY_EXCHANGE, "CCS", "enc22", "enc23", "alert-enc"]
    assert s[:5] == [m.SERVER_HELLO, m.CERTIFICATE, m.SERVER_KEY_EXCHANGE,
                     m.SERVER_HELLO_DONE, m.NEW_SESSION_TICKET]  # fmt: skip
    assert s[5:] == ["CCS", "enc22", "enc23", "alert-enc"]


def test_certificate_message_carries_the_chain_we_generated(tls12: HandshakeBytes) -> None:
    from sensor.tls.handshake import parse_certificate

    items = feed_all(tls12.server_to_client)
    cert = next(i for i in items if isinstance(i, m.HandshakeMessage) and i.msg_type == 11)
    assert list(parse_certificate(cert.body, tls13=False).certificates) == tls12.server_chain_der


def test_encrypted_flag_and_record_versions(tls12: HandshakeBytes) -> None:
    parser = TlsRecordParser()
    first = tls12.client_to_server[: 5 + int.from_bytes(tls12.client_to_server[3:5], "big")]
    parser.feed(first)
    assert not parser.encrypted
    parser.feed(tls12.client_to_server[len(first) :])
    assert parser.encrypted
    # OpenSSL sends its first ClientHello record as 0x0301 (RFC 5246 E.1), then 0x0303.
    assert parser.record_versions == {0x0301, 0x0303}


def test_tls13_everything_after_server_hello_is_opaque(tls13: HandshakeBytes) -> None:
    assert kinds(feed_all(tls13.client_to_server))[:2] == [m.CLIENT_HELLO, "CCS"]
    s = kinds(feed_all(tls13.server_to_client))
    assert s[:2] == [m.SERVER_HELLO, "CCS"]
    assert set(s[2:]) == {"enc23"}  # RFC 8446 5.1: protected records are application_data


@pytest.mark.parametrize("which", ["tls12", "tls13"])
@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_every_split_point_gives_the_same_items(
    which: str, direction: str, request: pytest.FixtureRequest
) -> None:
    data: bytes = getattr(request.getfixturevalue(which), direction)
    whole = feed_all(data)
    for cut in range(len(data) + 1):
        assert feed_all(data, [cut]) == whole, cut
    assert feed_all(data, [1] * len(data)) == whole


def test_one_byte_chunks_stay_bounded(tls12: HandshakeBytes) -> None:
    parser = TlsRecordParser(max_record_length=4096, max_handshake_length=8192)
    most = 0
    for i in range(len(tls12.server_to_client)):
        parser.feed(tls12.server_to_client[i : i + 1])
        most = max(most, parser.buffered)
    assert parser.buffered == 0
    assert most <= (5 + 4096) + (4 + 8192)


def test_hello_retry_request_with_set_tls13() -> None:
    # The server only accepts secp384r1, the client's key_share is x25519: RFC 8446 4.1.4.
    hs = make_handshake("1.3", ecdh_curve="secp384r1")
    server, client = TlsRecordParser(), TlsRecordParser()
    hellos = []
    for i in range(len(hs.server_to_client)):
        for item in server.feed(hs.server_to_client[i : i + 1]):
            if isinstance(item, m.HandshakeMessage) and item.msg_type == m.SERVER_HELLO:
                hellos.append(parse_server_hello(item.body))
                server.set_tls13()
                client.set_tls13()
    assert [h.is_hello_retry_request for h in hellos] == [True, False]
    assert hellos[1].selected_version == 0x0304
    c = kinds(client.feed(hs.client_to_server))
    # The client's dummy CCS (RFC 8446 D.4) comes before its second, plaintext ClientHello.
    assert c[:3] == [m.CLIENT_HELLO, "CCS", m.CLIENT_HELLO]
    assert not client.encrypted


def test_without_set_tls13_a_second_client_hello_after_ccs_is_opaque() -> None:
    hs = make_handshake("1.3", ecdh_curve="secp384r1")
    assert kinds(feed_all(hs.client_to_server))[:3] == [m.CLIENT_HELLO, "CCS", "enc22"]


def test_set_encrypted_makes_handshake_records_opaque(tls12: HandshakeBytes) -> None:
    parser = TlsRecordParser()
    parser.set_encrypted()
    items = parser.feed(tls12.server_to_client)
    assert {type(i) for i in items} == {m.EncryptedRecord, m.ChangeCipherSpecMessage,
                                        m.AlertMessage}  # fmt: skip


def test_plaintext_alert_of_a_failed_handshake() -> None:
    hs = make_handshake("1.2", ciphers="AES128-SHA", server_ciphers="ECDHE-RSA-AES256-GCM-SHA384",
                        allow_failure=True)  # fmt: skip
    assert kinds(feed_all(hs.server_to_client)) == ["alert2/40"]  # fatal handshake_failure


def test_resumed_tls12_handshake_has_no_certificate() -> None:
    again = resume_handshake(make_handshake("1.2"))
    assert again.session_reused
    assert kinds(feed_all(again.server_to_client))[:2] == [m.SERVER_HELLO, "CCS"]


def test_client_certificate_flight() -> None:
    hs = make_handshake("1.2", client_cert=True)
    assert kinds(feed_all(hs.client_to_server))[:4] == [
        m.CLIENT_HELLO, m.CERTIFICATE, m.CLIENT_KEY_EXCHANGE, m.CERTIFICATE_VERIFY
    ]  # fmt: skip


# ---- invalid input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x02\x00\x00\x10" + bytes(16),  # major version 2
        b"\x19\x03\x03\x00\x02\x00\x00",  # content type 25 is not TLS over TCP
    ],
)
def test_not_tls_raises_record_error(data: bytes) -> None:
    assert not looks_like_tls_start(data)
    with pytest.raises(TlsRecordError):
        TlsRecordParser().feed(data)


def test_record_longer_than_the_bound(tls12: HandshakeBytes) -> None:
    parser = TlsRecordParser(max_record_length=512)  # the Certificate record is larger
    with pytest.raises(TlsRecordError, match="exceeds 512"):
        parser.feed(tls12.server_to_client)
    with pytest.raises(TlsRecordError):  # a failed parser stays failed
        parser.feed(b"")


def test_handshake_message_longer_than_the_bound(tls12: HandshakeBytes) -> None:
    with pytest.raises(HandshakeError, match="type 11"):
        TlsRecordParser(max_handshake_length=1000).feed(tls12.server_to_client)


def test_handshake_message_interrupted_by_another_record(tls12: HandshakeBytes) -> None:
    data = tls12.client_to_server
    first_len = int.from_bytes(data[3:5], "big")
    # The ClientHello record cut short, a ChangeCipherSpec record spliced into it.
    spliced = data[:3] + (first_len - 10).to_bytes(2, "big") + data[5 : 5 + first_len - 10]
    with pytest.raises(HandshakeError, match="interrupted"):
        TlsRecordParser().feed(spliced + b"\x14\x03\x03\x00\x01\x01")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_parse_errors(data: bytes) -> None:
    parser = TlsRecordParser()
    try:
        parser.feed(data)
        parser.feed(data)
    except ParseError:
        pass
    looks_like_tls_start(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_client_hello_only_raises_parse_errors(data: st.DataObject) -> None:
    original = _HELLO_STREAM
    stream = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(stream) - 1))
        stream[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    parser = TlsRecordParser()
    try:
        parser.feed(bytes(stream[:cut]))
        parser.feed(bytes(stream[cut:]))
    except ParseError:
        pass


_HELLO_STREAM = make_handshake("1.3", alpn=["h2"], sni="mutate.example").client_to_server


# ---- SSLv2 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sslv2() -> tuple[bytes, bytes]:
    return tcp_streams_from_capture(DATA / "zeek" / "ssl-v2.pcap", 443)


def test_sslv2_client_hello_from_zeek_trace(sslv2: tuple[bytes, bytes]) -> None:
    c2s, _ = sslv2
    assert looks_like_tls_start(c2s)
    parser = TlsRecordParser()
    items = parser.feed(c2s)
    assert isinstance(items[0], m.SSLv2ClientHello)
    hello = items[0].client_hello
    assert hello.sslv2_format and hello.legacy_version == 0x0002
    # The trace's client offers the seven SSLv2 CIPHER-KINDs, 3DES first.
    assert hello.cipher_suites[0] == 0x0700C0
    assert set(hello.cipher_suites) == {0x010080, 0x020080, 0x030080, 0x040080, 0x050080,
                                        0x060040, 0x0700C0}  # fmt: skip
    assert len(hello.random) == 16 and hello.session_id == b""
    assert {type(i) for i in items[1:]} == {m.EncryptedRecord}
    assert {i.content_type for i in items[1:] if isinstance(i, m.EncryptedRecord)} == {SSLV2_RECORD}
    assert parser.record_versions == {0x0002}


def test_sslv2_server_hello_from_zeek_trace(sslv2: tuple[bytes, bytes]) -> None:
    from cryptography import x509

    _, s2c = sslv2
    assert looks_like_tls_start(s2c)
    items = TlsRecordParser().feed(s2c)
    first = items[0]
    assert isinstance(first, m.HandshakeMessage) and first.msg_type == SSLV2_SERVER_HELLO
    hello, chain = parse_sslv2_server_hello(first.body)
    assert hello.sslv2_format and hello.selected_version == 0x0002
    assert len(chain.certificates) == 1
    cert = x509.load_der_x509_certificate(chain.certificates[0])
    assert "plesk" in cert.subject.rfc4514_string()


def test_looks_like_tls_start_on_real_starts(tls12: HandshakeBytes, tls13: HandshakeBytes) -> None:
    for hs in (tls12, tls13):
        assert looks_like_tls_start(hs.client_to_server)
        assert looks_like_tls_start(hs.server_to_client)
        assert not looks_like_tls_start(hs.client_to_server[:5])
    assert not looks_like_tls_start(os.urandom(0))


def test_items_before_garbage_in_the_same_chunk_are_kept() -> None:
    # tls_invalid_reads.pcap: a ServerHello record, then a record of content type 170, in
    # one segment. The hello must still reach the session; the error comes with it.
    hello = b"\x16\x03\x01\x00\x08" + b"\x02\x00\x00\x04" + b"\x03\x01\x00\x00"
    parser = TlsRecordParser()
    items, error = parser.feed_until_error(hello + b"\xaa\x03\x01\x00\x01\x00")
    assert [type(i).__name__ for i in items] == ["HandshakeMessage"]
    assert isinstance(error, TlsRecordError) and "content type 170" in str(error)
    with pytest.raises(TlsRecordError):  # and the parser stays failed
        parser.feed(b"\x16")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_feed_raw_gives_what_feed_gives_with_messages_as_pairs(
    version: str, tls12: HandshakeBytes, tls13: HandshakeBytes,
) -> None:
    """The session layer's ``feed_raw``: the same items in the same order, a handshake
    message as its ``(msg_type, body)``, whatever the chunking (here 1, 7 and 300 bytes)."""
    shake = tls12 if version == "1.2" else tls13
    for stream in (shake.client_to_server, shake.server_to_client):
        expected = TlsRecordParser().feed(stream)
        for size in (1, 7, 300):
            parser = TlsRecordParser()
            raw: list[object] = []
            for pos in range(0, len(stream), size):
                items, error = parser.feed_raw(stream[pos : pos + size])
                assert error is None
                raw += items
            assert raw == [(item.msg_type, item.body) if isinstance(item, m.HandshakeMessage)
                           else item for item in expected]
            assert any(isinstance(item, tuple) for item in raw)


def test_encrypted_records_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal EncryptedRecord items are shared, in a table that stays within its bound; the
    items still say each record's own length."""
    from sensor.tls import records

    monkeypatch.setattr(records, "ENCRYPTED_RECORD_ENTRIES", 3)
    records._encrypted_records.clear()
    parser = TlsRecordParser()
    for length in range(1, 11):
        items = parser.feed(bytes([m.APPLICATION_DATA, 3, 3, 0, length]) + b"x" * length)
        assert items == [m.EncryptedRecord(m.APPLICATION_DATA, length)]
        assert len(records._encrypted_records) <= 3

"""The fast hello/certificate parsers agree with the field-by-field ones on every input.

``parse_client_hello`` & co. take an index-arithmetic path and fall back to the checked
parser when anything does not fit. These tests feed real OpenSSL handshake bodies, and
mutations of them (bytes changed, cut, appended), to both and require the same record or
the same error message.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.errors import HandshakeError
from sensor.tls import handshake as hs
from sensor.tls import messages as m
from sensor.tls.records import TlsRecordParser
from tests.sensor.tls.handshakes import HandshakeBytes, make_handshake


def _bodies(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for item in TlsRecordParser().feed(data):
        if isinstance(item, m.HandshakeMessage):
            out.setdefault(item.msg_type, item.body)
    return out


@pytest.fixture(scope="module")
def handshakes() -> list[HandshakeBytes]:
    return [
        make_handshake("1.2", sni="www.example.org", alpn=["h2", "http/1.1"]),
        make_handshake("1.3", sni="tls13.example", alpn=["http/1.1"]),
    ]


def _outcome(parse: Callable[[bytes], object], body: bytes) -> object:
    try:
        return parse(body)
    except HandshakeError as error:
        return ("error", str(error))


def _same(fast: Callable[[bytes], object], checked: Callable[[bytes], object],
          body: bytes) -> None:
    assert _outcome(fast, body) == _outcome(checked, body)


def _parsers(msg_type: int, tls13: bool) -> tuple[Callable[[bytes], object],
                                                   Callable[[bytes], object]]:
    if msg_type == m.CLIENT_HELLO:
        return hs.parse_client_hello, hs._checked_client_hello
    if msg_type == m.SERVER_HELLO:
        return hs.parse_server_hello, hs._checked_server_hello
    return (lambda b: hs.parse_certificate(b, tls13=tls13),
            lambda b: hs._checked_certificate(b, tls13=tls13))


def test_real_bodies_take_the_fast_path_and_agree(handshakes: list[HandshakeBytes]) -> None:
    for shake in handshakes:
        tls13 = shake is handshakes[1]
        client, server = _bodies(shake.client_to_server), _bodies(shake.server_to_client)
        assert hs._fast_client_hello(client[m.CLIENT_HELLO]) is not None
        assert hs._fast_server_hello(server[m.SERVER_HELLO]) is not None
        assert hs.parse_client_hello(client[m.CLIENT_HELLO]) == hs._checked_client_hello(
            client[m.CLIENT_HELLO])
        assert hs.parse_server_hello(server[m.SERVER_HELLO]) == hs._checked_server_hello(
            server[m.SERVER_HELLO])
        if m.CERTIFICATE in server:  # TLS 1.3 sends it encrypted
            body = server[m.CERTIFICATE]
            assert hs._fast_certificate(body, tls13) is not None
            assert hs.parse_certificate(body, tls13=tls13) == hs._checked_certificate(
                body, tls13=tls13)


@settings(max_examples=600, deadline=None)
@given(which=st.sampled_from([(0, m.CLIENT_HELLO), (0, m.SERVER_HELLO), (0, m.CERTIFICATE),
                              (1, m.CLIENT_HELLO), (1, m.SERVER_HELLO)]),
       # Positions near the start hit the length fields; the rest anywhere in the body.
       edits=st.lists(st.tuples(st.one_of(st.integers(0, 90), st.integers(0, 2**16)),
                                st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 2**16), tail=st.binary(max_size=3))
def test_mutated_bodies_give_the_same_record_or_error(
    handshakes: list[HandshakeBytes], which: tuple[int, int],
    edits: list[tuple[int, int]], cut: int, tail: bytes,
) -> None:
    index, msg_type = which
    shake = handshakes[index]
    data = shake.client_to_server if msg_type == m.CLIENT_HELLO else shake.server_to_client
    body = bytearray(_bodies(data)[msg_type])
    for position, value in edits:
        body[position % len(body)] = value
    mutated = bytes(body[: len(body) - cut % 8] if cut % 3 == 0 else body) + tail
    fast, checked = _parsers(msg_type, tls13=index == 1)
    _same(fast, checked, mutated)


def _with_random_and_session(body: bytes, seed: int) -> bytes:
    """``body`` (a ClientHello) with another random and a session id of another length."""
    session = bytes([seed]) * (seed % 33)
    old_end = 35 + body[34]
    return body[:2] + bytes([seed]) * 32 + bytes([len(session)]) + session + body[old_end:]


def test_hellos_differing_in_random_and_session_id_parse_alike(
    handshakes: list[HandshakeBytes],
) -> None:
    """A client program sends the same lists on every connection: the parse of what
    follows the session id is reused, and each hello still gets its own random and
    session id, the record the checked parser gives. A hello with a key share (TLS 1.3) is
    not kept: those bytes are never sent again."""
    hs._hello_tails.clear()
    tls12 = _bodies(handshakes[0].client_to_server)[m.CLIENT_HELLO]
    tls13 = _bodies(handshakes[1].client_to_server)[m.CLIENT_HELLO]
    assert any(ext.type == 0x0033 for ext in hs.parse_client_hello(tls13).extensions)
    for seed in range(40):
        for body in (tls12, tls13):
            hello = _with_random_and_session(body, seed)
            parsed = hs.parse_client_hello(hello)
            assert parsed == hs._checked_client_hello(hello)
            assert parsed.random == bytes([seed]) * 32
            assert len(parsed.session_id) == seed % 33
    assert len(hs._hello_tails) == 1  # the TLS 1.2 hello's lists, once


def test_hello_tail_table_is_bounded(monkeypatch: pytest.MonkeyPatch,
                                     handshakes: list[HandshakeBytes]) -> None:
    monkeypatch.setattr(hs, "HELLO_TAIL_ENTRIES", 3)
    hs._hello_tails.clear()
    body = _bodies(handshakes[0].client_to_server)[m.CLIENT_HELLO]
    for sni in range(10):  # ten client programs: ten different lists
        named = body.replace(b"www.example.org", f"www.example.{sni:03d}".encode())
        assert hs.parse_client_hello(named).server_name == f"www.example.{sni:03d}"
        assert len(hs._hello_tails) <= 3

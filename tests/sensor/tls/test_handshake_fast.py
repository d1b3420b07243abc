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


# -- the per-program caches: ServerHello tails, TLS 1.3 hellos, ServerKeyExchange ------------


def _key_share(hello: m.ClientHello) -> bytes:
    return next(ext.data for ext in hello.extensions if ext.type == 0x0033)


def test_tls13_hellos_of_one_client_share_one_parse_and_keep_their_key_shares() -> None:
    """Three real TLS 1.3 handshakes of one client configuration: each hello has its own
    random, session id and key share, and the rest is the same. The first is parsed in
    full and kept without its key share; the next two reuse that parse, and each record
    still equals the checked parser's, its own key share included."""
    hs._masked_tails.clear()
    bodies = [_bodies(make_handshake("1.3", sni="tls13.example", alpn=["h2"]).client_to_server)
              [m.CLIENT_HELLO] for _ in range(3)]
    assert len({_key_share(hs._checked_client_hello(body)) for body in bodies}) == 3
    for body in bodies:
        parsed = hs.parse_client_hello(body)
        assert parsed == hs._checked_client_hello(body)
    assert len(hs._masked_tails) == 1
    assert hs._hello_tails.get(bodies[0][35 + bodies[0][34]:]) is None  # not kept whole
    # Another server name is another entry, with its own name.
    other = bodies[0].replace(b"tls13.example", b"tls13.exampl2")
    assert hs.parse_client_hello(other).server_name == "tls13.exampl2"
    assert hs.parse_client_hello(other) == hs._checked_client_hello(other)
    assert len(hs._masked_tails) == 2


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1,
                      max_size=3),
       in_key_share=st.booleans())
def test_mutated_tls13_hellos_after_a_kept_one_give_the_checked_record_or_error(
    handshakes: list[HandshakeBytes], edits: list[tuple[int, int]], in_key_share: bool,
) -> None:
    """Once a hello's parse is kept without its key share, a hello differing anywhere
    (in the key share or elsewhere) still gives exactly what the checked parser gives."""
    body = _bodies(handshakes[1].client_to_server)[m.CLIENT_HELLO]
    hs.parse_client_hello(body)
    share = _key_share(hs._checked_client_hello(body))
    start = body.index(share)
    mutated = bytearray(body)
    for position, value in edits:
        if in_key_share:
            mutated[start + position % len(share)] = value
        else:
            mutated[position % len(mutated)] = value
    _same(hs.parse_client_hello, hs._checked_client_hello, bytes(mutated))


def test_each_byte_of_a_kept_tls13_hello_changed_gives_the_checked_record_or_error(
    handshakes: list[HandshakeBytes],
) -> None:
    """Every byte of a real TLS 1.3 hello changed in turn, after its parse was kept: each
    one (a length, a suite, an extension type, the key share) gives exactly what the
    checked parser gives."""
    body = _bodies(handshakes[1].client_to_server)[m.CLIENT_HELLO]
    for position in range(len(body)):
        hs.parse_client_hello(body)
        for value in (body[position] ^ 0x01, body[position] ^ 0x80):
            mutated = body[:position] + bytes([value]) + body[position + 1:]
            _same(hs.parse_client_hello, hs._checked_client_hello, mutated)


def _with_server_random_and_session(body: bytes, seed: int) -> bytes:
    """``body`` (a ServerHello) with another random and a session id of another length."""
    session = bytes([seed]) * (seed % 33)
    old_end = 35 + body[34]
    return body[:2] + bytes([seed]) * 32 + bytes([len(session)]) + session + body[old_end:]


def test_server_hellos_differing_in_random_and_session_id_parse_alike(
    handshakes: list[HandshakeBytes],
) -> None:
    """A server answers one client program the same way every time: what follows the
    session id is parsed once. A TLS 1.3 ServerHello carries its key share there, and is
    not kept."""
    hs._server_tails.clear()
    tls12 = _bodies(handshakes[0].server_to_client)[m.SERVER_HELLO]
    tls13 = _bodies(handshakes[1].server_to_client)[m.SERVER_HELLO]
    for seed in range(40):
        for body in (tls12, tls13):
            hello = _with_server_random_and_session(body, seed)
            parsed = hs.parse_server_hello(hello)
            assert parsed == hs._checked_server_hello(hello)
            assert parsed.random == bytes([seed]) * 32
            assert len(parsed.session_id) == seed % 33
            # TLS 1.3 moves the ALPN answer to EncryptedExtensions (RFC 8446 4.3.1).
            assert (parsed.alpn is not None) == (body is tls12)
    assert len(hs._server_tails) == 1  # the TLS 1.2 answer, once
    # The selected version comes from the hello's own legacy_version when the tail has no
    # supported_versions: a kept tail must not carry the first hello's.
    tls11 = b"\x03\x02" + tls12[2:]
    assert hs.parse_server_hello(tls11) == hs._checked_server_hello(tls11)
    assert hs.parse_server_hello(tls11).selected_version == 0x0302


def test_server_hello_tail_table_is_bounded(monkeypatch: pytest.MonkeyPatch,
                                            handshakes: list[HandshakeBytes]) -> None:
    monkeypatch.setattr(hs, "HELLO_TAIL_ENTRIES", 3)
    hs._server_tails.clear()
    body = _bodies(handshakes[0].server_to_client)[m.SERVER_HELLO]
    sid_end = 35 + body[34]
    for suite in range(10):  # ten cipher suites: ten different tails
        other = body[:sid_end] + bytes([0xC0, suite]) + body[sid_end + 2:]
        assert hs.parse_server_hello(other).cipher_suite == 0xC000 | suite
        assert len(hs._server_tails) <= 3


def test_hellos_of_different_programs_share_their_server_name_and_alpn(
    handshakes: list[HandshakeBytes],
) -> None:
    """Two client programs (a TLS 1.2 and a TLS 1.3 one) asking the same server for the
    same protocol: their hellos hold one server-name string and one ALPN tuple, so the
    session keeps each hello as parsed (memory; it used to rebuild such hellos)."""
    from sensor.session import _shared_fields

    hs._hello_tails.clear()
    hs._masked_tails.clear()
    first = make_handshake("1.2", sni="shared.example", alpn=["h2"])
    second = make_handshake("1.3", sni="shared.example", alpn=["h2"])
    a = hs.parse_client_hello(_bodies(first.client_to_server)[m.CLIENT_HELLO])
    b = hs.parse_client_hello(_bodies(second.client_to_server)[m.CLIENT_HELLO])
    assert a.cipher_suites != b.cipher_suites  # two programs' hellos
    assert a.server_name == "shared.example" and a.server_name is b.server_name
    assert a.alpn == (b"h2",) and a.alpn is b.alpn
    assert _shared_fields(a) is a and _shared_fields(b) is b


def _ske_body(shake: HandshakeBytes) -> bytes:
    return _bodies(shake.server_to_client)[m.SERVER_KEY_EXCHANGE]


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 255)), max_size=3),
       cut=st.integers(0, 80), kx=st.sampled_from(["ECDHE", "ECDHE_PSK", "DHE", "RSA"]))
def test_mutated_server_key_exchanges_give_the_checked_record_or_error(
    handshakes: list[HandshakeBytes], edits: list[tuple[int, int]], cut: int, kx: str,
) -> None:
    """The in-place reading of an ECDHE named-curve ServerKeyExchange agrees with the
    field-by-field one on a real body (OpenSSL, TLS 1.2) and its mutations and cuts."""
    body = bytearray(_ske_body(handshakes[0]))
    for position, value in edits:
        body[position] = value
    mutated = bytes(body[: max(len(body) - cut, 0)] if cut < 70 else body[: cut - 70])
    _same(lambda b: hs.parse_server_key_exchange(b, key_exchange=kx),
          lambda b: hs._checked_server_key_exchange(b, kx), mutated)


def test_named_group_table_is_bounded(monkeypatch: pytest.MonkeyPatch,
                                      handshakes: list[HandshakeBytes]) -> None:
    """ServerKeyExchange records are shared by named group, in a bounded table; each
    body still gives its own group."""
    monkeypatch.setattr(hs, "NAMED_GROUP_EXCHANGES", 3)
    hs._named_group_exchanges.clear()
    body = _ske_body(handshakes[0])
    for group in range(10):
        named = body[:1] + group.to_bytes(2, "big") + body[3:]
        assert hs.parse_server_key_exchange(named, key_exchange="ECDHE").named_group == group
        assert len(hs._named_group_exchanges) <= 3

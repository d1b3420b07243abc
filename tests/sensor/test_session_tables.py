"""TlsSession on real handshakes (OpenSSL through ``ssl.MemoryBIO``): what it records does
not depend on the shared tables it keeps for speed and memory."""

from __future__ import annotations

import pytest

from sensor import session as s
from sensor.session import Side, TlsSession
from sensor.tls.records import TlsRecordParser
from tests.sensor.tls.handshakes import HandshakeBytes, make_handshake


def _session(shake: HandshakeBytes) -> TlsSession:
    session = TlsSession()
    session.feed(Side.CLIENT, shake.client_to_server, 1.0)
    session.feed(Side.SERVER, shake.server_to_client, 2.0)
    session.close("capture_end")
    return session


@pytest.fixture(scope="module")
def shakes() -> list[HandshakeBytes]:
    return [make_handshake("1.2", alpn=["h2"]), make_handshake("1.3", alpn=["h2"])]


def test_record_versions_are_those_each_direction_used(shakes: list[HandshakeBytes]) -> None:
    """The record-layer versions of both directions (OpenSSL's client starts with a TLS 1.0
    record, RFC 8446 5.1), whether the table of version sets is empty, full or emptied."""
    for shake in shakes:
        client, server = TlsRecordParser(), TlsRecordParser()
        client.feed_until_error(shake.client_to_server)
        server.feed_until_error(shake.server_to_client)
        expected = frozenset(client.record_versions | server.record_versions)
        assert 0x0301 in expected and 0x0303 in expected
        s._record_version_sets.clear()
        assert _session(shake).record.record_versions == expected
        assert _session(shake).record.record_versions == expected  # from the table


def test_record_version_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s, "RECORD_VERSION_SETS", 3)
    s._record_version_sets.clear()
    for minor in range(10):
        versions = s._record_versions((0x0301,), (0x0300 | minor,))
        assert versions == {0x0301, 0x0300 | minor}
        assert len(s._record_version_sets) <= 3

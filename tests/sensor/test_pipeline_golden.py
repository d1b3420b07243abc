"""The sensor against independent tools on real captures (tests/data, see its README).

tshark (with cryptography for certificates) saw every handshake message of these captures;
Zeek's ssl.log and the JA4 reference implementation saw some. Our events must say the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.events import HandshakeEvent
from tests.support import (
    DATA,
    captures,
    endpoint,
    handshakes,
    read_frames,
    run_sensor,
    tshark_view,
    tuple_of,
)

TSHARK_VERSIONS = {
    "TLSv1.0": "1.0",
    "TLSv1.1": "1.1",
    "TLSv1.2": "1.2",
    "TLSv1.3": "1.3",
    "SSLv3": "3.0",
    "SSLv2": "2.0",
}


def by_tuple(events: list[HandshakeEvent]) -> dict[Any, HandshakeEvent]:
    table: dict[Any, HandshakeEvent] = {}
    for event in events:
        table.setdefault(tuple_of(event), event)
    return table


def tshark_handshakes(capture: Path) -> dict[Any, dict[str, list[dict[str, Any]]]]:
    """tshark's messages grouped by (client, server) endpoint pair and message type."""
    grouped: dict[Any, dict[str, list[dict[str, Any]]]] = {}
    view = tshark_view(capture)
    for msg in view["handshake_messages"]:  # type: ignore[attr-defined]
        if msg.get("transport") != "tcp":
            continue
        src, dst = endpoint(msg["src"]), endpoint(msg["dst"])
        client_to_server = msg["msg"] == "ClientHello" or (
            msg["msg"] == "Certificate" and msg.get("from_client")
        )
        key = (src, dst) if client_to_server else (dst, src)
        grouped.setdefault(key, {}).setdefault(msg["msg"], []).append(msg)
    return grouped


TSHARK_CAPTURES = [c for c in captures() if c.with_name(c.name + ".tshark.json").exists()]

# Where tshark 4.0 reads the bytes wrong, checked by hand against the RFCs (see
# tests/sensor/test_corpus_cases.py, which asserts what the bytes say instead):
# (capture, client port) -> fields not compared with tshark.
TSHARK_MISREADS: dict[tuple[str, int], frozenset[str]] = {
    # Its draft-14 ServerHello dissector expects a session id: "length 192" overruns the
    # message and the cipher suite becomes 0xacad (the Suricata test says TLS 1.3 draft).
    ("tls13-draft14.pcap", 54049): frozenset({"ja3s", "cipher"}),
    # Its JA3 string stops at the malformed compression list ("769,4-5-...-37,").
    ("tls_invalid_reads.pcap", 3967): frozenset({"ja3"}),
    # A ClientHello with garbage after the SNI ([Malformed Packet]): we report no
    # handshake for it, only a tls_handshake_error anomaly.
    ("tls_invalid_reads.pcap", 58552): frozenset({"handshake"}),
}


def match(ours: dict[Any, HandshakeEvent], key: Any) -> HandshakeEvent | None:
    """Our event for tshark's endpoint pair; tshark names a tunnelled connection by the
    outer addresses (vxlan.pcap, GTP-U captures), so fall back to the port pair."""
    if key in ours:
        return ours[key]
    ports = (key[0][1], key[1][1])
    same = [e for k, e in ours.items() if (k[0][1], k[1][1]) == ports]
    return same[0] if len(same) == 1 else None


@pytest.mark.parametrize("capture", TSHARK_CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_handshake_tshark_sees_is_reported_the_same(capture: Path) -> None:
    ours = by_tuple(handshakes(run_sensor(read_frames(capture))))
    for key, messages in tshark_handshakes(capture).items():
        skip = TSHARK_MISREADS.get((capture.name, key[0][1]), frozenset())
        if "handshake" in skip:
            continue
        found = match(ours, key)
        assert found is not None, f"tshark saw a handshake {key} that we did not report"
        event = found
        hellos = messages.get("ClientHello", [])
        if hellos:
            first = hellos[0]
            assert event.tls.client.server_name == first["sni"]
            if "ja3" not in skip:
                assert event.tls.client.ja3 == first["ja3"]
            ch = event.certwatch.tls.client_hello
            assert ch is not None
            # tshark shows bytes that are not UTF-8 as U+FFFD; we keep them, escaped.
            assert len(ch.alpn) == len(first["alpn"])
            for mine, theirs in zip(ch.alpn, first["alpn"], strict=True):
                assert mine == theirs or ("\ufffd" in theirs and "\\x" in mine)
        server_hellos = messages.get("ServerHello", [])
        if server_hellos and "ja3s" not in skip:
            # JA3S describes the first ServerHello, a HelloRetryRequest if there was one.
            assert event.tls.server.ja3s == server_hellos[0]["ja3s"]
        for sh in server_hellos[-1:]:
            detail = event.certwatch.tls.server_hello
            assert detail is not None
            if "cipher" not in skip:
                assert detail.cipher_suite_code == sh["cipher_suite"][2:]
            selected = sh["selected_version"]
            version = "1.3" if selected.startswith("TLSv1.3") else TSHARK_VERSIONS[selected]
            assert event.tls.version == version
            assert event.tls.next_protocol == ((sh["alpn"] or [None])[0])
        server_certs = [m for m in messages.get("Certificate", []) if not m["from_client"]]
        if server_certs:
            expected = [c["sha256"] for c in server_certs[0]["chain"]]
            assert [c.hash.sha256 for c in event.certwatch.tls.server_chain] == expected
            leaf = server_certs[0]["chain"][0]
            if event.tls.server.x509 is not None and "serial_hex" in leaf:
                assert event.tls.server.x509.serial_number == leaf["serial_hex"]
        client_certs = [m for m in messages.get("Certificate", []) if m["from_client"]]
        if client_certs:
            expected = [c["sha256"] for c in client_certs[0]["chain"]]
            assert [c.hash.sha256 for c in event.certwatch.tls.client_chain] == expected


def zeek_rows(log: Path) -> list[dict[str, str]]:
    fields: list[str] = []
    rows = []
    for line in log.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


ZEEK_VERSIONS = {
    "TLSv10": "1.0",
    "TLSv11": "1.1",
    "TLSv12": "1.2",
    "TLSv13": "1.3",
    "SSLv3": "3.0",
    "SSLv2": "2.0",
}


@pytest.mark.parametrize("log", sorted(DATA.glob("zeek/*.ssl.log")), ids=lambda p: p.name)
def test_zeek_ssl_log_agrees(log: Path) -> None:
    capture = log.with_name(log.name.removesuffix(".ssl.log"))
    ours = by_tuple(handshakes(run_sensor(read_frames(capture))))
    for row in zeek_rows(log):
        key = ((row["id.orig_h"], int(row["id.orig_p"])), (row["id.resp_h"], int(row["id.resp_p"])))
        event = ours[key]
        assert event.tls.version == ZEEK_VERSIONS[row["version"]]
        assert event.tls.cipher == row["cipher"]
        assert (event.tls.client.server_name or "-") == row["server_name"]
        assert event.tls.established == (row["established"] == "T")
        assert event.tls.resumed == (row["resumed"] == "T")
        if row.get("cert_chain_fps", "-") not in ("-", "(empty)"):
            chain = [c.hash.sha256 for c in event.certwatch.tls.server_chain]
            assert chain == row["cert_chain_fps"].split(",")
        if row.get("curve", "-") != "-":
            assert event.tls.curve == row["curve"]


@pytest.mark.parametrize(
    "reference", sorted(DATA.glob("ja4/*.ja4-python.json")), ids=lambda p: p.name
)
def test_ja4_matches_the_reference_implementation(reference: Path) -> None:
    capture = reference.with_name(reference.name.removesuffix(".ja4-python.json"))
    ours = by_tuple(handshakes(run_sensor(read_frames(capture))))
    checked = 0
    for stream in json.loads(reference.read_text()):
        if "JA4.1" not in stream:
            continue
        key = (
            (endpoint(f"{stream['src']}:{stream['srcport']}")),
            (endpoint(f"{stream['dst']}:{stream['dstport']}")),
        )
        hello = ours[key].certwatch.tls.client_hello
        assert hello is not None
        expected_ja4, expected_raw = stream["JA4.1"], stream["JA4_r.1"]
        if hello.alpn and not (hello.alpn[0][0].isalnum() and hello.alpn[0][-1].isalnum()):
            # The reference implementations print "99" for a first ALPN value that is not
            # alphanumeric; the JA4 specification (technical_details/JA4.md, "ALPN
            # Extension Value") says to use the first and last characters of its hex form
            # instead: 0xba 0xad -> "bd" (tls-non-ascii-alpn.pcapng).
            expected_ja4 = expected_ja4[:8] + "bd" + expected_ja4[10:]
            expected_raw = expected_raw[:8] + "bd" + expected_raw[10:]
        assert hello.ja4 == expected_ja4
        assert hello.ja4_r == expected_raw
        checked += 1
    assert checked > 0

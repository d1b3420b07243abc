"""The readers of other tools' expected output, and the pairing of their handshakes with ours.

Inputs are the real expected files beside the captures in ``tests/data`` (Zeek baselines,
nDPI's flow lines, the JA4 reference's JSON, the tshark oracle), so these run without
``../shared/corpus``. Where two independent tools describe the same handshake, their
normalised values must be equal: that proves the normalisation, not just the parsing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sensor.config import SensorConfig
from tools.compare import Ours, Report, compare_capture
from tools.corpus_check import CatalogEntry, check_capture, load_references, main
from tools.expected import (
    Expected,
    ja4_handshakes,
    ndpi_handshakes,
    norm_cipher,
    norm_ip,
    norm_serial,
    norm_version,
    parse_zeek_log,
    split_endpoint,
    suricata_handshakes,
    tshark_handshakes,
    unordered,
    zeek_handshakes,
    zeek_serials,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def zeek(name: str) -> list[Expected]:
    ssl = parse_zeek_log((DATA / "zeek" / f"{name}.ssl.log").read_text())
    x509 = parse_zeek_log((DATA / "zeek" / f"{name}.x509.log").read_text())
    return zeek_handshakes(ssl, zeek_serials([x509]))


def tshark(path: str) -> list[Expected]:
    return tshark_handshakes(json.loads((DATA / f"{path}.tshark.json").read_text()))


def pair(record: Expected) -> tuple[tuple[str, int], tuple[str, int]]:
    assert record.key is not None
    return unordered(record.key)


def only(records: list[Expected]) -> Expected:
    assert len(records) == 1, records
    return records[0]


# -- normalisation -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("TLSv12", "tls1.2"),  # Zeek
        ("TLSv10", "tls1.0"),
        ("TLSv13-draft23", "tls1.3"),
        ("TLSv1.2", "tls1.2"),  # tshark, nDPI
        ("TLSv1.3-exp-0xfb1a", "tls1.3"),
        ("TLSv1.3 (Fizz)", "tls1.3"),
        ("TLSv1", "tls1.0"),  # nDPI, Suricata
        ("TLS 1.2", "tls1.2"),  # Suricata
        ("TLS 1.3 draft-<16", "tls1.3"),
        ("SSLv3", "ssl3.0"),
        ("SSLv2", "ssl2.0"),
        ("DTLSv12", "dtls1.2"),
        ("-", None),
    ],
)
def test_versions_of_every_tool_meet_in_one_form(text: str, canonical: str | None) -> None:
    assert norm_version(text) == canonical


def test_serials_compare_as_numbers_whatever_the_notation() -> None:
    # DER keeps a leading 00 for positive serials with the high bit set; tshark strips it.
    assert norm_serial("00:8A:07:E0:8D:4A:B5:0A:7B") == norm_serial("8a07e08d4ab50a7b")
    assert norm_serial("01") == "1"
    assert norm_serial("32") == "32"


def test_addresses_and_endpoints_normalise() -> None:
    assert norm_ip("[2001:DB8:0:0::1]") == "2001:db8::1"
    # tshark prints IPv6 endpoints without brackets: the port follows the last colon.
    assert split_endpoint("2001:4998:ef83:14:8000::100d:64034") == (
        "2001:4998:ef83:14:8000::100d", 64034)
    assert split_endpoint("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert split_endpoint("10.0.0.1:25") == ("10.0.0.1", 25)


def test_cipher_codes_and_names() -> None:
    assert norm_cipher("0xC02F") == "0xc02f"
    assert norm_cipher("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256") == (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")


# -- Zeek ----------------------------------------------------------------------------------

def test_zeek_tls12_log_is_one_handshake_with_its_tuple_version_cipher_and_leaf() -> None:
    record = only(zeek("tls1.2.pcap"))
    assert record.key == ("10.0.0.80", 56637, "68.233.76.12", 443)
    assert record.transport == "tcp"
    assert record.values["version"] == "tls1.2"
    assert record.values["cipher"] == "TLS_RSA_WITH_RC4_128_MD5"
    assert record.values["leaf_sha256"].startswith("95cb443934beda97")
    # the serial is joined in from x509.log through the leaf's fingerprint
    assert record.values["serial"] == "99FAA8037A4EB2FAEF84EB5E55D5B8C8"
    assert "sni" not in record.values  # "-" in the log: Zeek saw no SNI


def test_zeek_tls11_log_says_tls11() -> None:
    assert only(zeek("tls1_1.pcap")).values["version"] == "tls1.1"


def test_zeek_log_header_controls_parsing() -> None:
    text = (
        "#separator \\x7c\n#set_separator|,\n#empty_field|(empty)\n#unset_field|-\n"
        "#path|ssl\n#fields|id.orig_h|id.orig_p|id.resp_h|id.resp_p|server_name|cipher\n"
        "2001:db8:0::1|1234|2001:db8::2|443|(empty)|-\n"
    )
    log = parse_zeek_log(text)
    assert log.path == "ssl"
    assert log.rows == [{"id.orig_h": "2001:db8:0::1", "id.orig_p": "1234",
                         "id.resp_h": "2001:db8::2", "id.resp_p": "443", "server_name": ""}]
    record = only(zeek_handshakes(log))
    assert record.key == ("2001:db8::1", 1234, "2001:db8::2", 443)
    assert record.values == {}


@pytest.mark.parametrize("name", ["tls1.2.pcap", "tls1_1.pcap", "ecdhe.pcap"])
def test_zeek_and_tshark_agree_on_the_same_capture(name: str) -> None:
    theirs, other = only(zeek(name)), only(tshark(f"zeek/{name}"))
    assert pair(theirs) == pair(other)
    for field in ("version", "leaf_sha256", "serial"):
        assert theirs.values[field] == other.values[field], field


# -- nDPI ----------------------------------------------------------------------------------

def ndpi_curl() -> Expected:
    return only(ndpi_handshakes((DATA / "ndpi/443-curl.pcap.out").read_text()))


def test_ndpi_flow_line_gives_sni_ja4_and_negotiated_values() -> None:
    record = ndpi_curl()
    assert record.key == ("192.168.1.13", 55523, "178.62.197.130", 443)
    assert record.values["sni"] == "www.ntop.org"
    assert record.values["ja4"] == "t12d6707h2_2955a3196ffa_c83f907a73d3"
    assert record.values["version"] == "tls1.2"
    assert record.values["alpn"] == "h2"
    assert record.values["alpn_offered"] == "h2,http/1.1"
    assert record.values["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"


def test_ndpi_and_tshark_agree_on_443_curl() -> None:
    record, other = ndpi_curl(), only(tshark("ndpi/443-curl.pcap"))
    assert record.key == other.key
    for field in ("sni", "ja3", "ja3s", "leaf_sha1", "alpn", "alpn_offered", "version"):
        assert record.values[field] == other.values[field], field
    assert other.values["cipher"] == "0xc02f"  # tshark gives the code, nDPI the name


def test_ndpi_ignores_non_tls_flows_and_client_only_versions() -> None:
    text = (
        "\t1\tUDP [2001:db8::1]:53 <-> [2001:db8::2]:5353 [proto: 5/DNS]"
        "[Hostname/SNI: example.org][ClearText]\n"
        "\t2\tTCP 10.0.0.1:40000 -> 10.0.0.2:443 [proto: 91/TLS][Hostname/SNI: a.example]"
        "[TLSv1.2][JA3C: 0123456789abcdef0123456789abcdef]\n"
    )
    record = only(ndpi_handshakes(text))
    assert record.values == {"sni": "a.example", "ja3": "0123456789abcdef0123456789abcdef"}


# -- JA4 reference -------------------------------------------------------------------------

def test_ja4_reference_record_with_ipv6_endpoints() -> None:
    streams = json.loads((DATA / "ja4/tls-alpn-h2.pcap.ja4-python.json").read_text())
    record = only(ja4_handshakes(streams))
    assert record.key == ("2001:4998:ef83:14:8000::100d", 64034, "2606:4700::6811:d209", 443)
    assert record.values["ja4"] == "t12d4605h2_85626a9a5f7f_aaf95bb78ec9"
    assert record.values["sni"] == only(tshark("ja4/tls-alpn-h2.pcap")).values["sni"]


def test_ja4_reference_covers_every_tls_stream_of_latest() -> None:
    streams = json.loads((DATA / "ja4/latest.pcapng.ja4-python.json").read_text())
    records = ja4_handshakes(streams)
    hellos = [r for r in tshark("ja4/latest.pcapng") if "ja3" in r.values]
    assert {pair(r) for r in records} == {pair(r) for r in hellos if r.transport == "tcp"}


# -- Suricata-verify -----------------------------------------------------------------------

SURICATA_TEST = """
checks:
- filter:
    count: 1
    match:
      event_type: tls
      src_ip: 192.0.2.10
      src_port: 50000
      dest_ip: 198.51.100.20
      dest_port: 443
      tls.sni: www.example.org
      tls.version: TLS 1.2
      tls.serial: 00:8A:07
      tls.fingerprint: AB:CD:EF
      tls.client_alpns[0]: h2
      tls.client_alpns[1]: http/1.1
- filter:
    count: 1
    match:
      event_type: tls
      tls.ja3s.hash: 0123456789abcdef0123456789abcdef
- filter:
    count: 0
    match:
      event_type: tls
      tls.sni: never.example
- filter:
    count: 2
    match:
      event_type: alert
      tls.sni: www.example.org
"""


def test_suricata_checks_on_tls_events_become_handshakes() -> None:
    first, keyless = suricata_handshakes(yaml.safe_load(SURICATA_TEST))
    assert first.key == ("192.0.2.10", 50000, "198.51.100.20", 443)
    assert first.values == {
        "sni": "www.example.org", "version": "tls1.2", "serial": "8A07",
        "leaf_sha1": "abcdef", "alpn_offered": "h2,http/1.1",
    }
    assert keyless.key is None
    assert keyless.values == {"ja3s": "0123456789abcdef0123456789abcdef"}


# -- pairing with our handshakes -----------------------------------------------------------

def test_pairing_counts_agree_disagree_and_missing_per_field_and_tool() -> None:
    reference = ndpi_curl()
    # ours is oriented the other way round (as a mid-stream sensor might) and differs in
    # its JA4 and lacks an ALPN: pairing must still find it
    values = dict(reference.values, ja4="t12d6707h1_2955a3196ffa_c83f907a73d3")
    del values["alpn"]
    ours = Ours(("178.62.197.130", 443, "192.168.1.13", 55523), values)
    report = Report()
    compare_capture("443-curl", [ours], [reference], set(), ["sni", "ja4", "alpn"], report)
    assert report.tally("sni", "ndpi").agree == 1
    assert report.tally("ja4", "ndpi").disagree == 1
    assert report.tally("alpn", "ndpi").missing == 1
    (finding,) = report.disagreements
    assert (finding.field, finding.theirs) == ("ja4", reference.values["ja4"])


def test_tshark_cipher_code_is_compared_with_our_code() -> None:
    reference = only(tshark("ndpi/443-curl.pcap"))
    assert reference.key is not None
    name = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    ours = Ours(reference.key, {"cipher": name, "cipher_code": "0xc02f"})
    report = Report()
    compare_capture("443-curl", [ours], [reference], set(), ["cipher"], report)
    assert report.tally("cipher", "tshark").agree == 1


def test_handshake_we_never_emitted_is_reported_missing() -> None:
    report = Report()
    compare_capture("443-curl", [], [ndpi_curl()], {pair(ndpi_curl())}, ["sni"], report)
    assert report.tally("sni", "ndpi").missing == 1
    assert report.missing[0].field == "handshake"


def test_rows_about_other_captures_in_a_shared_baseline_are_ignored() -> None:
    report = Report()
    compare_capture("other.pcap", [], zeek("tls1.2.pcap"), set(), ["version"], report)
    assert report.tallies == {}


def test_whole_check_on_a_real_capture_agrees_with_ndpi_and_tshark() -> None:
    """End to end over tests/data: the sensor's view of 443-curl against both tools."""
    entry = CatalogEntry("ndpi/443-curl.pcap", "", ("ndpi/443-curl.pcap.out",),
                         "ndpi/443-curl.pcap.tshark.json")
    assert len(load_references(DATA, entry).records) == 2
    report = Report()
    check_capture(DATA, entry, SensorConfig(name="test"), ["sni", "ja3", "ja4", "leaf_sha1"],
                  report)
    assert not report.crashes, report.crashes
    assert report.our_handshakes == 1
    assert report.tally("ja4", "ndpi").agree == 1
    assert report.tally("sni", "tshark").agree == 1
    assert report.tally("leaf_sha1", "tshark").agree == 1
    assert not report.disagreements and not report.missing


def test_tshark_stream_seen_from_the_server_side_only() -> None:
    """A capture that starts mid-handshake: the client is the ServerHello's destination;
    client certificates are not the server's leaf; DTLS/QUIC messages are UDP."""
    oracle = {"handshake_messages": [
        {"transport": "tcp", "stream": "3", "msg": "ServerHello", "src": "192.0.2.1:443",
         "dst": "198.51.100.2:40000", "selected_version": "TLSv1.2", "cipher_suite": "0x002f",
         "alpn": []},
        {"transport": "tcp", "stream": "3", "msg": "Certificate", "from_client": True,
         "src": "198.51.100.2:40000", "dst": "192.0.2.1:443", "chain": [{"sha256": "aa"}]},
        {"transport": "udp", "stream": "0", "msg": "ClientHello", "src": "192.0.2.9:5000",
         "dst": "192.0.2.1:443", "sni": "q.example", "alpn": ["h3"], "cipher_suites": []},
    ]}
    tcp, udp = tshark_handshakes(oracle)
    assert tcp.key == ("198.51.100.2", 40000, "192.0.2.1", 443)
    assert tcp.values == {"version": "tls1.2", "cipher": "0x002f"}
    assert (udp.transport, udp.values["sni"]) == ("udp", "q.example")


def make_corpus(tmp_path: Path, capture: bytes) -> Path:
    """A two-capture corpus: 443-curl with its expected files, and one more capture."""
    (tmp_path / "ndpi").mkdir()
    for name in ("443-curl.pcap", "443-curl.pcap.out", "443-curl.pcap.tshark.json"):
        (tmp_path / "ndpi" / name).write_bytes((DATA / "ndpi" / name).read_bytes())
    (tmp_path / "other.pcap").write_bytes(capture)
    header = "local_path\tnotes\texpected_output_files\ttshark_oracle_json\n"
    (tmp_path / "CATALOG.tsv").write_text(
        header
        + "ndpi/443-curl.pcap\t-\tndpi/443-curl.pcap.out\tndpi/443-curl.pcap.tshark.json\n"
        + "other.pcap\t-\t-\t-\n"
    )
    return tmp_path


def test_cli_reports_exit_0_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = make_corpus(tmp_path, (DATA / "zeek/tls1.2.pcap").read_bytes())
    out = tmp_path / "report.json"
    assert main([str(corpus), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 captures" in text
    assert "ja4" in text and "1/1 (100%)" in text
    report = json.loads(out.read_text())
    assert report["tallies"]["sni"]["ndpi"]["agree"] == 1
    assert report["crashes"] == []


def test_cli_only_filters_captures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = make_corpus(tmp_path, (DATA / "zeek/tls1.2.pcap").read_bytes())
    assert main([str(corpus), "--only", "other"]) == 0
    assert "1 captures" in capsys.readouterr().out


def test_cli_exits_1_and_shows_the_traceback_when_a_capture_breaks_the_sensor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = make_corpus(tmp_path, b"this is not a capture at all")
    assert main([str(corpus)]) == 1
    text = capsys.readouterr().out
    assert "SENSOR CRASHED on 1 captures" in text
    assert "Traceback" in text and "other.pcap" in text
    assert "1 captures" in text  # 443-curl was still checked

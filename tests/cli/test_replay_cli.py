"""``certwatch replay`` and ``certwatch schema export`` as a user runs them."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from schemas.alerts import AlertEvent
from schemas.events import AnomalyEvent, CertificateEvent, HandshakeEvent, TrafficStatsEvent
from schemas.export import EXPORTED_MODELS
from tests.support import DATA

CERTWATCH = [sys.executable, "-m", "certwatch.cli"]


def certwatch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CERTWATCH, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


Document = HandshakeEvent | CertificateEvent | AnomalyEvent | AlertEvent | TrafficStatsEvent


def parse_events(text: str) -> list[Document]:
    models: dict[str, type[Document]] = {
        "certwatch.tls.handshake": HandshakeEvent,
        "certwatch.tls.certificate": CertificateEvent,
        "certwatch.sensor.anomaly": AnomalyEvent,
        "certwatch.traffic.stats": TrafficStatsEvent,
        "certwatch.alerts": AlertEvent,
    }
    events: list[Document] = []
    for line in text.splitlines():
        doc = json.loads(line)
        events.append(models[doc["event"]["dataset"]].model_validate(doc))
    return events


def test_replay_prints_valid_events_and_a_summary() -> None:
    result = certwatch("replay", DATA / "zeek" / "tls1.2.pcap", "--no-alerts")
    assert result.returncode == 0, result.stderr
    events = parse_events(result.stdout)
    assert not any(isinstance(e, AlertEvent) for e in events)
    hs = [e for e in events if isinstance(e, HandshakeEvent)]
    certs = [e for e in events if isinstance(e, CertificateEvent)]
    assert len(hs) == 1 and hs[0].tls.established
    assert hs[0].tls.cipher == "TLS_RSA_WITH_RC4_128_MD5"
    assert len(certs) == 3
    assert "handshakes     1 (TLSv1.2 1)" in result.stderr
    assert "certificates   3 first seen" in result.stderr


def test_events_go_to_a_file_and_gzip_captures_are_read(tmp_path: Path) -> None:
    gz = tmp_path / "capture.pcap.gz"
    gz.write_bytes(gzip.compress((DATA / "zeek" / "tls1_1.pcap").read_bytes()))
    out = tmp_path / "events.jsonl"
    result = certwatch("replay", gz, "--events", out, "--no-alerts")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    hs = [e for e in parse_events(out.read_text()) if isinstance(e, HandshakeEvent)]
    assert [e.tls.version for e in hs] == ["1.1"]


def test_a_file_that_is_not_a_capture_is_one_clear_line_and_status_2(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("<html>not a capture</html>\n")
    result = certwatch("replay", bogus)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "notes.txt" in line]
    assert len(errors) >= 1 and "pcap" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_status_2_but_the_other_captures_are_read(tmp_path: Path) -> None:
    result = certwatch("replay", tmp_path / "absent.pcap", DATA / "zeek" / "tls1.2.pcap")
    assert result.returncode == 2
    assert any(isinstance(e, HandshakeEvent) for e in parse_events(result.stdout))
    assert "absent.pcap" in result.stderr and "Traceback" not in result.stderr


def test_a_truncated_capture_is_read_as_far_as_it_goes(tmp_path: Path) -> None:
    data = (DATA / "zeek" / "tls1.2.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = certwatch("replay", cut)
    assert result.returncode == 0, result.stderr
    assert "cut.pcap: truncated" in result.stderr
    assert any(isinstance(e, HandshakeEvent) for e in parse_events(result.stdout))


def test_schema_export_writes_a_json_schema_per_topic(tmp_path: Path) -> None:
    result = certwatch("schema", "export", tmp_path / "schemas")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert written == sorted(f"{topic}.schema.json" for topic in EXPORTED_MODELS)
    handshake = json.loads((tmp_path / "schemas" / "certwatch.tls.handshake.schema.json")
                           .read_text())
    assert "@timestamp" in handshake["properties"]


def test_logs_are_json_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a capture\n")
    result = certwatch("replay", bogus)
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert logged and logged[0]["log"]["level"] == "error"
    assert "notes.txt" in logged[0]["message"] and "@timestamp" in logged[0]
    text = certwatch("--log-format", "text", "replay", bogus)
    assert any(line.startswith("certwatch: ERROR: ") for line in text.stderr.splitlines())


def test_stats_interval_sets_the_traffic_statistics_or_turns_them_off() -> None:
    sample = DATA / "ja4" / "latest.pcapng"

    def stats(*flags: str) -> list[TrafficStatsEvent]:
        result = certwatch("replay", sample, "--no-alerts", *flags)
        assert result.returncode == 0, result.stderr
        return [e for e in parse_events(result.stdout) if isinstance(e, TrafficStatsEvent)]

    per_minute, per_second, off = stats(), stats("--stats-interval", "1"), stats(
        "--stats-interval", "0")
    assert off == [] and per_minute
    assert len(per_second) > len(per_minute)  # the capture spans more than one second
    assert sum(e.network.bytes for e in per_second) == sum(e.network.bytes for e in per_minute)
    bad = certwatch("replay", sample, "--stats-interval", "0.5")
    assert bad.returncode == 2 and "--stats-interval: 0.5 s" in bad.stderr

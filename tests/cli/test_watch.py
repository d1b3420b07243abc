"""``certwatch watch`` as a user runs it: a child process capturing on lo, real TLS over
127.0.0.1 (Python's ``ssl``, a self-signed certificate made with ``cryptography``), alerts
read from its output while it runs, the summary read after SIGTERM/SIGINT.

Needs CAP_NET_RAW (root) for the capture socket; skipped otherwise. Deadlines only bound the
waiting: nothing here asserts how fast anything happened."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from schemas.alerts import AlertEvent
from schemas.events import HandshakeEvent

ROOT = Path(__file__).resolve().parents[2]
CERT_NAME = "selfsigned.certwatch.test"
SNI = "elsewhere.certwatch.test"  # not in the certificate: cert.hostname_mismatch


def _can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (OSError, AttributeError):
        return False
    return True


pytestmark = [
    pytest.mark.live,
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _can_capture(), reason="needs Linux AF_PACKET and CAP_NET_RAW"),
]


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS 1.2 server presenting a self-signed leaf for CERT_NAME (TLS 1.3 encrypts the
    certificate: a passive sensor sees it only up to TLS 1.2)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CERT_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("watch") / "server.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(path)
    return ctx


@dataclass
class Watch:
    """A ``certwatch watch`` child; stdout and stderr go to files (a pipe could fill up)."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, (
                f"certwatch watch exited {self.process.returncode} waiting for {what}:\n"
                f"{self.err()[-3000:]}")
            assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{self.err()}"
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)


@pytest.fixture
def start_watch(tmp_path: Path) -> Iterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def start(*args: str) -> Watch:
        out, err = tmp_path / f"watch{len(started)}.out", tmp_path / f"watch{len(started)}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "certwatch.cli", "--log-format", "text", "watch",
                 "--interface", "lo", *args],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        watch = Watch(process, out, err)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        if watch.process.poll() is None:
            watch.process.kill()
            watch.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tls_exchange(ctx: ssl.SSLContext, port: int, sni: str) -> None:
    """One TLS connection to a server on ``port`` of 127.0.0.1, one request and answer."""
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(100))

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
              client.wrap_socket(raw, server_hostname=sni) as tls):
            tls.sendall(b"ping")
            assert tls.recv(100) == b"ping"
        server.join(10)


def alerts_in(text: str) -> list[AlertEvent]:
    """The complete alert lines of ``text`` (a line still being written is left out)."""
    return [AlertEvent.model_validate_json(line) for line in text.splitlines(keepends=True)
            if line.endswith("\n")]


def summary_number(stderr: str, label: str) -> int:
    match = re.search(rf"^\s+{label}\s+([\d,]+)", stderr, re.MULTILINE)
    assert match, f"no {label!r} line in the summary:\n{stderr}"
    return int(match.group(1).replace(",", ""))


def kernel_counts(stderr: str) -> tuple[int, int]:
    match = re.search(r"kernel\s+([\d,]+) frames passed the filter; ([\d,]+) dropped", stderr)
    assert match, stderr
    received, dropped = (int(g.replace(",", "")) for g in match.groups())
    return received, dropped


def watching(watch: Watch) -> bool:
    return "watching lo" in watch.err()


def test_self_signed_certificate_alerts_on_stdout_and_sigterm_prints_the_summary(
        start_watch: Callable[..., Watch], server_context: ssl.SSLContext) -> None:
    port = free_port()
    watch = start_watch("--bpf", f"tcp port {port}", "--allow-root")
    watch.wait_for("the capture to start", lambda: watching(watch))

    tls_exchange(server_context, port, SNI)

    def rules() -> set[str]:
        return {alert.rule.name for alert in alerts_in(watch.out())}

    # Alerts are read while the process still runs: they are flushed as they happen.
    watch.wait_for("the alerts", lambda: {"cert.self_signed", "cert.hostname_mismatch"}
                   <= rules())
    alerts = alerts_in(watch.out())
    assert {a.destination.port for a in alerts} == {port}
    self_signed = next(a for a in alerts if a.rule.name == "cert.self_signed")
    assert self_signed.certwatch.certificate is not None
    assert self_signed.certwatch.certificate.x509 is not None
    subject = self_signed.certwatch.certificate.x509.subject
    assert subject is not None and CERT_NAME in subject.common_name
    mismatch = next(a for a in alerts if a.rule.name == "cert.hostname_mismatch")
    assert mismatch.tls.client.server_name == SNI

    assert watch.stop(signal.SIGTERM) == 0, watch.err()
    err = watch.err()
    assert "certwatch watch lo" in err
    assert summary_number(err, "handshakes") == 1
    received, dropped = kernel_counts(err)
    assert received >= 6 and dropped == 0  # SYN, SYN-ACK, ACK, hellos...: each seen once
    alerts_line = re.search(r"^\s+alerts\s+(\d+) \((.*)\)", err, re.MULTILINE)
    assert alerts_line, err
    assert int(alerts_line.group(1)) == len(alerts_in(watch.out()))
    assert "cert.self_signed 1" in alerts_line.group(2)


def test_alerts_file_is_written_as_they_happen_and_sigint_ends_it(
        start_watch: Callable[..., Watch], server_context: ssl.SSLContext,
        tmp_path: Path) -> None:
    port = free_port()
    alerts, events = tmp_path / "alerts.jsonl", tmp_path / "events.jsonl"
    watch = start_watch("--bpf", f"tcp port {port}", "--allow-root",
                        "--alerts", str(alerts), "--events", str(events))
    watch.wait_for("the capture to start", lambda: watching(watch))
    tls_exchange(server_context, port, CERT_NAME)  # the name matches: no hostname alert
    watch.wait_for("an alert in the file",
                   lambda: any(a.rule.name == "cert.self_signed"
                               for a in alerts_in(alerts.read_text())))
    assert watch.out() == ""  # nothing on stdout: alerts went to the file
    assert watch.stop(signal.SIGINT) == 0, watch.err()
    assert "cert.hostname_mismatch" not in {a.rule.name for a in alerts_in(alerts.read_text())}
    handshakes = [HandshakeEvent.model_validate(doc) for doc in map(
        json.loads, events.read_text().splitlines())
        if doc["event"]["dataset"] == "certwatch.tls.handshake"]
    assert [(h.destination.port, h.tls.client.server_name)
            for h in handshakes] == [(port, CERT_NAME)]


@pytest.mark.parametrize("socket_flags", [(), ("--buffer-mb", "4", "--no-promiscuous")])
def test_duration_ends_a_quiet_watch_with_a_summary(
        start_watch: Callable[..., Watch], socket_flags: tuple[str, ...]) -> None:
    watch = start_watch("--bpf", f"tcp port {free_port()}", "--allow-root", "--no-alerts",
                        "--duration", "1", *socket_flags)
    assert watch.process.wait(30) == 0, watch.err()
    err = watch.err()
    assert "certwatch watch lo: 1 capture(s), 0 packets" in err
    assert summary_number(err, "handshakes") == 0
    assert kernel_counts(err) == (0, 0)
    assert watch.out() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for root")
def test_root_without_user_or_allow_root_is_refused(start_watch: Callable[..., Watch]) -> None:
    watch = start_watch("--bpf", "tcp port 9")
    assert watch.process.wait(30) == 2
    assert "refusing to run as root" in watch.err()


def test_a_bad_socket_buffer_is_named(start_watch: Callable[..., Watch]) -> None:
    watch = start_watch("--bpf", "tcp port 9", "--allow-root", "--buffer-mb", "0")
    assert watch.process.wait(30) == 2
    assert "--buffer-mb: 0 MB: give 1 to 4096" in watch.err()


def test_a_bad_filter_is_named(start_watch: Callable[..., Watch]) -> None:
    watch = start_watch("--bpf", "tcp port nosuch", "--allow-root")
    assert watch.process.wait(30) == 2
    assert "lo: bad capture filter 'tcp port nosuch'" in watch.err()

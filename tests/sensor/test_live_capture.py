"""Live capture on lo: real TLS connections over loopback, captured by ``open_live`` and
turned into events by the sensor. Needs CAP_NET_RAW (root); skipped otherwise."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.events import HandshakeEvent
from sensor.capture import LiveCapture, open_live
from sensor.errors import CaptureError
from sensor.pcapfile import Frame
from sensor.sensor import Sensor
from tests.sensor.tls.handshakes import credential


def _can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (OSError, AttributeError):
        return False
    return True


pytestmark = [
    pytest.mark.live,
    pytest.mark.timeout(30),
    pytest.mark.skipif(not _can_capture(), reason="needs Linux AF_PACKET and CAP_NET_RAW"),
]

SYN, ACK = 0x02, 0x10


def tcp_flags(frame: Frame) -> int:
    """Flags of an Ethernet/IPv4/TCP frame as seen on lo."""
    ihl = (frame.data[14] & 0x0F) * 4
    return frame.data[14 + ihl + 13]


def drain(capture: LiveCapture, settle: float = 0.3) -> list[Frame]:
    """Everything the capture holds, waiting until nothing new arrived for ``settle`` s."""
    frames: list[Frame] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle:
        batch = capture.read_available(1000)
        if batch:
            frames += batch
            quiet_since = time.monotonic()
        else:
            time.sleep(0.02)
    return frames


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cred = credential(name="live.example")
    path: Path = tmp_path_factory.mktemp("live") / "server.pem"
    path.write_bytes(cred.chain_pem() + cred.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(path)
    return ctx


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(5)
        yield sock


def serve(listener: socket.socket, ctx: ssl.SSLContext, count: int) -> threading.Thread:
    """Accept ``count`` TLS connections, echo one message on each, close."""

    def run() -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            conn.settimeout(5)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(100))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def tls_client(port: int, sni: str, version: ssl.TLSVersion) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        tls.sendall(b"ping")
        assert tls.recv(100) == b"ping"


def test_three_tls_connections_on_lo_become_three_handshake_events(
    listener: socket.socket, server_context: ssl.SSLContext
) -> None:
    port = listener.getsockname()[1]
    connections = [
        ("one.live.example", ssl.TLSVersion.TLSv1_3),
        ("two.live.example", ssl.TLSVersion.TLSv1_2),
        ("three.live.example", ssl.TLSVersion.TLSv1_3),
    ]
    with open_live("lo", bpf=f"tcp port {port}") as capture:
        started = time.time()
        server = serve(listener, server_context, len(connections))
        for sni, version in connections:
            tls_client(port, sni, version)
        server.join(5)
        assert not server.is_alive()
        frames = drain(capture)
        finished = time.time()
        received, dropped = capture.stats()

    assert frames, "nothing captured"
    # One copy per frame: lo's outgoing duplicates are skipped, so one SYN per connection.
    assert sum(tcp_flags(f) & (SYN | ACK) == SYN for f in frames) == len(connections)
    assert all(f.linktype == 1 for f in frames)
    times = [f.timestamp for f in frames]
    assert started - 0.01 <= times[0] and times[-1] <= finished  # kernel receive times
    assert times == sorted(times)
    assert dropped == 0
    assert received == len(frames)

    sensor = Sensor()
    for frame in frames:
        sensor.process(*frame)
    events = [e for e in sensor.finish() if isinstance(e, HandshakeEvent)]
    by_sni = {e.tls.client.server_name: e for e in events}
    assert len(events) == 3
    assert set(by_sni) == {sni for sni, _ in connections}
    for sni, version in connections:
        event = by_sni[sni]
        assert event.tls.version == ("1.3" if version is ssl.TLSVersion.TLSv1_3 else "1.2")
        assert event.tls.established
        assert event.destination.port == port
    leaf = credential(name="live.example").chain_der[0]
    hashes = by_sni["two.live.example"].tls.server.hash
    assert hashes is not None
    assert hashes.sha256.lower() == hashlib.sha256(leaf).hexdigest()


def test_filter_keeps_other_traffic_out(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with (
        socket.create_server(("127.0.0.1", 0)) as other,
        open_live("lo", bpf=f"tcp port {port}") as capture,
    ):
        for target in (listener, other):
            socket.create_connection(target.getsockname(), timeout=5).close()
        frames = drain(capture, settle=0.2)
    ports = {struct.unpack_from("!HH", f.data, 14 + (f.data[14] & 0x0F) * 4) for f in frames}
    assert frames and all(port in pair for pair in ports)


def test_fanout_group_gives_each_flow_to_one_socket(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    group = 0x4000 + port % 0x4000
    captures = [open_live("lo", bpf=f"tcp port {port}", fanout_group=group) for _ in range(2)]
    try:
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(12)]
        for client in clients:
            conn, _ = listener.accept()
            conn.close()
            client.close()
        per_socket = [drain(c, settle=0.2) for c in captures]
    finally:
        for c in captures:
            c.close()

    def client_ports(frames: list[Frame]) -> set[int]:
        ports = set()
        for f in frames:
            src, dst = struct.unpack_from("!HH", f.data, 14 + (f.data[14] & 0x0F) * 4)
            ports.add(dst if src == port else src)
        return ports

    owned = [client_ports(frames) for frames in per_socket]
    assert owned[0].isdisjoint(owned[1])  # both directions of a flow land in one socket
    assert len(owned[0] | owned[1]) == 12
    assert all(owned), "the hash should spread 12 flows over both sockets"


def test_iteration_blocks_for_frames_and_ends_on_close(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    capture = open_live("lo", bpf=f"tcp port {port}")
    seen: list[Frame] = []

    def consume() -> None:
        seen.extend(capture)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    capture.close()
    thread.join(2)
    assert not thread.is_alive()
    assert seen and tcp_flags(seen[0]) == SYN


async def test_fileno_works_with_the_event_loop(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[Frame] = asyncio.Queue()
    with open_live("lo", bpf=f"tcp port {port}") as capture:

        def on_readable() -> None:
            for frame in capture.read_available():
                got.put_nowait(frame)

        loop.add_reader(capture.fileno(), on_readable)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            first = await asyncio.wait_for(got.get(), 5)
            writer.close()
            await writer.wait_closed()
        finally:
            loop.remove_reader(capture.fileno())
    assert tcp_flags(first) == SYN


def test_replay_does_not_pay_for_scapy() -> None:
    code = "import sys, sensor.capture; print(any(m.startswith('scapy') for m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=20
    )
    assert result.stdout.strip() == "False"


def test_unknown_interface_is_named() -> None:
    with pytest.raises(CaptureError, match="certwatch-no0: no such network interface"):
        open_live("certwatch-no0")


def test_bad_filter_reports_libpcap_message() -> None:
    with pytest.raises(CaptureError, match=r"lo: bad capture filter 'tcp port nosuch'.*nosuch"):
        open_live("lo", bpf="tcp port nosuch")
    with pytest.raises(CaptureError, match="syntax error"):
        open_live("lo", bpf="tcp and and")


def test_snaplen_cuts_frames_and_counts_them(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with open_live("lo", bpf=f"tcp port {port}", snaplen=60) as capture:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"x" * 500)
        frames = drain(capture, settle=0.2)
        assert capture.truncated >= 1
    assert frames and max(len(f.data) for f in frames) == 60

"""Shared test helpers: run the sensor over a capture, build frames, read tshark's view."""

from __future__ import annotations

import ipaddress
import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from schemas.events import AnomalyEvent, CertificateEvent, HandshakeEvent, SensorEvent
from sensor.capture import open_capture
from sensor.config import SensorConfig
from sensor.decode import TcpSegment, decode_frame, format_addr
from sensor.sensor import Sensor

DATA = Path(__file__).parent / "data"
RAW_IP = 101  # LINKTYPE_RAW: frames start at the IP header

Frame = tuple[float, int, bytes]


def captures(pattern: str = "*") -> list[Path]:
    """Every capture shipped in tests/data (pcap, pcapng, gz), sorted."""
    suffixes = (".pcap", ".pcapng", ".gz")
    return sorted(p for p in DATA.glob(f"*/{pattern}") if p.name.endswith(suffixes))


def read_frames(path: Path) -> list[Frame]:
    with open_capture(path) as reader:
        return [(ts, linktype, data) for ts, linktype, data in reader]


def run_sensor(frames: Iterable[Frame], config: SensorConfig | None = None) -> list[SensorEvent]:
    sensor = Sensor(config or SensorConfig(name="test-sensor"))
    events: list[SensorEvent] = []
    for ts, linktype, data in frames:
        sensor.process(ts, linktype, data)
        events.extend(sensor.drain())
    events.extend(sensor.finish())
    return events


def handshakes(events: Iterable[SensorEvent]) -> list[HandshakeEvent]:
    return [e for e in events if isinstance(e, HandshakeEvent)]


def certificates(events: Iterable[SensorEvent]) -> list[CertificateEvent]:
    return [e for e in events if isinstance(e, CertificateEvent)]


def anomalies(events: Iterable[SensorEvent]) -> list[AnomalyEvent]:
    return [e for e in events if isinstance(e, AnomalyEvent)]


def endpoint(text: str) -> tuple[str, int]:
    """'10.0.0.1:443' or '2001:db8::1:443' (tshark's form) -> (normalised ip, port)."""
    host, _, port = text.rpartition(":")
    return str(ipaddress.ip_address(host.strip("[]"))), int(port)


def tuple_of(event: HandshakeEvent) -> tuple[tuple[str, int], tuple[str, int]]:
    return (
        (str(ipaddress.ip_address(event.source.ip)), event.source.port),
        (str(ipaddress.ip_address(event.destination.ip)), event.destination.port),
    )


def tshark_view(capture: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(
        capture.with_name(capture.name + ".tshark.json").read_text())
    return loaded


def tcp_segments(frames: Iterable[Frame]) -> Iterator[tuple[float, TcpSegment]]:
    for ts, linktype, data in frames:
        segment = decode_frame(linktype, data)
        if segment is not None:
            yield ts, segment


def raw_frame(segment: TcpSegment, seq: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 + TCP frame (LINKTYPE_RAW) carrying ``payload`` at ``seq``.
    Checksums are zero: the sensor, like any passive tool on offloaded NICs, ignores them."""
    tcp = struct.pack(
        "!HHIIBBHHH", segment.src_port, segment.dst_port, seq & 0xFFFFFFFF, segment.ack,
        5 << 4, segment.flags, 65535, 0, 0,
    ) + payload
    if len(segment.src_addr) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                         segment.src_addr, segment.dst_addr)
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64,
                         segment.src_addr, segment.dst_addr)
    return ip + tcp


def resegment(frames: Iterable[Frame], size: int) -> list[Frame]:
    """The same TCP conversation with every payload cut into ``size``-byte segments."""
    out: list[Frame] = []
    for ts, segment in tcp_segments(frames):
        payload = segment.payload
        if not payload:
            out.append((ts, RAW_IP, raw_frame(segment, segment.seq, b"")))
            continue
        for offset in range(0, len(payload), size):
            out.append((ts, RAW_IP, raw_frame(segment, segment.seq + offset,
                                              payload[offset:offset + size])))
    return out


def addr_text(addr: bytes) -> str:
    return format_addr(addr)

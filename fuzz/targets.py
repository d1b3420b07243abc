"""Fuzz targets: each takes arbitrary ``bytes`` and drives sensor code the way hostile
traffic or a hostile capture file reaches it, asserting the decoder contract.

The contract (sensor/errors.py, house rules): bad input may only produce a
:class:`~sensor.errors.ParseError` subclass (``CaptureError`` for a capture file), or
``None`` / a record; nothing else may escape, and nothing may hang (the driver enforces a
per-input time limit). A target returns normally when the contract held and lets any
other exception propagate: the driver records that input as a crasher.

Each target also names its seeds: real inputs extracted from the captures in
``tests/data`` so mutation starts from the structures an attacker would corrupt.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sensor.capture import open_capture
from sensor.decode import SUPPORTED_LINKTYPES, decode_frame
from sensor.dtls import DtlsSession
from sensor.errors import CaptureError, ParseError
from sensor.quic import QuicSession
from sensor.reassembly import StreamReassembler
from sensor.sensor import Sensor
from sensor.tls.handshake import (
    parse_certificate,
    parse_client_hello,
    parse_server_hello,
    parse_server_key_exchange,
)
from sensor.tls.messages import (
    CERTIFICATE,
    CLIENT_HELLO,
    SERVER_HELLO,
    SERVER_KEY_EXCHANGE,
    HandshakeMessage,
)
from sensor.tls.records import TlsRecordParser, looks_like_tls_start
from sensor.udp import decode_udp
from sensor.x509 import CertificateInfo, describe_certificate

__all__ = ["TARGETS", "Target", "encode_frames", "encode_segments"]

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"

# Bounds that keep one input cheap (a fuzzer wants thousands of inputs per second) while
# still crossing every parser's limits: reassembly bounds are shrunk so fuzzed inputs can
# hit them, and the sensor/capture targets stop after this many frames.
MAX_FRAMES = 2_000
REASSEMBLY_MAX_BUFFERED = 4096
REASSEMBLY_MAX_SEGMENTS = 8
SEED_CAPTURE_MAX_BYTES = 64 * 1024
SEED_PAYLOAD_MAX_BYTES = 16 * 1024

_KEY_EXCHANGES = ("DHE", "DHE_PSK", "ECDHE", "ECDHE_PSK", "RSA")


# --------------------------------------------------------------------------------------
# Targets


def tls_records(data: bytes) -> None:
    """Record layer and handshake parsers. Byte 0 picks a split point so the parser sees
    the stream in two chunks; every complete handshake message is then handed to the
    parser for its type, as the session layer does."""
    if not data:
        return
    body = data[1:]
    split = data[0] * len(body) // 255
    whole = _feed_all(body, [body])
    parts = _feed_all(body, [body[:split], body[split:]])
    # Chunking is the network's choice, not the sender's: when both feeds succeed they
    # must yield the same items.
    if whole is not None and parts is not None and whole != parts:
        raise AssertionError(f"split at {split} changed the records: {whole!r} != {parts!r}")
    for item in parts or whole or []:
        if isinstance(item, HandshakeMessage):
            _parse_handshake(item)


def x509_certificate(data: bytes) -> None:
    """``describe_certificate`` never raises: a certificate that cannot be read gives a
    record with ``parse_error`` set."""
    info = describe_certificate(data)
    if not isinstance(info, CertificateInfo):
        raise AssertionError(f"describe_certificate returned {type(info).__name__}")


def reassembly(data: bytes) -> None:
    """TCP reassembly over (seq, payload) pairs decoded from the bytes (see
    :func:`encode_segments`); only ReassemblyError may come out and the counters must
    agree with what was returned."""
    stream = StreamReassembler(
        max_buffered=REASSEMBLY_MAX_BUFFERED, max_out_of_order_segments=REASSEMBLY_MAX_SEGMENTS
    )
    if len(data) < 4:
        return
    base = int.from_bytes(data[:4], "big")
    returned = skipped = 0
    pos = 4
    while pos + 4 <= len(data):
        op, length = data[pos], data[pos + 3]
        offset = int.from_bytes(data[pos + 1 : pos + 3], "big")
        pos += 4
        payload = data[pos : pos + length]
        pos += length
        try:
            if op == 0xFF:
                before = stream.delivered
                got = len(stream.skip_gap())
                returned += got
                # skip_gap counts the hole it gives up on as delivered stream offset
                gap = stream.delivered - before - got
                if gap < 0:
                    raise AssertionError(f"skip_gap moved the stream back by {-gap}")
                skipped += gap
            elif op == 0xFE:
                stream.set_initial_sequence((base + offset) % 2**32)
            else:
                # offsets are signed so segments land before the expected sequence too
                seq = (base + offset - (0x8000 if op & 1 else 0)) % 2**32
                returned += len(stream.add(seq, payload))
        except ParseError:
            pass
        if stream.buffered > REASSEMBLY_MAX_BUFFERED:
            raise AssertionError(f"buffered {stream.buffered} > bound {REASSEMBLY_MAX_BUFFERED}")
    if returned + skipped != stream.delivered:
        raise AssertionError(
            f"returned {returned} + skipped {skipped} bytes but delivered is {stream.delivered}"
        )


def capture_file(data: bytes) -> None:
    """``open_capture`` and iteration over the bytes as a file: only CaptureError."""
    path = _scratch_file()
    with open(path, "wb") as out:
        out.write(data)
    try:
        reader = open_capture(path)
    except CaptureError:
        return
    with reader:
        try:
            for count, frame in enumerate(reader):
                if count >= MAX_FRAMES:
                    break
                if not isinstance(frame.data, bytes):
                    raise AssertionError(f"frame data is {type(frame.data).__name__}")
        except CaptureError:
            pass


def sensor_frames(data: bytes) -> None:
    """The whole sensor over frames cut from the bytes (see :func:`encode_frames`):
    ``process``, ``drain`` and ``finish`` must absorb bad traffic as anomalies."""
    sensor = Sensor()
    now = 1_700_000_000.0
    for count, (dt, linktype, frame) in enumerate(_decode_frames(data)):
        if count >= MAX_FRAMES:
            break
        now += dt / 16
        # ParseError is the contract's allowed outcome; anything else propagates
        with contextlib.suppress(ParseError):
            sensor.process(now, linktype, frame)
        sensor.drain()
    with contextlib.suppress(ParseError):
        sensor.finish()


def udp_handshakes(data: bytes) -> None:
    """The QUIC (Initial decryption, CRYPTO reassembly) or DTLS (records, fragment
    reassembly) session over datagrams cut from the bytes (see :func:`encode_datagrams`):
    only ParseError may come out of ``feed``, and the session's record stays readable."""
    if not data:
        return
    session = QuicSession() if data[0] & 1 else DtlsSession()
    now = 1_700_000_000.0
    for count, (from_client, datagram) in enumerate(_decode_datagrams(data[1:])):
        if count >= MAX_FRAMES:
            break
        now += 0.001
        with contextlib.suppress(ParseError):
            session.feed(from_client, datagram, now)
    record = session.record if isinstance(session, QuicSession) else session.session.record
    assert record.client_hello is None or record.client_hello.cipher_suites is not None


# --------------------------------------------------------------------------------------
# Input encodings shared by targets and seed builders


def encode_datagrams(quic: bool, datagrams: list[tuple[bool, bytes]]) -> bytes:
    """Datagrams as the udp target reads them: a protocol byte (odd: QUIC), then per
    datagram a direction byte (odd: from the client), a 2-byte length and the datagram."""
    out = bytearray((1 if quic else 0,))
    for from_client, datagram in datagrams:
        datagram = datagram[:0xFFFF]
        out += bytes((1 if from_client else 0,)) + len(datagram).to_bytes(2, "big") + datagram
    return bytes(out)


def _decode_datagrams(data: bytes) -> Iterator[tuple[bool, bytes]]:
    pos = 0
    while pos + 3 <= len(data):
        from_client = bool(data[pos] & 1)
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        pos += 3
        yield from_client, data[pos : pos + length]
        pos += length

_LINKTYPES = (*sorted(SUPPORTED_LINKTYPES), 147)  # 147: a user link type nobody decodes


def encode_frames(frames: list[tuple[int, int, bytes]]) -> bytes:
    """Frames as the sensor target reads them: per frame a time step byte (1/16 s), a
    link type byte, a 2-byte length and the frame."""
    out = bytearray()
    for dt, linktype, frame in frames:
        index = _LINKTYPES.index(linktype) if linktype in _LINKTYPES else len(_LINKTYPES) - 1
        frame = frame[:0xFFFF]
        out += bytes((dt & 0xFF, index)) + len(frame).to_bytes(2, "big") + frame
    return bytes(out)


def _decode_frames(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        dt, index = data[pos], data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        pos += 4
        yield dt, _LINKTYPES[index % len(_LINKTYPES)], data[pos : pos + length]
        pos += length


def encode_segments(segments: list[tuple[int, bytes]]) -> bytes:
    """(seq, payload) pairs as the reassembly target reads them: the first sequence
    number as the 4-byte base, then per segment an op byte, a 2-byte offset from the base
    and a 1-byte length (payloads longer than 255 bytes are cut into pieces)."""
    if not segments:
        return b""
    base = segments[0][0]
    out = bytearray(base.to_bytes(4, "big"))
    for seq, payload in segments:
        for start in range(0, len(payload), 255):
            piece = payload[start : start + 255]
            offset = (seq + start - base) % 2**32
            if offset >= 0x10000:
                return bytes(out)
            out += bytes((0,)) + offset.to_bytes(2, "big") + bytes((len(piece),)) + piece
    return bytes(out)


def _feed_all(whole: bytes, chunks: list[bytes]) -> list[object] | None:
    parser = TlsRecordParser()
    items: list[object] = []
    try:
        for chunk in chunks:
            items += parser.feed(chunk)
    except ParseError:
        return None
    return items


def _parse_handshake(message: HandshakeMessage) -> None:
    body = message.body
    try:
        if message.msg_type == CLIENT_HELLO:
            parse_client_hello(body)
        elif message.msg_type == SERVER_HELLO:
            parse_server_hello(body)
        elif message.msg_type == CERTIFICATE:
            for tls13 in (False, True):
                with contextlib.suppress(ParseError):
                    parse_certificate(body, tls13=tls13)
        elif message.msg_type == SERVER_KEY_EXCHANGE:
            for kx in _KEY_EXCHANGES:
                with contextlib.suppress(ParseError):
                    parse_server_key_exchange(body, key_exchange=kx)
    except ParseError:
        pass


@lru_cache(maxsize=1)
def _scratch_file() -> str:
    # One file per process, rewritten per input: creating a file per input would make
    # the file system the bottleneck.
    directory = tempfile.mkdtemp(prefix="certwatch-fuzz-")
    atexit.register(shutil.rmtree, directory, True)
    return os.path.join(directory, "input.bin")


# --------------------------------------------------------------------------------------
# Seeds from the real captures


def seed_captures() -> list[Path]:
    """The capture files under tests/data (crashers under tests/data/fuzz excluded)."""
    return sorted(
        p
        for p in DATA_DIR.rglob("*")
        if p.suffix in (".pcap", ".pcapng") and "fuzz" not in p.relative_to(DATA_DIR).parts
    )


@lru_cache(maxsize=1)
def _capture_frames() -> tuple[tuple[str, tuple[tuple[float, int, bytes], ...]], ...]:
    out = []
    for path in seed_captures():
        try:
            with open_capture(path) as reader:
                frames = tuple((f[0], f[1], bytes(f[2])) for f in reader)
        except CaptureError:
            continue
        out.append((path.name, frames))
    return tuple(out)


@lru_cache(maxsize=1)
def _stream_payloads() -> tuple[tuple[tuple[int, bytes], ...], ...]:
    """Per TCP direction that starts like TLS: its (seq, payload) segments, bounded."""
    streams: list[tuple[tuple[int, bytes], ...]] = []
    for _name, frames in _capture_frames():
        by_dir: dict[object, list[tuple[int, bytes]]] = {}
        for _ts, linktype, frame in frames:
            try:
                seg = decode_frame(linktype, frame)
            except ParseError:
                continue
            if seg is None or not seg.payload:
                continue
            key = (seg.src_addr, seg.dst_addr, seg.src_port, seg.dst_port)
            if key not in by_dir and not looks_like_tls_start(bytes(seg.payload)):
                continue
            segs = by_dir.setdefault(key, [])
            if sum(len(p) for _s, p in segs) < SEED_PAYLOAD_MAX_BYTES:
                segs.append((seg.seq, bytes(seg.payload)))
        streams.extend(tuple(s) for s in by_dir.values())
    return tuple(streams)


def _tls_seeds() -> list[bytes]:
    # byte 0 = split point; the rest is the direction's bytes in arrival order
    seeds = []
    for i, stream in enumerate(_stream_payloads()):
        seeds.append(bytes((i * 37 % 256,)) + b"".join(p for _s, p in stream))
    return seeds


def _certificate_seeds() -> list[bytes]:
    seeds: list[bytes] = []
    for stream in _stream_payloads():
        parser = TlsRecordParser()
        items, _error = parser.feed_until_error(b"".join(p for _s, p in stream))
        for item in items:
            if isinstance(item, HandshakeMessage) and item.msg_type == CERTIFICATE:
                for tls13 in (False, True):
                    try:
                        seeds.extend(parse_certificate(item.body, tls13=tls13).certificates)
                        break
                    except ParseError:
                        continue
    return sorted(set(seeds))


def _reassembly_seeds() -> list[bytes]:
    seeds = []
    for stream in _stream_payloads():
        segs = list(stream)
        seeds.append(encode_segments(segs))
        seeds.append(encode_segments(segs[::-1]))  # everything out of order
    return [s for s in seeds if s]


def _capture_seeds() -> list[bytes]:
    return [
        p.read_bytes() for p in seed_captures() if p.stat().st_size <= SEED_CAPTURE_MAX_BYTES
    ]


def _sensor_seeds() -> list[bytes]:
    seeds = []
    for _name, frames in _capture_frames():
        encoded = []
        last = frames[0][0] if frames else 0.0
        for ts, linktype, frame in frames[:200]:
            encoded.append((max(0, min(255, int((ts - last) * 16))), linktype, frame))
            last = ts
        seeds.append(encode_frames(encoded))
    return seeds


def _udp_seeds() -> list[bytes]:
    seeds = []
    for directory, quic in (("quic", True), ("dtls", False)):
        for path in sorted((DATA_DIR / directory).glob("*.pcap*")):
            datagrams: list[tuple[bool, bytes]] = []
            client: tuple[bytes, int] | None = None
            try:
                with open_capture(path) as reader:
                    for _ts, linktype, frame in reader:
                        with contextlib.suppress(ParseError):
                            datagram = decode_udp(linktype, bytes(frame))
                            if datagram is None or not datagram.payload:
                                continue
                            if client is None:
                                client = (datagram.src_addr, datagram.src_port)
                            datagrams.append(
                                ((datagram.src_addr, datagram.src_port) == client,
                                 datagram.payload))
            except CaptureError:
                continue
            if datagrams:
                seeds.append(encode_datagrams(quic, datagrams[:64]))
    return seeds


@dataclass(frozen=True, slots=True)
class Target:
    """A fuzz target: the function under test and where its seeds come from."""

    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("tls_records", tls_records, _tls_seeds),
        Target("x509", x509_certificate, _certificate_seeds),
        Target("reassembly", reassembly, _reassembly_seeds),
        Target("capture", capture_file, _capture_seeds),
        Target("sensor", sensor_frames, _sensor_seeds),
        Target("udp", udp_handshakes, _udp_seeds),
    )
}

"""QUIC Initial packets, sans-IO: datagram bytes in, decrypted CRYPTO stream bytes out.

What a passive observer can read of a QUIC handshake (RFC 9000, RFC 9001, RFC 9369):
the Initial packets are encrypted with keys every observer can derive from the client's
Destination Connection ID (RFC 9001 5.2), so the ClientHello and ServerHello carried in their
CRYPTO frames are readable. Everything after the ServerHello (EncryptedExtensions, the
server's Certificate, Finished) travels in Handshake packets protected with keys from the
TLS key exchange: a passive sensor cannot see QUIC certificates, and does not guess them.

Pipeline of one datagram (:meth:`QuicConnection.feed`):

1. split coalesced packets (RFC 9000 12.2) by their long header's Length field;
2. for an Initial packet of a version whose salt we know (:data:`VERSIONS`), derive the
   Initial keys (:func:`initial_keys`), remove header protection (RFC 9001 5.4) and decrypt
   the payload with AES-128-GCM (RFC 9001 5.3);
3. read the frames an Initial may carry (RFC 9000 12.4: PADDING, PING, ACK, CRYPTO,
   CONNECTION_CLOSE) and put CRYPTO data in offset order (:class:`CryptoStream`), bounded;
4. cut the contiguous stream into TLS handshake messages (RFC 8446 4: type, 24-bit length).

Decoder contract: packet-level parsers raise :class:`QuicError` (a ``ParseError``) for bytes
that do not parse or do not authenticate, and return a frozen record otherwise; a datagram
is complete by nature (UDP), so a cut packet is invalid, not "need more bytes". The stream
reassembler returns ``b""`` (nothing new yet) until the bytes at its read offset arrive.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sensor.errors import ParseError
from sensor.session import SessionRecord, Side
from sensor.tls.handshake import parse_client_hello, parse_server_hello
from sensor.tls.messages import AlertMessage, HandshakeMessage


class QuicError(ParseError):
    """A QUIC packet or frame that does not parse, or an Initial that does not decrypt."""

    kind = "quic_error"


class QuicLimitError(QuicError):
    """A bound of the CRYPTO stream reassembly was reached (bytes buffered, message size)."""

    kind = "quic_limit"


# Long header packet types (RFC 9000 17.2 table 5); QUIC v2 renumbers them (RFC 9369 3.2).
INITIAL, ZERO_RTT, HANDSHAKE, RETRY = "initial", "0rtt", "handshake", "retry"
_V1_TYPES: Final = (INITIAL, ZERO_RTT, HANDSHAKE, RETRY)
_V2_TYPES: Final = (RETRY, INITIAL, ZERO_RTT, HANDSHAKE)

QUIC_V1: Final = 0x00000001
QUIC_V2: Final = 0x6B3343CF


@dataclass(frozen=True, slots=True)
class VersionParams:
    """What a QUIC version changes in Initial protection: salt and HKDF label prefix."""

    name: str
    salt: bytes
    label_prefix: str  # "quic " (v1, drafts) or "quicv2 " (RFC 9369 3.3.2)
    v2_types: bool = False
    crypto_frame: int = 0x06  # RFC 9000 19.6; Google's T05x put CRYPTO at 0x08


_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 5.2
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")  # RFC 9369 3.3.1
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")  # draft-29..32 5.2
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")  # draft-23..28 5.2
_SALT_D21 = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")  # draft-21/22 5.2


def _versions() -> dict[int, VersionParams]:
    table = {
        QUIC_V1: VersionParams("QUICv1", _SALT_V1, "quic "),
        QUIC_V2: VersionParams("QUICv2", _SALT_V2, "quicv2 ", v2_types=True),
        # Facebook mvfst's private codes reuse draft salts (draft-22 and draft-27 layouts).
        0xFACEB001: VersionParams("mvfst-d22", _SALT_D21, "quic "),
        0xFACEB002: VersionParams("mvfst-d27", _SALT_D23, "quic "),
        0xFACEB00E: VersionParams("mvfst-exp", _SALT_D23, "quic "),
    }
    # Google QUIC with TLS (T050, T051): IETF long headers and Initial protection with
    # Google's own salts (quic_t50.pcap, quic_t51.pcap; checked by the AEAD tags there).
    table[0x54303530] = VersionParams(
        "T050", bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310"), "quic ",
        crypto_frame=0x08)
    table[0x54303531] = VersionParams(
        "T051", bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d"), "quic ",
        crypto_frame=0x08)
    for draft in range(21, 35):
        salt = (_SALT_D21 if draft < 23 else _SALT_D23 if draft < 29
                else _SALT_D29 if draft < 33 else _SALT_V1)
        table[0xFF000000 | draft] = VersionParams(f"draft-{draft}", salt, "quic ")
    return table


#: Versions whose Initial packets we can decrypt, by version code.
VERSIONS: Final = _versions()


# -- keys (RFC 9001 5.2, RFC 8446 7.1) --------------------------------------------------------


def hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label with SHA-256 and an empty context (RFC 8446 7.1)."""
    full = b"tls13 " + label.encode("ascii")
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    out, block, counter = b"", b"", 1
    while len(out) < length:  # RFC 5869 2.3
        block = hmac.new(secret, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """AES-128-GCM packet key, IV and header protection key of one direction's Initials."""

    key: bytes
    iv: bytes
    hp: bytes


def initial_secret(dcid: bytes, version: int) -> bytes:
    """HKDF-Extract(initial_salt, client DCID) (RFC 9001 5.2). Raises QuicError for a
    version without a known salt."""
    params = VERSIONS.get(version)
    if params is None:
        raise QuicError(f"no Initial salt known for QUIC version 0x{version:08x}")
    return hmac.new(params.salt, dcid, hashlib.sha256).digest()


def initial_keys(dcid: bytes, version: int, *, server: bool) -> InitialKeys:
    """The Initial keys of the client (``server=False``) or server side of a connection
    whose client chose ``dcid`` (RFC 9001 5.2; labels per RFC 9369 3.3.2 for v2)."""
    prefix = VERSIONS[version].label_prefix if version in VERSIONS else "quic "
    secret = hkdf_expand_label(initial_secret(dcid, version),
                               "server in" if server else "client in", 32)
    return InitialKeys(
        key=hkdf_expand_label(secret, prefix + "key", 16),
        iv=hkdf_expand_label(secret, prefix + "iv", 12),
        hp=hkdf_expand_label(secret, prefix + "hp", 16),
    )


# -- packets ---------------------------------------------------------------------------------


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A variable-length integer at ``pos`` (RFC 9000 16): (value, position after it)."""
    if pos >= end:
        raise QuicError("truncated variable-length integer")
    size = 1 << (data[pos] >> 6)
    if pos + size > end:
        raise QuicError("truncated variable-length integer")
    value = int.from_bytes(data[pos : pos + size], "big") & ((1 << (8 * size - 2)) - 1)
    return value, pos + size


@dataclass(frozen=True, slots=True)
class LongHeader:
    """A long header packet (RFC 9000 17.2) inside a datagram: its fields and where its
    packet number (``pn_offset``) and the packet (``end``) are. ``packet_type`` is None
    for a version we cannot read past the connection IDs (the length is then unknown and
    the packet runs to the end of the datagram)."""

    start: int
    first: int
    version: int
    dcid: bytes
    scid: bytes
    packet_type: str | None
    token: bytes
    pn_offset: int
    end: int


def parse_long_header(data: bytes, pos: int = 0) -> LongHeader:
    """Parse the long header starting at ``data[pos]`` (its first byte has 0x80 set).

    Raises QuicError when the header is cut or its lengths do not fit the datagram.
    Version negotiation (version 0) and unknown versions give ``packet_type=None``.
    """
    end = len(data)
    if end - pos < 7:
        raise QuicError("truncated long header")
    first = data[pos]
    version = int.from_bytes(data[pos + 1 : pos + 5], "big")
    dcid_len = data[pos + 5]
    at = pos + 6
    # RFC 9000 17.2: connection IDs are at most 20 bytes in QUIC v1 (the invariants,
    # RFC 8999 5.1, allow 255, which an unknown version may use).
    if (version in VERSIONS and dcid_len > 20) or at + dcid_len + 1 > end:
        raise QuicError(f"bad Destination Connection ID length {dcid_len}")
    dcid = data[at : at + dcid_len]
    at += dcid_len
    scid_len = data[at]
    at += 1
    if (version in VERSIONS and scid_len > 20) or at + scid_len > end:
        raise QuicError(f"bad Source Connection ID length {scid_len}")
    scid = data[at : at + scid_len]
    at += scid_len
    params = VERSIONS.get(version)
    if params is None:
        return LongHeader(pos, first, version, dcid, scid, None, b"", at, end)
    packet_type = (_V2_TYPES if params.v2_types else _V1_TYPES)[(first >> 4) & 0x03]
    if packet_type == RETRY:
        # RFC 9000 17.2.5: token then a 16-byte integrity tag; no length, no packet number.
        return LongHeader(pos, first, version, dcid, scid, RETRY, data[at : end - 16], end, end)
    token = b""
    if packet_type == INITIAL:
        token_len, at = read_varint(data, at, end)
        if token_len > end - at:
            raise QuicError(f"Initial token length {token_len} exceeds the datagram")
        token = data[at : at + token_len]
        at += token_len
    length, at = read_varint(data, at, end)
    if length > end - at:
        raise QuicError(f"packet length {length} exceeds the datagram ({end - at} left)")
    return LongHeader(pos, first, version, dcid, scid, packet_type, token, at, at + length)


def decode_packet_number(largest: int, truncated: int, nbits: int) -> int:
    """The full packet number closest to ``largest + 1`` (RFC 9000 A.3)."""
    expected = largest + 1
    win = 1 << nbits
    hwin, mask = win // 2, win - 1
    candidate = (expected & ~mask) | truncated
    if candidate <= expected - hwin and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


@dataclass(frozen=True, slots=True)
class InitialPacket:
    """A decrypted Initial packet: header fields, full packet number and plaintext frames."""

    version: int
    dcid: bytes
    scid: bytes
    token: bytes
    packet_number: int
    payload: bytes


def decrypt_initial(data: bytes, header: LongHeader, keys: InitialKeys,
                    largest_pn: int = -1) -> InitialPacket:
    """Remove header protection and decrypt one Initial packet (RFC 9001 5.3, 5.4).

    ``largest_pn`` is the largest packet number decrypted so far in this direction (for
    RFC 9000 A.3 decoding). Raises QuicError when the packet is too short to sample or
    the AEAD tag does not verify (wrong version/keys, or not an Initial at all).
    """
    pn_offset = header.pn_offset
    # RFC 9001 5.4.2: the sample starts 4 bytes after the packet number's first byte.
    if header.end - pn_offset < 4 + 16:
        raise QuicError("Initial packet too short for a header protection sample")
    sample = data[pn_offset + 4 : pn_offset + 20]
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    first = header.first ^ (mask[0] & 0x0F)  # RFC 9001 5.4.1: long headers mask 4 bits
    pn_len = (first & 0x03) + 1
    truncated = int.from_bytes(data[pn_offset : pn_offset + pn_len], "big") ^ int.from_bytes(
        mask[1 : 1 + pn_len], "big")
    packet_number = decode_packet_number(largest_pn, truncated, 8 * pn_len)
    aad = (bytes([first]) + data[header.start + 1 : pn_offset]
           + truncated.to_bytes(pn_len, "big"))
    nonce = (int.from_bytes(keys.iv, "big") ^ packet_number).to_bytes(12, "big")
    try:
        payload = AESGCM(keys.key).decrypt(nonce, data[pn_offset + pn_len : header.end], aad)
    except InvalidTag as error:
        raise QuicError("Initial packet does not authenticate with the Initial keys") from error
    return InitialPacket(header.version, header.dcid, header.scid, header.token,
                         packet_number, payload)


# -- frames (RFC 9000 12.4, 19) -------------------------------------------------------------

_PADDING, _PING, _ACK, _ACK_ECN, _CRYPTO, _CLOSE, _CLOSE_APP = 0, 1, 2, 3, 6, 0x1C, 0x1D
#: RFC 9001 4.8: a TLS alert is sent as CONNECTION_CLOSE with error code 0x0100 + alert.
CRYPTO_ERROR_BASE: Final = 0x0100


@dataclass(frozen=True, slots=True)
class InitialFrames:
    """What an Initial packet's frames say: CRYPTO data as (offset, bytes) in packet order,
    and the error code of a CONNECTION_CLOSE, if any."""

    crypto: tuple[tuple[int, bytes], ...]
    close_code: int | None = None


def parse_initial_frames(payload: bytes, crypto_frame: int = _CRYPTO) -> InitialFrames:
    """Parse the frames of a decrypted Initial payload (RFC 9000 12.4: PADDING, PING, ACK,
    CRYPTO and CONNECTION_CLOSE are the frames an Initial may carry). Raises QuicError for
    any other frame type or a frame cut short. Every frame consumes at least one byte, so
    the loop ends within the payload. ``crypto_frame`` is the CRYPTO frame's type code
    (see :class:`VersionParams`)."""
    crypto: list[tuple[int, bytes]] = []
    close_code: int | None = None
    pos, end = 0, len(payload)
    while pos < end:
        frame_type = payload[pos]
        if frame_type == _PADDING:
            stripped = payload[pos:].lstrip(b"\x00")
            pos = end - len(stripped)
        elif frame_type == _PING:
            pos += 1
        elif frame_type in (_ACK, _ACK_ECN):
            pos = _skip_ack(payload, pos + 1, end, frame_type == _ACK_ECN)
        elif frame_type == crypto_frame:
            offset, pos = read_varint(payload, pos + 1, end)
            length, pos = read_varint(payload, pos, end)
            if length > end - pos:
                raise QuicError(f"CRYPTO frame length {length} exceeds the packet")
            crypto.append((offset, payload[pos : pos + length]))
            pos += length
        elif crypto_frame != _CRYPTO and frame_type & 0xC0 == 0x40:
            pos = _skip_gquic_ack(payload, pos, end)
        elif frame_type in (_CLOSE, _CLOSE_APP):
            close_code, pos = read_varint(payload, pos + 1, end)
            if frame_type == _CLOSE:
                _, pos = read_varint(payload, pos, end)  # the frame type that caused it
            reason_len, pos = read_varint(payload, pos, end)
            if reason_len > end - pos:
                raise QuicError("CONNECTION_CLOSE reason exceeds the packet")
            pos += reason_len
        else:
            raise QuicError(f"frame type 0x{frame_type:02x} is not allowed in an Initial")
    return InitialFrames(tuple(crypto), close_code)


def _skip_ack(payload: bytes, pos: int, end: int, ecn: bool) -> int:
    """Past an ACK frame body (RFC 9000 19.3): largest, delay, range count, first range,
    the ranges (gap, length), and three ECN counts for type 0x03."""
    for _ in range(2):
        _, pos = read_varint(payload, pos, end)
    count, pos = read_varint(payload, pos, end)
    _, pos = read_varint(payload, pos, end)
    if count > end - pos:  # each range is at least two bytes: cheap early bound
        raise QuicError(f"ACK range count {count} exceeds the packet")
    for _ in range(2 * count + (3 if ecn else 0)):
        _, pos = read_varint(payload, pos, end)
    return pos


_GQUIC_SIZES = (1, 2, 4, 6)


def _skip_gquic_ack(payload: bytes, pos: int, end: int) -> int:
    """Past a Google QUIC ACK frame (type ``01nullmm``, which T05x keep in their Initials):
    largest acked (``ll`` sized), a 2-byte delay, a block count when ``n`` is set, the
    first block (``mm`` sized), the further blocks (1-byte gap + block), then a timestamp
    count and the timestamps (1 + 4 bytes for the first, 1 + 2 for each next)."""
    frame_type = payload[pos]
    block = _GQUIC_SIZES[frame_type & 0x03]
    pos += 1 + _GQUIC_SIZES[(frame_type >> 2) & 0x03] + 2
    blocks = 0
    if frame_type & 0x20:
        if pos >= end:
            raise QuicError("truncated gQUIC ACK frame")
        blocks = payload[pos]
        pos += 1
    pos += block + blocks * (1 + block)
    if pos >= end:
        raise QuicError("truncated gQUIC ACK frame")
    stamps = payload[pos]
    pos += 1 + (5 + 3 * (stamps - 1) if stamps else 0)
    if pos > end:
        raise QuicError("truncated gQUIC ACK frame")
    return pos


# -- CRYPTO stream reassembly -------------------------------------------------------------------

#: Default bounds of one direction's CRYPTO stream: the highest offset read, and bytes held
#: ahead of a gap. A ClientHello is a few kilobytes (tens with post-quantum key shares).
MAX_CRYPTO_OFFSET: Final = 256 * 1024
MAX_CRYPTO_BUFFERED: Final = 64 * 1024
MAX_MESSAGE_LENGTH: Final = 128 * 1024


class CryptoStream:
    """One direction's CRYPTO stream at one encryption level, put back in offset order
    (RFC 9000 19.6: frames may arrive out of order, overlap, and repeat).

    :meth:`add` returns the bytes that became contiguous at the read offset (``b""`` when
    none did). Raises :class:`QuicLimitError` when data lies beyond ``max_offset`` or the
    bytes held ahead of a gap would exceed ``max_buffered``.
    """

    __slots__ = ("_buffered", "_next", "_pending", "max_buffered", "max_offset")

    def __init__(self, max_buffered: int = MAX_CRYPTO_BUFFERED,
                 max_offset: int = MAX_CRYPTO_OFFSET) -> None:
        self.max_buffered = max_buffered
        self.max_offset = max_offset
        self._next = 0
        self._pending: dict[int, bytes] = {}
        self._buffered = 0

    @property
    def offset(self) -> int:
        """How many bytes of the stream were delivered."""
        return self._next

    def add(self, offset: int, data: bytes) -> bytes:
        """Take one CRYPTO frame's data; return the newly contiguous bytes."""
        end = offset + len(data)
        if end > self.max_offset:
            raise QuicLimitError(f"CRYPTO data up to offset {end} exceeds the bound "
                                 f"{self.max_offset}")
        if end <= self._next:
            return b""  # a retransmission of bytes already delivered
        if offset > self._next:
            if len(self._pending.get(offset, b"")) < len(data):
                self._buffered += len(data) - len(self._pending.get(offset, b""))
                if self._buffered > self.max_buffered:
                    raise QuicLimitError(f"more than {self.max_buffered} CRYPTO bytes held "
                                         "ahead of a gap")
                self._pending[offset] = data
            return b""
        out = [data[self._next - offset :]]
        self._next = end
        while self._pending:
            ready = [o for o in self._pending if o <= self._next]
            if not ready:
                break
            for start in sorted(ready):
                chunk = self._pending.pop(start)
                self._buffered -= len(chunk)
                if start + len(chunk) > self._next:
                    out.append(chunk[self._next - start :])
                    self._next = start + len(chunk)
        return b"".join(out)


class HandshakeFramer:
    """Cuts a contiguous TLS handshake byte stream into messages (RFC 8446 4: one byte of
    type, three of length). Raises QuicLimitError for a message longer than
    ``max_message``; returns the messages completed by each :meth:`feed`."""

    __slots__ = ("_buffer", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE_LENGTH) -> None:
        self.max_message = max_message
        self._buffer = b""

    def feed(self, data: bytes) -> list[HandshakeMessage]:
        buffer = self._buffer + data if self._buffer else data
        messages: list[HandshakeMessage] = []
        pos = 0
        while len(buffer) - pos >= 4:
            length = int.from_bytes(buffer[pos + 1 : pos + 4], "big")
            if length > self.max_message:
                raise QuicLimitError(f"handshake message of {length} bytes exceeds the bound "
                                     f"{self.max_message}")
            if len(buffer) - pos - 4 < length:
                break
            messages.append(HandshakeMessage(buffer[pos], buffer[pos + 4 : pos + 4 + length]))
            pos += 4 + length
        self._buffer = buffer[pos:]
        return messages


# -- one connection's handshake -------------------------------------------------------------------

#: Initial packets decrypted per connection before giving up on finding both hellos.
MAX_INITIAL_PACKETS: Final = 64


class QuicSession:
    """The TLS handshake of one QUIC connection as far as Initial packets show it.

    Fed every datagram of the flow with its direction; fills a
    :class:`~sensor.session.SessionRecord` (ClientHello, ServerHello or HelloRetryRequest,
    alerts carried by CONNECTION_CLOSE, timing) like :class:`~sensor.session.TlsSession`
    does for TCP. The handshake is taken as established when the client sends its first
    1-RTT (short header) packet after the ServerHello: a client has 1-RTT keys only once it
    has the server's Finished (RFC 9001 4.1.1). ``certificates`` stay empty: they travel in
    Handshake packets, which a passive observer cannot decrypt.

    :meth:`feed` raises a ``ParseError`` for what it could not read; a QUIC packet error
    (a datagram that does not authenticate: not QUIC, another version's keys, spoofing) is
    counted by the caller and the session goes on; a TLS error inside an authenticated
    CRYPTO stream, or a bound reached, ends the session as ``parse_error``.
    """

    __slots__ = ("_dcid", "_framers", "_initials", "_keys", "_largest", "_rekey", "_streams",
                 "done", "handshake_packets", "record", "retry", "version")

    def __init__(self) -> None:
        self.record = SessionRecord()
        self.done = False
        self.version: int | None = None
        self.retry = False
        self.handshake_packets = 0  # Handshake packets seen (their content is encrypted)
        self._dcid: bytes | None = None
        self._keys: tuple[InitialKeys, InitialKeys] | None = None  # client, server
        self._rekey = False
        self._largest = [-1, -1]
        self._initials = 0
        self._streams = (CryptoStream(), CryptoStream())
        self._framers = (HandshakeFramer(), HandshakeFramer())

    def feed(self, from_client: bool, datagram: bytes, timestamp: float) -> None:
        """Read every packet of one datagram (RFC 9000 12.2: coalesced packets)."""
        if self.done:
            return
        pos = 0
        while pos < len(datagram) and not self.done:
            if not datagram[pos] & 0x80:
                # A short header packet runs to the end of the datagram (RFC 9000 12.2).
                if from_client and self.record.server_hello is not None:
                    self.record.established = True
                    self.record.last_handshake_time = timestamp
                    self._finish("established")
                return
            header = parse_long_header(datagram, pos)
            if header.packet_type is None:
                return  # version negotiation or a version we cannot read
            pos = header.end
            if header.packet_type == INITIAL:
                self._initial(from_client, datagram, header, timestamp)
            elif header.packet_type == HANDSHAKE:
                self.handshake_packets += 1
            elif header.packet_type == RETRY and not from_client:
                self.retry = self._rekey = True  # RFC 9001 5.2: new keys from the new DCID

    def close(self, reason: str) -> None:
        """The flow ended (idle timeout, eviction, end of capture) before ``done``."""
        if not self.done:
            self._finish(reason)

    @property
    def has_hello(self) -> bool:
        return self.record.client_hello is not None or self.record.first_server_hello is not None

    def _finish(self, reason: str) -> None:
        self.done = True
        self.record.ended_by = reason

    def _keys_for(self, from_client: bool, header: LongHeader) -> InitialKeys | None:
        if from_client and (self._keys is None or self._rekey or header.version != self.version):
            self._rekey = False
            self._dcid, self.version = header.dcid, header.version
            self._keys = (initial_keys(header.dcid, header.version, server=False),
                          initial_keys(header.dcid, header.version, server=True))
        if self._keys is None or header.version != self.version:
            return None
        return self._keys[0 if from_client else 1]

    def _initial(self, from_client: bool, datagram: bytes, header: LongHeader,
                 timestamp: float) -> None:
        if self.record.server_hello is not None:
            return  # both hellos are in hand: the rest of the Initials are ACKs
        keys = self._keys_for(from_client, header)
        if keys is None:
            raise QuicError("server Initial before any client Initial: no keys to read it")
        self._initials += 1
        if self._initials > MAX_INITIAL_PACKETS:
            self._fail(QuicLimitError(f"{MAX_INITIAL_PACKETS} Initial packets without both "
                                      "hellos"), from_client)
        side = 0 if from_client else 1
        packet = decrypt_initial(datagram, header, keys, self._largest[side])
        self._largest[side] = max(self._largest[side], packet.packet_number)
        try:
            frames = parse_initial_frames(packet.payload, VERSIONS[header.version].crypto_frame)
            for offset, data in frames.crypto:
                for message in self._framers[side].feed(self._streams[side].add(offset, data)):
                    self._message(from_client, message, timestamp)
                    if self.done:
                        return
        except ParseError as error:
            self._fail(error, from_client)
        if frames.close_code is not None:
            self._connection_close(from_client, frames.close_code)

    def _fail(self, error: ParseError, from_client: bool) -> None:
        self.record.parse_error = f"{'client' if from_client else 'server'}: {error}"
        self._finish("parse_error")
        raise error

    def _message(self, from_client: bool, message: HandshakeMessage, timestamp: float) -> None:
        record = self.record
        record.last_handshake_time = timestamp
        if from_client and message.msg_type == 1 and record.client_hello is None:
            hello = parse_client_hello(message.body)
            record.client_hello, record.client_hello_time = hello, timestamp
            record.irregularities += hello.irregularities
        elif not from_client and message.msg_type == 2:
            server_hello = parse_server_hello(message.body)
            if record.first_server_hello is None:
                record.first_server_hello = server_hello
            if server_hello.is_hello_retry_request:
                record.hello_retry_request = True  # RFC 8446 4.1.4; a second CH follows
                return
            record.server_hello, record.server_hello_time = server_hello, timestamp
            if any(ext.type == 0x0029 for ext in server_hello.extensions):
                record.resumed = True  # pre_shared_key accepted (RFC 8446 4.2.11)

    def _connection_close(self, from_client: bool, code: int) -> None:
        side = Side.CLIENT if from_client else Side.SERVER
        if CRYPTO_ERROR_BASE <= code < CRYPTO_ERROR_BASE + 0x100:
            alert = AlertMessage(level=2, description=code - CRYPTO_ERROR_BASE)
        else:
            alert = AlertMessage(level=None, description=None)
        self.record.alerts += ((side, alert),)
        self._finish("alert" if alert.level is not None else "connection_close")

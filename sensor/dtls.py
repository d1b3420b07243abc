"""DTLS 1.0/1.2 (RFC 6347) and the visible part of DTLS 1.3 (RFC 9147), sans-IO.

Datagram bytes in; out come the same typed records the TCP path produces, because the
handshake inside DTLS *is* TLS's (RFC 6347 4.2: "DTLS uses all of the same handshake
messages and flows as TLS", plus HelloVerifyRequest and a cookie in the ClientHello). So
this module reads what DTLS adds and hands the rest to the TLS code:

* the record layer (:func:`parse_records`): 13-byte headers with epoch and 48-bit sequence
  number (RFC 6347 4.1), several records per datagram; DTLS 1.3's unified header for
  protected records (RFC 9147 4) is recognised and left unread;
* handshake fragments (:func:`parse_fragments`): each message carries ``message_seq``,
  ``fragment_offset`` and ``fragment_length`` (RFC 6347 4.2.2) and may be split across
  records and datagrams, repeated (retransmission) and reordered;
  :class:`MessageAssembler` puts them back together, bounded;
* the HelloVerifyRequest cookie exchange (RFC 6347 4.2.1): the server's cookie is noted
  and the ClientHello's cookie field is removed (:func:`tls_client_hello_body`), which
  leaves a TLS ClientHello body for :func:`sensor.tls.handshake.parse_client_hello`.

:class:`DtlsSession` then replays each direction as a TLS record stream into a
:class:`sensor.session.TlsSession`, which parses ClientHello, ServerHello, Certificate and
ServerKeyExchange and follows ChangeCipherSpec and Finished exactly as on TCP. DTLS 1.2
certificates are in clear, so they come out as on TCP.

Decoder contract: the parsers raise :class:`DtlsError` (a ``ParseError``) for bytes that
do not parse and return frozen records; a datagram is complete (UDP), so there is no "need
more bytes" case at the record layer; the assembler returns the messages that became
complete (an empty list while fragments are missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sensor.errors import ParseError
from sensor.session import Side, TlsSession
from sensor.tls.messages import HandshakeMessage

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
HELLO_VERIFY_REQUEST: Final = 3
DTLS13: Final = 0xFEFC
#: Record versions: DTLS 1.0, 1.2, 1.3 (RFC 6347 4.1, RFC 9147 5.3) and OpenSSL's
#: pre-RFC 4347 DTLS 0x0100 (dtls_old_version.pcapng).
DTLS_VERSIONS: Final = frozenset({0xFEFF, 0xFEFD, DTLS13, 0x0100})


class DtlsError(ParseError):
    """A DTLS record or handshake fragment that does not parse."""

    kind = "dtls_error"


class DtlsLimitError(DtlsError):
    """A bound of handshake reassembly was reached (message size, messages pending)."""

    kind = "dtls_limit"


@dataclass(frozen=True, slots=True)
class DtlsRecord:
    """One record of a datagram. ``unified`` marks a DTLS 1.3 protected record (RFC 9147
    4), whose ``epoch`` is the low two bits only and whose content type is hidden."""

    content_type: int
    version: int
    epoch: int
    sequence: int
    fragment: bytes
    unified: bool = False


def parse_records(datagram: bytes) -> list[DtlsRecord]:
    """Split a datagram into its records (RFC 6347 4.1: several may share a datagram;
    4.1.1: a record never spans two). Raises DtlsError for a header that is cut, a
    length beyond the datagram, or a version that is not DTLS."""
    records: list[DtlsRecord] = []
    pos, end = 0, len(datagram)
    while pos < end:
        first = datagram[pos]
        if first >> 5 == 0b001:
            record, pos = _unified(datagram, pos, end)
            records.append(record)
            continue
        if end - pos < 13:
            raise DtlsError(f"truncated DTLS record header ({end - pos} bytes)")
        version = int.from_bytes(datagram[pos + 1 : pos + 3], "big")
        if first not in (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, 24):
            raise DtlsError(f"not a DTLS record: content type {first}")
        if version not in DTLS_VERSIONS:
            raise DtlsError(f"not a DTLS record: version 0x{version:04x}")
        epoch = int.from_bytes(datagram[pos + 3 : pos + 5], "big")
        sequence = int.from_bytes(datagram[pos + 5 : pos + 11], "big")
        length = int.from_bytes(datagram[pos + 11 : pos + 13], "big")
        if length > end - pos - 13:
            raise DtlsError(f"record length {length} exceeds the datagram")
        records.append(DtlsRecord(first, version, epoch, sequence,
                                  datagram[pos + 13 : pos + 13 + length]))
        pos += 13 + length
    return records


def _unified(datagram: bytes, pos: int, end: int) -> tuple[DtlsRecord, int]:
    """RFC 9147 4: ``001CSLEE``: connection ID present (its length was negotiated and is
    unknown to an observer: the record then runs to the end of the datagram), 8- or 16-bit
    sequence number, length present, low epoch bits."""
    first = datagram[pos]
    if first & 0x10:
        return DtlsRecord(APPLICATION_DATA, DTLS13, first & 3, 0, datagram[pos:end], True), end
    seq_len = 2 if first & 0x08 else 1
    at = pos + 1 + seq_len
    if at > end:
        raise DtlsError("truncated DTLS 1.3 unified header")
    sequence = int.from_bytes(datagram[pos + 1 : at], "big")
    if first & 0x04:
        if at + 2 > end:
            raise DtlsError("truncated DTLS 1.3 unified header length")
        length = int.from_bytes(datagram[at : at + 2], "big")
        at += 2
        if length > end - at:
            raise DtlsError(f"DTLS 1.3 record length {length} exceeds the datagram")
    else:
        length = end - at
    return DtlsRecord(APPLICATION_DATA, DTLS13, first & 3, sequence,
                      datagram[at : at + length], True), at + length


@dataclass(frozen=True, slots=True)
class DtlsFragment:
    """One handshake fragment (RFC 6347 4.2.2): message type, total message length,
    message_seq, and ``data`` placed at ``offset`` of the message body."""

    msg_type: int
    length: int
    message_seq: int
    offset: int
    data: bytes


def parse_fragments(payload: bytes) -> list[DtlsFragment]:
    """The handshake fragments of one plaintext handshake record (12-byte headers). Raises
    DtlsError when a header is cut or a fragment overruns the record or its message."""
    fragments: list[DtlsFragment] = []
    pos, end = 0, len(payload)
    while pos < end:
        if end - pos < 12:
            raise DtlsError(f"truncated DTLS handshake header ({end - pos} bytes)")
        length = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        message_seq = int.from_bytes(payload[pos + 4 : pos + 6], "big")
        offset = int.from_bytes(payload[pos + 6 : pos + 9], "big")
        frag_len = int.from_bytes(payload[pos + 9 : pos + 12], "big")
        if frag_len > end - pos - 12 or offset + frag_len > length:
            raise DtlsError(f"handshake fragment {offset}+{frag_len} does not fit its "
                            f"message ({length} bytes) or record")
        fragments.append(DtlsFragment(payload[pos], length, message_seq, offset,
                                      payload[pos + 12 : pos + 12 + frag_len]))
        pos += 12 + frag_len
    return fragments


class _Partial:
    """A message being reassembled: its body and the byte ranges received so far."""

    __slots__ = ("body", "length", "msg_type", "ranges")

    def __init__(self, msg_type: int, length: int) -> None:
        self.msg_type = msg_type
        self.length = length
        self.body = bytearray(length)
        self.ranges: list[tuple[int, int]] = []

    def add(self, offset: int, data: bytes) -> bool:
        """Place a fragment; True once the whole body is covered."""
        self.body[offset : offset + len(data)] = data
        merged: list[tuple[int, int]] = []
        for start, stop in sorted((*self.ranges, (offset, offset + len(data)))):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        self.ranges = merged
        return merged == [(0, self.length)] or self.length == 0


#: Default bounds of one direction's reassembly: a message's size (a certificate chain),
#: and how far ahead of the next expected message_seq fragments are kept.
MAX_MESSAGE_LENGTH: Final = 256 * 1024
MAX_PENDING_MESSAGES: Final = 8


class MessageAssembler:
    """Puts one direction's handshake fragments back into whole messages, in message_seq
    order, each once (RFC 6347 4.2.2: retransmitted messages keep their message_seq).

    :meth:`add` returns the messages that became deliverable, in order. Raises
    :class:`DtlsLimitError` for a message longer than ``max_message`` or a fragment more
    than ``max_pending`` messages ahead of the next expected one, and :class:`DtlsError`
    when fragments of one message disagree on its type or length.
    """

    __slots__ = ("_next", "_partial", "max_message", "max_pending")

    def __init__(self, max_message: int = MAX_MESSAGE_LENGTH,
                 max_pending: int = MAX_PENDING_MESSAGES) -> None:
        self.max_message = max_message
        self.max_pending = max_pending
        self._next: int | None = None
        self._partial: dict[int, _Partial] = {}

    def add(self, fragment: DtlsFragment) -> list[HandshakeMessage]:
        if self._next is None:
            self._next = fragment.message_seq  # a capture may start mid-handshake
        seq = fragment.message_seq
        if seq < self._next:
            return []  # a retransmission of a message already delivered
        if seq >= self._next + self.max_pending:
            raise DtlsLimitError(f"handshake message_seq {seq} is more than "
                                 f"{self.max_pending} ahead of {self._next}")
        if fragment.length > self.max_message:
            raise DtlsLimitError(f"handshake message of {fragment.length} bytes exceeds "
                                 f"the bound {self.max_message}")
        partial = self._partial.get(seq)
        if partial is None:
            partial = self._partial[seq] = _Partial(fragment.msg_type, fragment.length)
        elif (partial.msg_type, partial.length) != (fragment.msg_type, fragment.length):
            raise DtlsError(f"fragments of handshake message {seq} disagree on its type or "
                            "length")
        partial.add(fragment.offset, fragment.data)
        out: list[HandshakeMessage] = []
        while (ready := self._partial.get(self._next)) is not None and (
                ready.ranges == [(0, ready.length)] or ready.length == 0):
            del self._partial[self._next]
            out.append(HandshakeMessage(ready.msg_type, bytes(ready.body)))
            self._next += 1
        return out


def tls_client_hello_body(body: bytes) -> bytes:
    """A DTLS ClientHello body without its cookie field (RFC 6347 4.2.1: ``cookie<0..2^8-1>``
    follows ``session_id``): what remains is a TLS ClientHello body. Raises DtlsError when
    the fields up to the cookie are cut."""
    if len(body) < 35:
        raise DtlsError("DTLS ClientHello too short for version, random and session_id")
    at = 35 + body[34]
    if at >= len(body) or at + 1 + body[at] > len(body):
        raise DtlsError("DTLS ClientHello cut in its session_id or cookie")
    return body[:at] + body[at + 1 + body[at] :]


@dataclass(frozen=True, slots=True)
class HelloVerifyRequest:
    """RFC 6347 4.2.1: the server's stateless cookie challenge."""

    server_version: int
    cookie: bytes


def parse_hello_verify_request(body: bytes) -> HelloVerifyRequest:
    """Parse a HelloVerifyRequest body; raises DtlsError when it does not fit."""
    if len(body) < 3 or len(body) != 3 + body[2]:
        raise DtlsError(f"HelloVerifyRequest of {len(body)} bytes does not fit its cookie")
    return HelloVerifyRequest(int.from_bytes(body[:2], "big"), body[3:])


def _tls_records(content_type: int, payload: bytes) -> bytes:
    """``payload`` as TLS records of ``content_type`` (RFC 5246 6.2.1), at most 2^14 bytes
    each; the record version is irrelevant to the session and set to 0x0303."""
    out = bytearray()
    for start in range(0, max(len(payload), 1), 16384):
        chunk = payload[start : start + 16384]
        out += bytes((content_type, 3, 3)) + len(chunk).to_bytes(2, "big") + chunk
    return bytes(out)


class DtlsSession:
    """One DTLS association's handshake: datagrams in, a :class:`TlsSession` fed with the
    equivalent TLS stream per direction, whose ``record`` the event builder reads.

    DTLS 1.3 (RFC 9147) hides everything after the ServerHello; its handshake is taken as
    established when the client sends a protected record after the server did (its
    Finished), as for TLS 1.3 on TCP.

    :meth:`feed` raises ``ParseError`` for what does not parse; record-layer errors (a
    datagram that is not DTLS: STUN, RTP multiplexed on the same ports, RFC 7983) are
    counted by the caller and the session goes on; handshake errors end it, as on TCP.
    """

    __slots__ = ("_assemblers", "_protected", "cookie_exchange", "session", "versions")

    def __init__(self) -> None:
        self.session = TlsSession()
        self._assemblers = (MessageAssembler(), MessageAssembler())
        self.cookie_exchange = False
        self.versions: set[int] = set()
        self._protected = [0, 0]  # protected records seen: client, server

    @property
    def done(self) -> bool:
        return self.session.done

    def feed(self, from_client: bool, datagram: bytes, timestamp: float) -> None:
        """Read one datagram sent by the client (``from_client``) or the server."""
        if self.session.done or not datagram:
            return
        if not 20 <= datagram[0] <= 63:
            # RFC 7983 7: on a WebRTC 5-tuple, STUN (0-3), TURN channels (64-79) and
            # RTP/RTCP (128-191) share the ports with DTLS (20-63); they are not ours.
            return
        records = parse_records(datagram)
        side = Side.CLIENT if from_client else Side.SERVER
        stream = bytearray()
        for record in records:
            self.versions.add(record.version)
            stream += self._translate(from_client, record)
        try:
            self.session.feed(side, bytes(stream), timestamp)
        finally:
            self._after(from_client, timestamp)

    def close(self, reason: str) -> None:
        self.session.close(reason)
        self._after(True, None)

    def _translate(self, from_client: bool, record: DtlsRecord) -> bytes:
        side = 0 if from_client else 1
        if record.epoch or record.unified:
            self._protected[side] += 1
            # Protected: only its existence matters (the peer's Finished, then data).
            kind = ALERT if record.content_type == ALERT else APPLICATION_DATA
            return _tls_records(kind, record.fragment or b"\x00")
        if record.content_type != HANDSHAKE:
            return _tls_records(record.content_type, record.fragment)
        out = bytearray()
        try:
            for fragment in parse_fragments(record.fragment):
                for message in self._assemblers[side].add(fragment):
                    out += self._message(from_client, message)
        except DtlsError as error:
            self.session.record.parse_error = f"{'client' if from_client else 'server'}: {error}"
            self.session.close("parse_error")
            raise
        return bytes(out)

    def _message(self, from_client: bool, message: HandshakeMessage) -> bytes:
        body = message.body
        if message.msg_type == HELLO_VERIFY_REQUEST and not from_client:
            parse_hello_verify_request(body)
            self.cookie_exchange = True
            return b""  # not a TLS message: the client answers with a new ClientHello
        if message.msg_type == 1 and from_client:
            body = tls_client_hello_body(body)
        header = bytes((message.msg_type,)) + len(body).to_bytes(3, "big")
        return _tls_records(HANDSHAKE, header + body)

    def _after(self, from_client: bool, timestamp: float | None) -> None:
        record = self.session.record
        sh = record.server_hello
        if (not self.session.done and timestamp is not None and sh is not None
                and sh.selected_version == DTLS13 and from_client
                and self._protected[0] and self._protected[1]):
            record.established = True
            record.last_handshake_time = timestamp
            self.session.close("established")
        if self.session.done:
            record.record_versions = frozenset(self.versions)

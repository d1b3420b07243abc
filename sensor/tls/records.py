"""The TLS record layer, sans-IO: one :class:`TlsRecordParser` per direction of a flow.

Bytes of one direction go in, in order and in any chunking; :data:`TlsItem` records come
out in stream order. The parser reassembles handshake messages across records and splits
records holding several messages (RFC 8446 5.1, RFC 5246 6.2.1), and never reads what is
encrypted: once a direction is protected, records only yield their type and length.

Bounds: the parser holds at most one partial record (``max_record_length`` plus its
header) and one partial handshake message (``max_handshake_length`` plus its header) per
direction. A declared length beyond either bound raises instead of buffering.

SSLv2 (RFC 6101 appendix E, SSL 2.0 draft): an SSLv2-format record at the start of a
stream is accepted when it is a hello. A CLIENT-HELLO yields :class:`SSLv2ClientHello`.
A SERVER-HELLO yields a :class:`HandshakeMessage` with the pseudo type
:data:`SSLV2_SERVER_HELLO` (outside the 8-bit TLS range so it cannot be mistaken for a
TLS message) whose body is the SERVER-HELLO after its type byte; parse it with
:func:`sensor.tls.handshake.parse_sslv2_server_hello`. Later SSLv2 records of that
direction (CLIENT-MASTER-KEY, encrypted records, ERROR) yield
``EncryptedRecord(SSLV2_RECORD, length)``; they are not read.
"""

from __future__ import annotations

from typing import Final

from sensor.errors import HandshakeError, ParseError, TlsRecordError
from sensor.tls.handshake import parse_sslv2_client_hello
from sensor.tls.messages import (
    ALERT,
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    HANDSHAKE,
    HEARTBEAT,
    AlertMessage,
    ChangeCipherSpecMessage,
    EncryptedRecord,
    HandshakeMessage,
    SSLv2ClientHello,
    TlsItem,
)

SSLV2_SERVER_HELLO: Final = 0x0204
"""Pseudo ``msg_type`` of the HandshakeMessage carrying an SSLv2 SERVER-HELLO body."""

SSLV2_RECORD: Final = 0x80
"""Pseudo ``content_type`` of the EncryptedRecord yielded for SSLv2 records after a hello."""

DEFAULT_MAX_RECORD_LENGTH: Final = 16384 + 2048  # RFC 5246 6.2.3: TLSCiphertext bound
DEFAULT_MAX_HANDSHAKE_LENGTH: Final = 2**18

_HEADER = 5  # content type, version, length (RFC 8446 5.1)
_SSL2_CLIENT_HELLO, _SSL2_SERVER_HELLO = 1, 4
_SSL2_HELLO_VERSIONS: Final = frozenset({0x0002, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304})
_CONTENT_TYPES: Final = frozenset(
    {CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT}
)
_CCS: Final = ChangeCipherSpecMessage()
_VERSION_TUPLES: dict[tuple[int, ...], tuple[int, ...]] = {}  # bounded: 256, then emptied
_ENCRYPTED_ALERT: Final = AlertMessage(None, None, encrypted=True)

RawItem = TlsItem | tuple[int, bytes]
"""What :meth:`TlsRecordParser.feed_raw` yields: a handshake message as ``(msg_type, body)``,
anything else as the :data:`TlsItem` itself."""

#: EncryptedRecord items by (content type, length): they are frozen values, so equal ones
#: are shared instead of built per record (the lengths of Finished messages and of
#: application data repeat). Bounded; a full table is emptied.
ENCRYPTED_RECORD_ENTRIES = 4096
_encrypted_records: dict[int, EncryptedRecord] = {}


def _encrypted_record(content_type: int, length: int) -> EncryptedRecord:
    key = (content_type << 24) | length  # length < 2**24 (the record and SSLv2 bounds)
    record = _encrypted_records.get(key)
    if record is None:
        if len(_encrypted_records) >= ENCRYPTED_RECORD_ENTRIES:
            _encrypted_records.clear()
        record = _encrypted_records[key] = EncryptedRecord(content_type, length)
    return record


def looks_like_tls_start(data: bytes) -> bool:
    """Cheap content test on the first bytes of one direction: True when they start with
    a TLS handshake record header (type 22, major 3, minor 0..4, length 4..18432) carrying
    a ClientHello or ServerHello, or with an SSLv2-format CLIENT-HELLO / SERVER-HELLO.
    Needs at least 6 bytes (7 for an SSLv2 SERVER-HELLO); fewer give False. Used to find
    TLS on any port and after STARTTLS; it never raises.
    """
    if len(data) < 6:
        return False
    b0 = data[0]
    if b0 == HANDSHAKE:
        length = (data[3] << 8) | data[4]
        return (
            data[1] == 3
            and data[2] <= 4
            and 4 <= length <= DEFAULT_MAX_RECORD_LENGTH
            and data[5] in (1, 2)
        )
    if b0 & 0x80:
        length = ((b0 & 0x7F) << 8) | data[1]
        if data[2] == _SSL2_CLIENT_HELLO:
            # type, version, three 16-bit lengths, >=1 cipher spec, >=16-byte challenge
            return ((data[3] << 8) | data[4]) in _SSL2_HELLO_VERSIONS and length >= 28
        if data[2] == _SSL2_SERVER_HELLO and len(data) >= 7:
            return data[3] in (0, 1) and ((data[5] << 8) | data[6]) in _SSL2_HELLO_VERSIONS
    return False


_STARTED, _SSLV2, _SSLV2_ONLY, _TLS13 = 1, 2, 4, 8  # bits of TlsRecordParser._mode
_DEFAULT_LIMITS = (DEFAULT_MAX_RECORD_LENGTH, DEFAULT_MAX_HANDSHAKE_LENGTH)


class TlsRecordParser:
    """Record-layer parser for one direction of one connection.

    ``feed(data)`` returns the items completed by ``data`` (possibly none: incomplete
    input is buffered, the sans-IO "need more bytes"). Invalid input raises
    :class:`TlsRecordError` (unknown content type, major version other than 3, record
    longer than ``max_record_length``, not a hello at the start of an SSLv2 stream) or
    :class:`HandshakeError` (handshake message longer than ``max_handshake_length``, a
    message interrupted by another record type, a malformed SSLv2 CLIENT-HELLO). After an
    error the parser is finished: further ``feed`` calls raise the same error.

    Encryption: after a ChangeCipherSpec in this direction (TLS <= 1.2), handshake
    records yield ``EncryptedRecord`` and alert records ``AlertMessage(None, None,
    encrypted=True)``. Application data is always an ``EncryptedRecord``; heartbeat
    records are reported the same way, unread. TLS 1.3 (RFC 8446 5.1) protects
    everything after the ServerHello inside application_data records, which the parser
    already never reads, and its ChangeCipherSpec is a dummy (appendix D.4): the session
    layer should call :meth:`set_tls13` on both directions once a ServerHello or
    HelloRetryRequest selects TLS 1.3. :meth:`set_encrypted` marks a direction protected
    from now on, whatever the version.

    Attributes: ``record_versions`` is the set of record-layer versions seen (0x0002 for
    SSLv2 records); ``encrypted`` is True once this direction is protected.
    """

    # Memory: a sensor holds one parser per direction of every handshake in flight, so the
    # bounds are one shared pair and the four flags are bits of ``_mode`` (7 slots, 96 bytes).
    __slots__ = ("_buf", "_error", "_hs", "_limits", "_mode", "_versions", "encrypted")

    def __init__(
        self,
        *,
        max_record_length: int = DEFAULT_MAX_RECORD_LENGTH,
        max_handshake_length: int = DEFAULT_MAX_HANDSHAKE_LENGTH,
    ) -> None:
        limits = (max_record_length, max_handshake_length)
        self._limits = _DEFAULT_LIMITS if limits == _DEFAULT_LIMITS else limits
        # The partial record and the partial handshake message, allocated only while one
        # is pending: a sensor holds a parser per direction of every handshake in flight,
        # and most chunks end on a record boundary.
        self._buf: bytearray | None = None
        self._hs: bytearray | None = None
        # _STARTED: a record was read; _SSLV2: an SSLv2-format hello was seen in this
        # direction; _SSLV2_ONLY: ... and it spoke version 2, every record is SSLv2;
        # _TLS13: set_tls13 was called.
        self._mode = 0
        self._error: ParseError | None = None
        self._versions: tuple[int, ...] = ()  # record versions in order of first sight
        self.encrypted = False

    @property
    def record_versions(self) -> set[int]:
        """The record-layer versions seen so far (a new set on every access)."""
        return set(self._versions)

    @property
    def versions_seen(self) -> tuple[int, ...]:
        """The record-layer versions seen so far, in order of first sight (a tuple shared
        between parsers that saw the same ones: no copy)."""
        return self._versions

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a record or handshake message."""
        buf, hs = self._buf, self._hs
        if buf is None:
            return 0 if hs is None else len(hs)
        return len(buf) if hs is None else len(buf) + len(hs)

    def set_encrypted(self) -> None:
        """From now on every handshake and alert record of this direction is protected."""
        self.encrypted = True
        self._mode &= ~_TLS13

    def set_tls13(self) -> None:
        """TLS 1.3 was selected: ChangeCipherSpec no longer protects the direction and any
        protection it already set is undone (RFC 8446 D.4: a client may send its dummy
        CCS before a second, plaintext ClientHello), and handshake/alert records stay
        readable, because protected 1.3 records are always application_data (5.1)."""
        self._mode |= _TLS13
        self.encrypted = False

    def feed(self, data: bytes) -> list[TlsItem]:
        """Add the next bytes of this direction; return the items they complete. Raises
        the parse error, if ``data`` holds one, instead (items before it are lost: see
        :meth:`feed_until_error`)."""
        items, error = self.feed_until_error(data)
        if error is not None:
            raise error
        return items

    def feed_until_error(self, data: bytes) -> tuple[list[TlsItem], ParseError | None]:
        """Like :meth:`feed`, but return the items completed before an error together with
        the error, so a record that parses is not lost to garbage later in the same chunk
        (tls_invalid_reads.pcap: a ServerHello, then a record of content type 170)."""
        raw, error = self.feed_raw(data)
        items: list[TlsItem] = [
            HandshakeMessage(item[0], item[1]) if isinstance(item, tuple) else item
            for item in raw
        ]
        return items, error

    def feed_raw(self, data: bytes) -> tuple[list[RawItem], ParseError | None]:
        """:meth:`feed_until_error` for the session layer: each handshake message comes as
        a plain ``(msg_type, body)`` tuple instead of a :class:`HandshakeMessage` (the
        session reads the two fields once; building the frozen record was a tenth of a
        handshake's parsing cost). Other items are the same objects."""
        if self._error is not None:
            return [], self._error
        items: list[RawItem] = []
        # Records are read straight from ``data`` when nothing is pending, so a chunk of
        # whole records is never copied; only a trailing partial record is kept. A TLS
        # record (RFC 8446 5.1) is read inline: nearly every record is one.
        buf = self._buf
        source: bytes | bytearray
        if buf:
            buf += data
            source = buf
        else:
            source = data
        pos, end = 0, len(source)
        max_record = self._limits[0]
        try:
            while end - pos >= 2:
                content_type = source[pos]
                mode = self._mode
                if content_type & 0x80 and (mode & _SSLV2 or not mode & _STARTED):
                    used = self._sslv2_record(source, pos, end, 2, items)
                elif mode & _SSLV2_ONLY:
                    used = self._sslv2_record(source, pos, end, 3, items)
                else:
                    if end - pos < _HEADER:
                        break
                    if content_type not in _CONTENT_TYPES:
                        raise TlsRecordError(f"not a TLS record: content type {content_type}")
                    major = source[pos + 1]
                    if major != 3:
                        raise TlsRecordError(f"not a TLS record: major version {major}")
                    length = (source[pos + 3] << 8) | source[pos + 4]
                    if length > max_record:
                        raise TlsRecordError(f"record length {length} exceeds {max_record}")
                    stop = pos + _HEADER + length
                    if stop > end:
                        break
                    version = 0x300 | source[pos + 2]
                    if version not in self._versions:
                        self._add_version(version)
                    if content_type == HANDSHAKE and not self.encrypted:
                        self._handshake_fragment(source, pos + _HEADER, stop, items)
                    else:
                        self._other_record(content_type, source, pos + _HEADER, length, items)
                    used = stop - pos
                if used == 0:
                    break
                pos += used
                if not mode & _STARTED:
                    self._mode |= _STARTED
        except ParseError as exc:
            # The parser is finished (see the class): nothing pending is kept.
            self._error = exc
            self._buf = self._hs = None
            return items, exc
        if pos >= end:
            self._buf = None
        elif source is buf:
            del buf[:pos]
        else:
            self._buf = bytearray(source[pos:])
        return items, None

    def _other_record(
        self, content_type: int, buf: bytes | bytearray, start: int, length: int,
        items: list[RawItem],
    ) -> None:
        """A TLS record other than a readable handshake record, at ``start``."""
        if content_type == HANDSHAKE:  # protected
            items.append(_encrypted_record(HANDSHAKE, length))
            return
        if self._hs:
            # RFC 8446 5.1: a fragmented handshake message must not be interleaved.
            raise HandshakeError(
                f"handshake message interrupted by a record of content type {content_type}"
            )
        if content_type == ALERT:
            if self.encrypted or length != 2:
                # A protected alert; outside protection an alert is exactly 2 bytes, so
                # another length can only be one we did not know was protected.
                items.append(_ENCRYPTED_ALERT)
            else:
                items.append(AlertMessage(buf[start], buf[start + 1]))
        elif content_type == CHANGE_CIPHER_SPEC:
            items.append(_CCS)
            if not self._mode & _TLS13:
                self.encrypted = True
        else:  # application_data, heartbeat
            items.append(_encrypted_record(content_type, length))

    def _handshake_fragment(
        self, buf: bytes | bytearray, start: int, stop: int, items: list[RawItem]
    ) -> None:
        """The handshake record body ``buf[start:stop]``: its complete messages, read in
        place when no message is pending (RFC 8446 5.1: messages may share a record or
        span several)."""
        hs = self._hs
        source: bytes | bytearray
        if hs:
            hs += buf[start:stop]
            source, pos, end = hs, 0, len(hs)
        else:
            source, pos, end = buf, start, stop
        max_hs = self._limits[1]
        while end - pos >= 4:
            length = (source[pos + 1] << 16) | (source[pos + 2] << 8) | source[pos + 3]
            if length > max_hs:
                raise HandshakeError(
                    f"handshake message type {source[pos]} length {length} exceeds {max_hs}"
                )
            if end - pos < 4 + length:
                break
            items.append((source[pos], bytes(source[pos + 4 : pos + 4 + length])))
            pos += 4 + length
        if pos >= end:
            self._hs = None
        elif source is hs:
            del hs[:pos]
        else:
            self._hs = bytearray(source[pos:end])

    def _add_version(self, version: int) -> None:
        versions = (*self._versions, version)
        # Shared between parsers (memory: one per direction of every handshake in flight).
        if len(_VERSION_TUPLES) >= 256:
            _VERSION_TUPLES.clear()
        self._versions = _VERSION_TUPLES.setdefault(versions, versions)

    def _sslv2_record(
        self, buf: bytes | bytearray, pos: int, end: int, header: int, items: list[RawItem]
    ) -> int:
        """Consume one SSLv2 record (2-byte header if the top bit is set, else 3-byte)."""
        if end - pos < header:
            return 0
        mask = 0x7F if header == 2 else 0x3F
        length = ((buf[pos] & mask) << 8) | buf[pos + 1]
        if length == 0 or length > self._limits[0]:
            raise TlsRecordError(f"SSLv2 record length {length} out of range")
        if end - pos < header + length:
            return 0
        if 0x0002 not in self._versions:
            self._add_version(0x0002)
        start = pos + header
        body = bytes(buf[start : start + length])
        if self._mode & _SSLV2:
            items.append(_encrypted_record(SSLV2_RECORD, length))
        elif body[0] == _SSL2_CLIENT_HELLO:
            hello = parse_sslv2_client_hello(body[1:])
            items.append(SSLv2ClientHello(hello))
            self._enter_sslv2(hello.legacy_version)
        elif body[0] == _SSL2_SERVER_HELLO and length >= 5:
            items.append((SSLV2_SERVER_HELLO, body[1:]))
            self._enter_sslv2((body[3] << 8) | body[4])
        else:
            raise TlsRecordError(f"SSLv2 record of message type {body[0]} at stream start")
        return header + length

    def _enter_sslv2(self, version: int) -> None:
        # RFC 6101 E.1: a client offering TLS in an SSLv2 hello continues in TLS records;
        # one that speaks version 2 (or a server that answers in it) stays in SSLv2.
        self._mode |= _SSLV2 | (_SSLV2_ONLY if version == 0x0002 else 0)

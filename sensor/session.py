"""One TLS session's handshake, followed message by message in both directions.

The session is sans-IO: the flow layer hands it reassembled bytes per direction with their
capture time, and it tells the flow when the handshake is over (established, failed or
cut short). It judges nothing; it records what was said and by whom.

When is a handshake over? (RFC 5246 7.3, RFC 8446 2)
- TLS <= 1.2: both sides have sent ChangeCipherSpec and then an encrypted record (their
  Finished). Resumption is visible: the server sends its ChangeCipherSpec right after the
  ServerHello, with no Certificate.
- TLS 1.3: everything after the ServerHello is encrypted, so the last visible sign of a
  completed handshake is the client's first encrypted record after the server has sent its
  encrypted flight (the client Finished).
- A fatal alert, a parse error, or the end of the flow ends it unestablished.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sensor.errors import ParseError
from sensor.tls import messages as m
from sensor.tls.handshake import (
    parse_certificate,
    parse_client_hello,
    parse_server_hello,
    parse_server_key_exchange,
    parse_sslv2_server_hello,
    share_alpn,
    share_server_name,
)
from sensor.tls.records import SSLV2_RECORD, SSLV2_SERVER_HELLO, RawItem, TlsRecordParser
from sensor.tls.registry import cipher_suite

TLS13 = 0x0304
FATAL = 2


class Side(Enum):
    CLIENT = "client"
    SERVER = "server"


def is_tls13(version: int) -> bool:
    """TLS 1.3 and its drafts (0x7fXX, RFC 8446 predecessors, and Facebook's 0xfbXX)
    encrypt after the ServerHello."""
    return version == TLS13 or (version >> 8) in (0x7F, 0xFB)


@dataclass(slots=True)
class SessionRecord:
    """Everything seen of one handshake; frozen into an event by ``sensor.build``.

    Memory: a sensor holds one of these per connection in its handshake (100,000 at once on
    a busy tap), so the sequences are tuples, replaced when they grow (they rarely hold
    more than one or two items), not a list or set each.
    """

    client_hello: m.ClientHello | None = None
    server_hello: m.ServerHello | None = None
    # The first ServerHello the server sent: the HelloRetryRequest when there was one
    # (RFC 8446 4.1.4), else ``server_hello``. JA3S/JA4S describe it, paired with the first
    # ClientHello, as tshark and nDPI compute them (steam.pcapng, tls13-draft22).
    first_server_hello: m.ServerHello | None = None
    hello_retry_request: bool = False
    server_certificates: tuple[bytes, ...] = ()
    client_certificates: tuple[bytes, ...] = ()
    server_key_exchange: m.ServerKeyExchange | None = None
    alerts: tuple[tuple[Side, m.AlertMessage], ...] = ()
    client_hello_time: float | None = None
    server_hello_time: float | None = None
    last_handshake_time: float | None = None
    established: bool = False
    resumed: bool = False
    ended_by: str | None = None
    parse_error: str | None = None
    # What the parsers tolerated (``ClientHello.irregularities``), in the order seen; the
    # sensor counts each as an anomaly while the handshake goes on.
    irregularities: tuple[str, ...] = ()
    # Record-layer versions seen in either direction; filled in when the session ends.
    record_versions: frozenset[int] = frozenset()


#: Certificate message bodies already split into their DER certificates, by the body itself
#: and the TLS 1.3 flag: a server sends the same chain on every connection, so the chain is
#: parsed once and every session holding it shares the same ``bytes`` objects (100,000
#: handshakes in flight would otherwise hold 100,000 copies of the same chain). Keyed by
#: the body, not its SHA-256: the dict's own hash of a few KB and one comparison on a hit
#: cost a third of a SHA-256 (~2 us a connection on the throughput benchmark); the body is
#: then held as well as its chain, so each entry counts twice its length against
#: ``CHAIN_CACHE_BYTES``. Bounded by entries and by those bytes; a full table is emptied.
CHAIN_CACHE_ENTRIES = 1024
CHAIN_CACHE_BYTES = 8 * 1024 * 1024
_chains: dict[tuple[bytes, bool], tuple[bytes, ...]] = {}
_chain_bytes = 0


def _certificate_chain(body: bytes, tls13: bool) -> tuple[bytes, ...]:
    """``parse_certificate(body).certificates``, shared with earlier sessions that received
    the same body (same errors: a body that does not parse is never cached)."""
    global _chain_bytes
    key = (body, tls13)
    chain = _chains.get(key)
    if chain is not None:
        return chain
    chain = parse_certificate(body, tls13=tls13).certificates
    held = 2 * len(body)  # the key's body and the chain's certificates
    if len(_chains) >= CHAIN_CACHE_ENTRIES or _chain_bytes + held > CHAIN_CACHE_BYTES:
        _chains.clear()
        _chain_bytes = 0
    if held <= CHAIN_CACHE_BYTES:
        _chains[key] = chain
        _chain_bytes += held
    return chain


def _shared_fields(hello: m.ClientHello) -> m.ClientHello:
    """``hello`` with its server name and ALPN list replaced by equal ones already held by
    earlier hellos (the same hello when there is nothing to share: always for a hello the
    fast parser read, whose tail holds the shared ones already)."""
    name: str | None = hello.server_name
    alpn = hello.alpn
    shared_name = name if name is None else share_server_name(name)
    shared_alpn = share_alpn(alpn) if alpn else alpn
    if shared_name is name and shared_alpn is alpn:
        return hello
    # The constructor with every field: a third of the cost of dataclasses.replace.
    return m.ClientHello(
        hello.legacy_version, hello.random, hello.session_id, hello.cipher_suites,
        hello.compression_methods, hello.extensions, shared_name, shared_alpn,
        hello.supported_versions, hello.supported_groups, hello.ec_point_formats,
        hello.signature_algorithms, hello.sslv2_format, hello.irregularities,
    )


#: The record versions of a session's two directions, as one frozenset, by the parsers'
#: (shared) tuples: nearly every session of a sensor has one of a few pairs. Bounded.
RECORD_VERSION_SETS = 256
_record_version_sets: dict[tuple[tuple[int, ...], tuple[int, ...]], frozenset[int]] = {}


def _record_versions(client: tuple[int, ...], server: tuple[int, ...]) -> frozenset[int]:
    key = (client, server)
    versions = _record_version_sets.get(key)
    if versions is None:
        if len(_record_version_sets) >= RECORD_VERSION_SETS:
            _record_version_sets.clear()
        versions = _record_version_sets[key] = frozenset(client + server)
    return versions


_CLIENT, _SERVER = Side.CLIENT, Side.SERVER
_ENCRYPTED_RECORD = m.EncryptedRecord
# Bits of TlsSession._ccs: who has sent ChangeCipherSpec; whether the parsers were switched
# to TLS 1.3 record handling (set_tls13), which a parser created later inherits; who has
# sent an encrypted record; whether the session is over (``done``). One int, not six slots:
# a sensor holds a session per handshake in flight.
_CCS_CLIENT, _CCS_SERVER, _TLS13_PARSERS = 1, 2, 4
_ENCRYPTED_CLIENT, _ENCRYPTED_SERVER, _DONE = 8, 16, 32
_CCS_BOTH = _CCS_CLIENT | _CCS_SERVER
_ENCRYPTED_BOTH = _ENCRYPTED_CLIENT | _ENCRYPTED_SERVER
_CCS_ENCRYPTED_BOTH = _CCS_BOTH | _ENCRYPTED_BOTH


class TlsSession:
    """Feeds both directions' bytes through record parsers and tracks the handshake.

    A direction's record parser is created when that side first sends (a server that never
    answers costs none) and dropped when the session ends.
    """

    __slots__ = ("_ccs", "_client", "_server", "record")

    def __init__(self) -> None:
        self.record = SessionRecord()
        self._client: TlsRecordParser | None = None
        self._server: TlsRecordParser | None = None
        self._ccs = 0  # the bits above

    @property
    def done(self) -> bool:
        """The handshake is over (established, failed or cut short): nothing more is parsed."""
        return bool(self._ccs & _DONE)

    def _new_parser(self, side: Side) -> TlsRecordParser:
        """The record parser of ``side``, which has none yet."""
        parser = TlsRecordParser()
        if self._ccs & _TLS13_PARSERS:
            # What _on_server_hello did to the parsers that existed then.
            parser.set_tls13()
        if side is _CLIENT:
            self._client = parser
        else:
            self._server = parser
        return parser

    def feed(self, side: Side, data: bytes, timestamp: float) -> bool:
        """Parse ``data`` sent by ``side``; return whether the session is over (``done``).
        A parse error ends the session and is re-raised for the caller to count; nothing
        else escapes."""
        if self._ccs & _DONE or not data:
            return bool(self._ccs & _DONE)
        parser = self._client if side is _CLIENT else self._server
        if parser is None:
            parser = self._new_parser(side)
        try:
            items, record_error = parser.feed_raw(data)
            for item in items:
                # The two kinds nearly every item is, dispatched without _on_item's
                # isinstance chain (which takes everything else, subclasses included): a
                # handshake message, which feed_raw gives as a (msg_type, body) pair, and
                # an encrypted record.
                if type(item) is tuple:
                    msg_type, body = item
                    self._on_handshake(side, msg_type, body, timestamp)
                elif type(item) is _ENCRYPTED_RECORD:
                    self._on_encrypted(side, item, timestamp)
                else:
                    self._on_item(side, item, timestamp)
                if self._ccs & _DONE:
                    break
            if record_error is not None and not self._ccs & _DONE:
                raise record_error
        except ParseError as error:
            self.record.parse_error = f"{side.value}: {error}"
            self._finish("parse_error")
            raise
        return bool(self._ccs & _DONE)

    def close(self, reason: str) -> None:
        """The flow ended (FIN, RST, idle timeout, eviction, end of capture) before the
        handshake completed."""
        if not self.done:
            self._finish(reason)

    @property
    def has_hello(self) -> bool:
        return self.record.client_hello is not None or self.record.first_server_hello is not None

    @property
    def buffered(self) -> int:
        """Bytes the record parsers hold (a partial record or handshake message per side),
        for the sensor's global buffer budget."""
        client, server = self._client, self._server
        if client is None:
            return 0 if server is None else server.buffered
        return client.buffered if server is None else client.buffered + server.buffered

    def _finish(self, reason: str) -> None:
        self._ccs |= _DONE
        self.record.ended_by = reason
        client, server = self._client, self._server
        self.record.record_versions = _record_versions(
            () if client is None else client.versions_seen,
            () if server is None else server.versions_seen,
        )
        self._client = self._server = None

    def _on_item(self, side: Side, item: RawItem, timestamp: float) -> None:
        # The item classes are unrelated, so the order of the tests only saves time: a
        # ChangeCipherSpec (two per TLS <= 1.2 handshake) first.
        if isinstance(item, m.ChangeCipherSpecMessage):
            self._ccs |= _CCS_CLIENT if side is _CLIENT else _CCS_SERVER
            sh = self.record.server_hello
            if (side is _SERVER and sh is not None and not is_tls13(sh.selected_version)
                    and not self.record.server_certificates):
                # RFC 5246 7.3 abbreviated handshake: the server's CCS follows its
                # ServerHello directly when it resumes a session. (TLS 1.3's CCS is only
                # middlebox camouflage, RFC 8446 D.4.)
                self.record.resumed = True
        elif isinstance(item, m.AlertMessage):
            self.record.alerts += ((side, item),)
            if item.level == FATAL:
                self._finish("alert")
        elif isinstance(item, tuple):
            self._on_handshake(side, item[0], item[1], timestamp)
        elif isinstance(item, m.HandshakeMessage):
            self._on_handshake(side, item.msg_type, item.body, timestamp)
        elif isinstance(item, m.EncryptedRecord):
            self._on_encrypted(side, item, timestamp)
        elif isinstance(item, m.SSLv2ClientHello):
            self._on_client_hello(item.client_hello, timestamp)

    def _on_encrypted(self, side: Side, item: m.EncryptedRecord, timestamp: float) -> None:
        self._ccs |= _ENCRYPTED_CLIENT if side is _CLIENT else _ENCRYPTED_SERVER
        sh = self.record.server_hello
        if sh is None:
            return
        if item.content_type == SSLV2_RECORD:
            # SSLv2 (RFC 6101 E, the SSLv2 draft): after the SERVER-HELLO both sides' next
            # records (CLIENT-MASTER-KEY, then encrypted FINISHED) complete the handshake.
            if self._ccs & _ENCRYPTED_BOTH == _ENCRYPTED_BOTH:
                self._established(timestamp)
        elif is_tls13(sh.selected_version):
            # The client's first encrypted record after the server's flight is its Finished
            # (a middlebox-compatibility CCS is not a record the parser reports as encrypted).
            if side is _CLIENT and self._ccs & _ENCRYPTED_SERVER:
                self._established(timestamp)
        elif self._ccs & _CCS_ENCRYPTED_BOTH == _CCS_ENCRYPTED_BOTH:
            self._established(timestamp)
        else:
            self.record.last_handshake_time = timestamp

    def _established(self, timestamp: float) -> None:
        self.record.established = True
        self.record.last_handshake_time = timestamp
        self._finish("established")

    def _on_handshake(self, side: Side, msg_type: int, body: bytes, timestamp: float) -> None:
        self.record.last_handshake_time = timestamp
        if msg_type == m.CLIENT_HELLO and side is _CLIENT:
            self._on_client_hello(parse_client_hello(body), timestamp)
        elif msg_type == m.SERVER_HELLO and side is _SERVER:
            self._on_server_hello(parse_server_hello(body), timestamp)
        elif msg_type == SSLV2_SERVER_HELLO and side is _SERVER:
            hello, certificates = parse_sslv2_server_hello(body)
            self._on_server_hello(hello, timestamp)
            self.record.server_certificates = certificates.certificates
        elif msg_type == m.CERTIFICATE:
            self._on_certificate(side, body)
        elif msg_type == m.SERVER_KEY_EXCHANGE and side is _SERVER:
            sh = self.record.server_hello
            if sh is not None:
                kex = cipher_suite(sh.cipher_suite).kx
                self.record.server_key_exchange = parse_server_key_exchange(
                    body, key_exchange=kex
                )

    def _on_client_hello(self, hello: m.ClientHello, timestamp: float) -> None:
        if hello.irregularities:
            self.record.irregularities += hello.irregularities
        # After a HelloRetryRequest the client sends a second ClientHello; the first one is
        # what the client offered unprompted and what JA3/JA4 describe, so it is kept.
        if self.record.client_hello is None:
            self.record.client_hello = _shared_fields(hello)
            self.record.client_hello_time = timestamp

    def _on_server_hello(self, hello: m.ServerHello, timestamp: float) -> None:
        if self.record.first_server_hello is None:
            self.record.first_server_hello = hello
        if hello.is_hello_retry_request:
            # RFC 8446 4.1.4: the server asks for another key share; the real ServerHello
            # follows in clear, after a dummy ChangeCipherSpec that must not be taken for
            # the start of encryption.
            self.record.hello_retry_request = True
            self._set_tls13()
            return
        self.record.server_hello = hello
        self.record.server_hello_time = timestamp
        ch = self.record.client_hello
        if ch is not None and ch.session_id and ch.session_id == hello.session_id:
            # Session-id resumption (RFC 5246 7.4.1.3); TLS 1.3 echoes the id for
            # middlebox compatibility (RFC 8446 4.1.3), so it means nothing there.
            self.record.resumed = not is_tls13(hello.selected_version)
        if is_tls13(hello.selected_version):
            if any(ext.type == 0x0029 for ext in hello.extensions):
                self.record.resumed = True  # pre_shared_key accepted (RFC 8446 4.2.11)
            # Everything after this is encrypted in records of outer type
            # application_data (RFC 8446 5.2); a ChangeCipherSpec is only camouflage (D.4).
            self._set_tls13()

    def _set_tls13(self) -> None:
        self._ccs |= _TLS13_PARSERS
        for parser in (self._client, self._server):
            if parser is not None:
                parser.set_tls13()

    def _on_certificate(self, side: Side, body: bytes) -> None:
        sh = self.record.server_hello
        tls13 = sh is not None and is_tls13(sh.selected_version)
        chain = _certificate_chain(body, tls13)
        if side is _SERVER:
            self.record.server_certificates = chain
        else:
            self.record.client_certificates = chain

"""Turning what a session saw into the schema's events (``schemas.events``).

This is where numbers get names (registry), certificates get described (``sensor.x509``,
cached by DER hash) and fingerprints get computed, once per handshake, off the per-packet
path.

Speed: building an event used to cost more than parsing the handshake (pydantic validation
of every nested model, the registry lookups of every list, the JA4 variants). Most of an
event repeats across handshakes: the same client software sends the same hello lists, a
server sends the same chain. So the parts that are functions of those alone (the hello
summaries with their fingerprints, each certificate's models, the ``tls.server`` block) are
validated once and reused from bounded memo tables; the models are frozen, so sharing them
between events is safe. The per-event models are made without validating them again
(``sensor.fastmodel``: every value is already of its field's type; a test builds every test
capture's events both ways and compares them), and the small ones that repeat (``network``,
the server's endpoint, the key exchange) are memoised too. The seven made for every event
use ``fastmodel.maker`` constructors (a third of the cost of ``make``); a chain's list of
entries is memoised with the chain, each ServerHello's memo key is computed once per event,
and a chain whose certificates were all announced within the TTL is known as such in one
lookup (``_announced_recently``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from schemas.base import Endpoint, EventFields, Network, NetworkInner, Observer, Vlan
from schemas.events import (
    AnomalyDetail,
    AnomalyEvent,
    AnomalyExtension,
    CertificateEvent,
    CertificateExtension,
    CertificateSighting,
    FlowCounters,
    HandshakeEvent,
    HandshakeExtension,
)
from schemas.tls import (
    ClientHelloSummary,
    HandshakeTiming,
    KeyExchange,
    ServerHelloSummary,
    Tls,
    TlsAlert,
    TlsClient,
    TlsDetail,
    TlsServer,
)
from schemas.x509 import X509, CertificateExtra, ChainCertificate, DistinguishedName, Hashes
from sensor import fingerprints
from sensor.anomalies import Anomaly
from sensor.config import SensorConfig
from sensor.decode import format_addr
from sensor.fastmodel import make, maker
from sensor.flows import Flow
from sensor.session import SessionRecord, Side
from sensor.tls import messages as m
from sensor.tls import registry
from sensor.x509 import CertificateCache, CertificateInfo

KEY_SHARE = 0x0033
#: Entries kept in each memo table of the builder (see the module docstring). A full table is
#: emptied and refilled, and the reset counted in ``EventBuilder.memo_resets``: the memos only
#: save work, so dropping them never changes an event.
MEMO_ENTRIES = 4096
#: The chain memo (``EventBuilder._chain``) holds the chains' DER: at most this many chains
#: and this many bytes of DER (as ``sensor.session``'s chain cache).
CHAIN_MEMO_ENTRIES = 1024
CHAIN_MEMO_BYTES = 8 * 1024 * 1024

# The models made afresh for every handshake event, each by a constructor taking its values
# in this order (``sensor.fastmodel.maker``: about a third of the cost of ``make``).
_new_handshake = maker(HandshakeEvent, "timestamp", "event", "observer", "source",
                       "destination", "network", "tls", "certwatch")
_new_event_fields = maker(EventFields, "id", "kind", "category", "type", "dataset", "outcome",
                          "start", "end", "duration")
_new_endpoint = maker(Endpoint, "ip", "port")
_new_extension = maker(HandshakeExtension, "tls", "flow")
_new_counters = maker(FlowCounters, "packets", "bytes")
_new_timing = maker(HandshakeTiming, "client_hello_to_server_hello",
                    "server_hello_to_handshake_end")
_new_detail = maker(TlsDetail, "client_hello", "server_hello", "server_chain", "client_chain",
                    "certificate_encrypted", "key_exchange", "alerts", "timing",
                    "record_versions", "ended_by", "parse_error")


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def nanoseconds(start: float | None, end: float | None) -> int | None:
    if start is None or end is None or end < start:
        return None
    return round((end - start) * 1e9)


def event_id(*parts: object) -> str:
    """A stable identifier: replaying the same capture gives the same ids."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def _deciding_server_hello(record: SessionRecord) -> m.ServerHello | None:
    """The ServerHello that says what was negotiated: the real one, else a lone
    HelloRetryRequest, which already names the version and cipher suite the server chose
    (RFC 8446 4.1.4; tumblr.pcap: the client gave up after it). tshark and nDPI report
    those too."""
    return record.server_hello or record.first_server_hello


def _hello_key(ch: m.ClientHello) -> tuple[Hashable, ...]:
    """Everything of a ClientHello that its summary (and JA3/JA4, the ciphers list of
    ``tls.client``) is a function of."""
    return (
        ch.legacy_version, ch.cipher_suites, tuple([e.type for e in ch.extensions]),
        ch.supported_versions, ch.supported_groups, ch.ec_point_formats,
        ch.signature_algorithms, ch.alpn, len(ch.session_id), ch.sslv2_format,
    )


def _server_hello_key(sh: m.ServerHello) -> tuple[Hashable, ...]:
    """Everything of a ServerHello that its summary and fingerprints are a function of."""
    return (
        sh.legacy_version, sh.selected_version, sh.cipher_suite,
        tuple([e.type for e in sh.extensions]), sh.compression_method,
        sh.is_hello_retry_request, sh.alpn,
    )


@dataclass(frozen=True, slots=True)
class _CertificateModels:
    """One certificate's models, the same in every event that carries it."""

    hashes: Hashes
    x509: X509 | None
    extra: CertificateExtra
    chain_entry: ChainCertificate
    der_base64: str


@dataclass(frozen=True, slots=True)
class _HelloModels:
    """What a ClientHello's lists give: its summary, JA3 and the named cipher list."""

    summary: ClientHelloSummary
    ja3: str
    supported_ciphers: list[str]


class HandshakeEvents(NamedTuple):
    """A handshake event, the certificate events it brings, and its version for counting
    (a NamedTuple: one is made per handshake)."""

    handshake: HandshakeEvent
    certificates: list[CertificateEvent]
    version_label: str


class EventBuilder:
    """Builds events; owns the certificate description cache and the "seen" TTL table."""

    def __init__(self, config: SensorConfig) -> None:
        self.config = config
        self.observer = Observer(name=config.name)
        self.certificates = CertificateCache(config.certificate_cache_size)
        self._announced: dict[str, float] = {}
        # id(chain's list of descriptions) -> (that list, the oldest announcement time of
        # its certificates): see ``_announced_recently``.
        self._chains_announced: dict[int, tuple[list[CertificateInfo], float]] = {}
        # Memo tables (module docstring), bounded by MEMO_ENTRIES each.
        self.memo_resets = 0
        self._cert_models: dict[str, _CertificateModels] = {}
        self._hellos: dict[tuple[Hashable, ...], _HelloModels] = {}
        self._server_hellos: dict[tuple[Hashable, ...], ServerHelloSummary] = {}
        self._ja3s: dict[tuple[Hashable, ...], str] = {}
        self._servers: dict[tuple[Hashable, ...], TlsServer] = {}
        self._chains: dict[int, tuple[tuple[bytes, ...], list[CertificateInfo],
                                      list[_CertificateModels], list[ChainCertificate]]] = {}
        self._chain_bytes = 0
        self._version_lists: dict[frozenset[int], list[str]] = {}
        self._tls_blocks: dict[tuple[Hashable, ...],
                               tuple[_HelloModels | None, TlsServer, Tls]] = {}
        self._networks: dict[tuple[Hashable, ...], Network] = {}
        self._key_exchanges: dict[tuple[int | None, str | None], KeyExchange] = {}
        self._server_endpoints: dict[tuple[bytes, int], Endpoint] = {}
        self._server_sides: dict[tuple[bytes, int, str, tuple[int, ...]],
                                 tuple[Endpoint, Network]] = {}

    def _remember(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= MEMO_ENTRIES:
            table.clear()
            self.memo_resets += 1
        table[key] = value

    # -- handshakes ------------------------------------------------------------------------

    def handshake(self, flow: Flow, record: SessionRecord, ja4_transport: str = "t"
                  ) -> HandshakeEvents:
        """The events of one finished handshake. ``ja4_transport`` is JA4's protocol
        character: ``t`` (TCP), ``q`` (QUIC) or ``d`` (DTLS); the latter two are UDP."""
        (client_addr, client_port), (server_addr, server_port) = flow.client_server()
        client_ip = format_addr(client_addr)
        destination, network = self._server_side(flow, server_addr, server_port, ja4_transport)
        server_ip = destination.ip
        start = record.client_hello_time or record.server_hello_time or flow.session_start
        end = record.last_handshake_time or start
        server_chain, server_models, server_entries = self._chain(record.server_certificates)
        client_chain, client_models, client_entries = self._chain(record.client_certificates)
        ch, sh = record.client_hello, _deciding_server_hello(record)
        hello = self._hello_models(ch, ja4_transport) if ch else None
        curve = self._curve(record)
        first_sh = record.first_server_hello or sh
        # Each ServerHello's key once: the ServerHello summary, JA3S and ``tls.server`` are
        # memoised by it.
        first_key = _server_hello_key(first_sh) if first_sh else None
        tls = self._tls(record, hello, curve, server_chain, server_models, client_models,
                        first_key)
        selected = record.server_hello
        timing = _new_timing(
            nanoseconds(record.client_hello_time, record.server_hello_time),
            nanoseconds(record.server_hello_time, record.last_handshake_time))
        detail = _new_detail(
            hello.summary if hello else None,
            self._server_hello(sh, first_sh, ch, first_key) if sh and first_sh else None,
            server_entries,
            client_entries,
            selected is not None
            and registry.version_ecs(selected.selected_version) == ("tls", "1.3"),
            self._key_exchange(record, curve),
            [self._alert(side, alert) for side, alert in record.alerts] if record.alerts
            else [],
            timing,
            self._record_versions(record.record_versions),
            record.ended_by or "capture_end",
            record.parse_error,
        )
        started = datetime.fromtimestamp(start, UTC)  # utc(start), without the call
        name = self.observer.name
        event = _new_handshake(
            started,
            _new_event_fields(
                # event_id(name, client_ip, client_port, server_ip, server_port, repr(start)),
                # written out: one f-string instead of str() of each part and a join.
                hashlib.sha256(f"{name}|{client_ip}|{client_port}|{server_ip}|{server_port}|"
                               f"{start!r}".encode()).hexdigest()[:24],
                "event", ["network"], ["connection", "protocol"], "certwatch.tls.handshake",
                "success" if record.established else "failure",
                started, started if end == start else datetime.fromtimestamp(end, UTC),
                nanoseconds(start, end),
            ),
            self.observer,
            _new_endpoint(client_ip, client_port),
            destination,
            network,
            tls,
            _new_extension(detail, _new_counters(flow.packets, flow.bytes)),
        )
        if client_chain or (server_chain and not self._announced_recently(server_chain, start)):
            certs = self._certificate_events(
                start, server_ip, server_port, ch.server_name if ch else None,
                ((Side.SERVER, server_chain, server_models),
                 (Side.CLIENT, client_chain, client_models)),
            )
            if server_chain and not client_chain:
                self._remember_announced(server_chain)
        else:
            certs = []
        label = registry.version_name(sh.selected_version) if sh else "no ServerHello"
        return HandshakeEvents(event, certs, label)

    def _chain(self, ders: tuple[bytes, ...]) -> tuple[
            list[CertificateInfo], list[_CertificateModels], list[ChainCertificate]]:
        """Each certificate's description, models and chain entry, leaf first (the lists
        are shared between events: read them only). Memoised by the identity of ``ders``:
        the session layer hands every session that received the same Certificate message
        the same tuple (``sensor.session``), so a repeated chain costs one lookup."""
        if not ders:
            return [], [], []
        known = self._chains.get(id(ders))
        if known is not None and known[0] is ders:
            return known[1], known[2], known[3]
        infos = [self.certificates.describe(der) for der in ders]
        models = [self._certificate_models(der, info)
                  for der, info in zip(ders, infos, strict=True)]
        entries = [each.chain_entry for each in models]
        # The memo keeps the DER alive (so its id is not reused): bounded in bytes too.
        size = sum(map(len, ders))
        if size <= CHAIN_MEMO_BYTES:
            if (len(self._chains) >= CHAIN_MEMO_ENTRIES
                    or self._chain_bytes + size > CHAIN_MEMO_BYTES):
                self._chains.clear()
                self._chain_bytes = 0
                self.memo_resets += 1
            self._chains[id(ders)] = (ders, infos, models, entries)
            self._chain_bytes += size
        return infos, models, entries

    def _tls(
        self,
        record: SessionRecord,
        hello: _HelloModels | None,
        curve: str | None,
        server_chain: list[CertificateInfo],
        server_models: list[_CertificateModels],
        client_models: list[_CertificateModels],
        first_key: tuple[Hashable, ...] | None = None,
    ) -> Tls:
        """``tls``: a function of the hello summary, the SNI, the client's chain, the
        ServerHello's version, suite and ALPN, the curve, the outcome and ``tls.server``;
        memoised (~88% hits on the benchmark capture; the writer then reuses its JSON).
        Shared models are part of the key by identity, checked on a hit. ``first_key`` is
        ``_server_hello_key`` of the first ServerHello, when the caller has it."""
        ch, sh = record.client_hello, _deciding_server_hello(record)
        server = self._tls_server(record.first_server_hello or sh, server_chain, server_models,
                                  first_key)
        key = (
            id(hello), ch.server_name if ch else None, id(server),
            (sh.selected_version, sh.cipher_suite, sh.alpn) if sh else None,
            curve, record.established, record.resumed,
            *[models.hashes.sha256 for models in client_models],
        )
        known = self._tls_blocks.get(key)
        if known is not None and known[0] is hello and known[1] is server:
            return known[2]
        tls = self._new_tls(record, hello, curve, server, client_models)
        self._remember(self._tls_blocks, key, (hello, server, tls))
        return tls

    def _new_tls(
        self,
        record: SessionRecord,
        hello: _HelloModels | None,
        curve: str | None,
        server: TlsServer,
        client_models: list[_CertificateModels],
    ) -> Tls:
        ch, sh = record.client_hello, _deciding_server_hello(record)
        client_leaf = client_models[0] if client_models else None
        client = make(TlsClient,
            server_name=ch.server_name if ch else None,
            ja3=hello.ja3 if hello else None,
            supported_ciphers=hello.supported_ciphers if hello else [],
            hash=client_leaf.hashes if client_leaf else None,
            x509=client_leaf.x509 if client_leaf else None,
            certificate_chain=self._chain_der(client_models),
        )
        if sh is None:
            return make(Tls, established=record.established, client=client, server=server)
        protocol, version = registry.version_ecs(sh.selected_version)
        return make(Tls,
            version=version,
            # A version no registry knows is still reported (as unknown-0xNNNN), with no
            # protocol family rather than a guessed one.
            version_protocol=protocol if protocol in ("tls", "ssl", "dtls") else None,
            cipher=registry.cipher_suite_name(sh.cipher_suite),
            curve=curve,
            established=record.established,
            resumed=record.resumed,
            next_protocol=sh.alpn.decode("utf-8", "backslashreplace") if sh.alpn else None,
            client=client,
            server=server,
        )

    def _tls_server(
        self,
        first_sh: m.ServerHello | None,
        server_chain: list[CertificateInfo],
        server_models: list[_CertificateModels],
        first_key: tuple[Hashable, ...] | None = None,
    ) -> TlsServer:
        """``tls.server``: a function of the first ServerHello and the chain, memoised."""
        ja3s = self._ja3s_of(first_sh, first_key) if first_sh else None
        key = (ja3s, *[info.sha256 for info in server_chain])
        server = self._servers.get(key)
        if server is not None:
            return server
        leaf = server_chain[0] if server_chain else None
        leaf_models = server_models[0] if server_models else None
        server = TlsServer(
            ja3s=ja3s,
            hash=leaf_models.hashes if leaf_models else None,
            x509=leaf_models.x509 if leaf_models else None,
            subject=leaf.subject if leaf else None,
            issuer=leaf.issuer if leaf else None,
            not_before=leaf.not_before if leaf else None,
            not_after=leaf.not_after if leaf else None,
            certificate_chain=self._chain_der(server_models),
        )
        self._remember(self._servers, key, server)
        return server

    def _ja3s_of(self, sh: m.ServerHello, key: tuple[Hashable, ...] | None = None) -> str:
        if key is None:
            key = _server_hello_key(sh)
        ja3s = self._ja3s.get(key)
        if ja3s is None:
            ja3s = fingerprints.ja3s(sh)
            self._remember(self._ja3s, key, ja3s)
        return ja3s

    def _chain_der(self, chain: list[_CertificateModels]) -> list[str]:
        if not self.config.include_chain_der:
            return []
        return [models.der_base64 for models in chain]

    def _record_versions(self, versions: frozenset[int]) -> list[str]:
        """``record_versions``: the sorted names, memoised by the set (a handful of sets
        occur; the list is shared between events, read it only)."""
        names = self._version_lists.get(versions)
        if names is None:
            names = sorted(registry.version_name(v) for v in versions)
            self._remember(self._version_lists, versions, names)
        return names

    def _curve(self, record: SessionRecord) -> str | None:
        ske = record.server_key_exchange
        if ske is not None and ske.named_group is not None:
            return registry.group_name(ske.named_group)
        sh = record.server_hello
        for ext in sh.extensions if sh else ():
            if ext.type == KEY_SHARE and len(ext.data) >= 2:
                return registry.group_name(int.from_bytes(ext.data[:2], "big"))
        return None

    def _key_exchange(self, record: SessionRecord, curve: str | None) -> KeyExchange | None:
        """``key_exchange``, given ``curve`` (``_curve(record)``)."""
        ske = record.server_key_exchange
        if ske is None and curve is None:
            return None
        key = (ske.dh_prime_bits if ske else None, curve)
        exchange = self._key_exchanges.get(key)
        if exchange is None:
            exchange = make(KeyExchange, dh_prime_bits=key[0], named_group=curve)
            self._remember(self._key_exchanges, key, exchange)
        return exchange

    def _hello_models(self, ch: m.ClientHello, transport: str = "t") -> _HelloModels:
        """The summary, JA3 and named cipher list of a ClientHello, memoised by its lists."""
        key = _hello_key(ch) if transport == "t" else (*_hello_key(ch), transport)
        models = self._hellos.get(key)
        if models is None:
            models = _HelloModels(
                summary=self._client_hello(ch, transport),
                ja3=fingerprints.ja3(ch),
                supported_ciphers=[registry.cipher_suite_name(c) for c in ch.cipher_suites],
            )
            self._remember(self._hellos, key, models)
        return models

    def _client_hello(self, ch: m.ClientHello, transport: str = "t") -> ClientHelloSummary:
        ja4, ja4_r, ja4_o, ja4_ro = fingerprints.ja4_all(ch, transport=transport)
        return ClientHelloSummary(
            legacy_version=registry.version_name(ch.legacy_version),
            supported_versions=[registry.version_name(v) for v in ch.supported_versions],
            cipher_suites=[registry.cipher_suite_name(c) for c in ch.cipher_suites],
            extensions=[registry.extension_name(e.type) for e in ch.extensions],
            supported_groups=[registry.group_name(g) for g in ch.supported_groups],
            ec_point_formats=[registry.ec_point_format_name(f) for f in ch.ec_point_formats],
            signature_algorithms=[
                registry.signature_scheme_name(s) for s in ch.signature_algorithms
            ],
            alpn=[p.decode("utf-8", "backslashreplace") for p in ch.alpn],
            session_id_length=len(ch.session_id),
            sslv2_format=ch.sslv2_format,
            ja3_string=fingerprints.ja3_string(ch),
            ja4=ja4,
            ja4_r=ja4_r,
            ja4_o=ja4_o,
            ja4_ro=ja4_ro,
        )

    def _server_hello(
        self, sh: m.ServerHello, first: m.ServerHello, ch: m.ClientHello | None,
        first_key: tuple[Hashable, ...] | None = None,
    ) -> ServerHelloSummary:
        """The ServerHello that settled the session, with the fingerprints of the ``first``
        one the server sent (the HelloRetryRequest, if any; see ``SessionRecord``).
        Memoised by what it is a function of (``first_key``: ``first``'s key, if known)."""
        echoed = bool(ch and ch.session_id and ch.session_id == sh.session_id)
        if first_key is None:
            first_key = _server_hello_key(first)
        # The usual case (no HelloRetryRequest) keys by the one ServerHello's key, hashed
        # once; the two-ServerHello keys are longer, so the two kinds cannot meet.
        key = (first_key, echoed) if first is sh else (_server_hello_key(sh), first_key, echoed)
        summary = self._server_hellos.get(key)
        if summary is None:
            summary = self._new_server_hello(sh, first, echoed)
            self._remember(self._server_hellos, key, summary)
        return summary

    def _new_server_hello(
        self, sh: m.ServerHello, first: m.ServerHello, echoed: bool
    ) -> ServerHelloSummary:
        return ServerHelloSummary(
            legacy_version=registry.version_name(sh.legacy_version),
            selected_version=registry.version_name(sh.selected_version),
            cipher_suite=registry.cipher_suite_name(sh.cipher_suite),
            cipher_suite_code=f"{sh.cipher_suite:04x}",
            extensions=[registry.extension_name(e.type) for e in sh.extensions],
            compression_method=sh.compression_method,
            hello_retry_request=sh.is_hello_retry_request,
            session_id_echoed=echoed,
            ja3s_string=fingerprints.ja3s_string(first),
            ja4s=fingerprints.ja4s(first) if self.config.foxio_fingerprints else None,
        )

    @staticmethod
    def _alert(side: Side, alert: m.AlertMessage) -> TlsAlert:
        return make(TlsAlert,
            sender=side.value,
            level=None if alert.level is None else registry.alert_level_name(alert.level),
            description=None if alert.description is None
            else registry.alert_description_name(alert.description),
            encrypted=alert.encrypted,
        )

    def _network(self, flow: Flow, server_addr: bytes, ja4_transport: str = "t") -> Network:
        """``network``: a function of the address family, transport and VLANs, memoised."""
        vlans = flow.vlans
        key = (len(server_addr), ja4_transport, vlans)
        network = self._networks.get(key)
        if network is None:
            network = make(
                Network,
                type="ipv6" if len(server_addr) == 16 else "ipv4",
                transport="tcp" if ja4_transport == "t" else "udp",
                vlan=make(Vlan, id=str(vlans[0])) if vlans else None,
                inner=make(NetworkInner, vlan=make(Vlan, id=str(vlans[1])))
                if len(vlans) > 1 else None,
            )
            self._remember(self._networks, key, network)
        return network

    def _server_side(self, flow: Flow, addr: bytes, port: int, ja4_transport: str
                     ) -> tuple[Endpoint, Network]:
        """``destination`` and ``network`` together, memoised by the server's address and
        port, the transport and the VLANs (one lookup per event for the two)."""
        key = (addr, port, ja4_transport, flow.vlans)
        known = self._server_sides.get(key)
        if known is None:
            known = (self._server_endpoint(addr, port), self._network(flow, addr, ja4_transport))
            self._remember(self._server_sides, key, known)
        return known

    def _server_endpoint(self, addr: bytes, port: int) -> Endpoint:
        """``destination``, memoised by the address's bytes and the port (the address is
        formatted once per server): servers repeat (clients, with their ephemeral ports,
        do not)."""
        key = (addr, port)
        endpoint = self._server_endpoints.get(key)
        if endpoint is None:
            endpoint = _new_endpoint(format_addr(addr), port)
            self._remember(self._server_endpoints, key, endpoint)
        return endpoint

    # -- certificates ------------------------------------------------------------------------

    @staticmethod
    def _hashes(info: CertificateInfo) -> Hashes:
        return Hashes(sha256=info.sha256, sha1=info.sha1)

    @staticmethod
    def _name(rfc4514: str | None, fields: dict[str, list[str]]) -> DistinguishedName:
        return DistinguishedName.model_validate({"distinguished_name": rfc4514, **fields})

    def _x509(self, info: CertificateInfo) -> X509 | None:
        if info.parse_error is not None and info.subject is None:
            return None
        return X509(
            serial_number=info.serial_number,
            subject=self._name(info.subject, info.subject_dict()),
            issuer=self._name(info.issuer, info.issuer_dict()),
            not_before=info.not_before,
            not_after=info.not_after,
            public_key_algorithm=info.public_key_algorithm,
            public_key_size=info.public_key_size,
            public_key_curve=info.public_key_curve,
            public_key_exponent=info.public_key_exponent,
            signature_algorithm=info.signature_algorithm,
            alternative_names=list(info.alternative_names),
            version_number=str(info.version) if info.version is not None else None,
        )

    def _certificate_models(self, der: bytes, info: CertificateInfo) -> _CertificateModels:
        """A certificate's models, memoised by its SHA-256 (chains repeat)."""
        models = self._cert_models.get(info.sha256)
        if models is None:
            ja4x = fingerprints.ja4x(der) if self.config.foxio_fingerprints else None
            hashes, x509, extra = self._hashes(info), self._x509(info), self._extra(info, ja4x)
            models = _CertificateModels(
                hashes=hashes,
                x509=x509,
                extra=extra,
                chain_entry=ChainCertificate(hash=hashes, x509=x509, certwatch=extra),
                der_base64=base64.b64encode(der).decode("ascii"),
            )
            self._remember(self._cert_models, info.sha256, models)
        return models

    def _chain_entry(self, info: CertificateInfo, ja4x: dict[str, str | None]
                     ) -> ChainCertificate:
        """A chain entry built afresh, JA4X taken from ``ja4x`` by SHA-256 (the test helpers
        of the processors build their events with it)."""
        return ChainCertificate(hash=self._hashes(info), x509=self._x509(info),
                                certwatch=self._extra(info, ja4x.get(info.sha256)))

    def _extra(self, info: CertificateInfo, ja4x: str | None) -> CertificateExtra:
        return CertificateExtra(
            sha256=info.sha256,
            spki_sha256=info.spki_sha256,
            der_length=info.der_length,
            is_ca=info.is_ca,
            self_signed=info.self_signed,
            signature_algorithm_oid=info.signature_algorithm_oid,
            san_dns=list(info.san_dns),
            san_ip=list(info.san_ip),
            san_email=list(info.san_email),
            san_uri=list(info.san_uri),
            parse_error=info.parse_error,
            # One "field: reason" per field cryptography could not read (issue 7); None,
            # not [], when there is none, so the event says nothing then.
            parse_errors=[f"{name}: {reason}" for name, reason in info.field_errors] or None,
            ja4x=ja4x,
        )

    def _certificate_events(
        self,
        timestamp: float,
        server_ip: str,
        server_port: int,
        server_name: str | None,
        chains: tuple[tuple[Side, list[CertificateInfo], list[_CertificateModels]], ...],
    ) -> list[CertificateEvent]:
        events = []
        for side, infos, chain_models in chains:
            for position, (info, models) in enumerate(zip(infos, chain_models, strict=True)):
                if not self._first_sighting(info.sha256, timestamp):
                    continue
                events.append(make(CertificateEvent,
                    timestamp=utc(timestamp),
                    event=make(EventFields,
                        id=event_id(self.observer.name, "certificate", info.sha256,
                                    repr(timestamp)),
                        kind="event",
                        category=["network"],
                        type=["info"],
                        dataset="certwatch.tls.certificate",
                    ),
                    observer=self.observer,
                    hash=models.hashes,
                    x509=models.x509,
                    certwatch=make(CertificateExtension,
                        certificate=models.extra,
                        seen=make(CertificateSighting,
                            role=side.value,
                            position=position,
                            server_ip=server_ip,
                            server_port=server_port,
                            server_name=server_name,
                        ),
                        der_base64=models.der_base64,
                    ),
                ))
        return events

    def _announced_recently(self, chain: list[CertificateInfo], timestamp: float) -> bool:
        """Whether every certificate of ``chain`` (a list shared by the chain memo) was
        announced within the TTL before ``timestamp``, so that ``_certificate_events`` would
        make no event: one lookup instead of one per certificate. The oldest announcement
        time of the chain is kept (``_remember_announced``); a certificate announced again
        since only makes the true oldest time later, so the answer can only err towards
        "no" (then the full check runs). Pruning ``_announced`` empties the table."""
        known = self._chains_announced.get(id(chain))
        ttl = self.config.certificate_event_ttl
        # With a positive TTL an announcement time only ever grows (see _first_sighting).
        return (known is not None and known[0] is chain and ttl > 0
                and timestamp - known[1] < ttl)

    def _remember_announced(self, chain: list[CertificateInfo]) -> None:
        """Note the oldest announcement time of ``chain``'s certificates (all announced by
        ``_certificate_events`` just before, unless ``_announced`` was emptied meanwhile)."""
        announced = self._announced
        if not all(info.sha256 in announced for info in chain):
            return
        times = [announced[info.sha256] for info in chain]
        if all(t == t for t in times):  # no NaN: min() would not be the oldest
            self._remember(self._chains_announced, id(chain), (chain, min(times)))

    def _first_sighting(self, sha256: str, timestamp: float) -> bool:
        """True when the certificate has not been announced within the TTL. Bounded: the
        table is pruned of expired entries when it outgrows the certificate cache."""
        last = self._announced.get(sha256)
        if last is not None and timestamp - last < self.config.certificate_event_ttl:
            return False
        if len(self._announced) >= 2 * self.config.certificate_cache_size:
            horizon = timestamp - self.config.certificate_event_ttl
            self._announced = {k: t for k, t in self._announced.items() if t >= horizon}
            if len(self._announced) >= 2 * self.config.certificate_cache_size:
                self._announced.clear()
            self._chains_announced.clear()  # what it says may no longer hold
        self._announced[sha256] = timestamp
        return True

    # -- anomalies ---------------------------------------------------------------------------

    def anomaly(self, anomaly: Anomaly) -> AnomalyEvent:
        source = destination = network = None
        if anomaly.flow is not None:
            (c_addr, c_port), (s_addr, s_port) = anomaly.flow
            source = Endpoint(ip=format_addr(c_addr), port=c_port)
            destination = Endpoint(ip=format_addr(s_addr), port=s_port)
            network = Network(type="ipv6" if len(s_addr) == 16 else "ipv4")
        return AnomalyEvent(
            timestamp=utc(anomaly.timestamp),
            event=EventFields(
                id=event_id(self.observer.name, "anomaly", anomaly.kind, repr(anomaly.timestamp),
                            anomaly.count),
                kind="event",
                category=["network"],
                type=["info", "error"],
                dataset="certwatch.sensor.anomaly",
            ),
            observer=self.observer,
            message=f"{anomaly.kind}: {anomaly.detail}"
            + (f" ({anomaly.count} times)" if anomaly.count > 1 else ""),
            source=source,
            destination=destination,
            network=network,
            certwatch=AnomalyExtension(
                anomaly=AnomalyDetail(kind=anomaly.kind, detail=anomaly.detail,
                                      count=anomaly.count)
            ),
        )

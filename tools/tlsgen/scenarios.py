"""Named scenarios: the situations certwatch must recognise, each with its ground truth.

A scenario is a list of :class:`~tools.tlsgen.connection.ConnectionSpec` (sorted by start),
the trust roots a policy should load (``trust.ca_files``), the pins it should declare, and
the rules each connection should trigger. Rules that judge a rate rather than one
connection (``traffic.spike``, ``tls.handshake_failure_spike``) are expected per server and
window in :attr:`Scenario.aggregates`, for the default policy's one-minute windows and
its ``min_count`` (a burst smaller than :data:`SPIKE_MIN_COUNT` expects nothing).

Addresses: servers in 192.0.2.0/24 (RFC 5737), clients in 10.0.0.0/8; all the clients of one
server share one /24, so that ``traffic.unexpected_source`` stays quiet. Every connection
of a scenario goes to its own server unless the scenario is about one server's history,
so that ``cert.changed`` fires only where a scenario means it to.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tools.tlsgen import handshake as hs
from tools.tlsgen.certs import CertFactory, Issued, KeyKind, SignatureHash, pem_bundle
from tools.tlsgen.connection import ConnectionSpec, conversation
from tools.tlsgen.floods import FLOODS, Flood, flood_spec, write_flood
from tools.tlsgen.pcap import CaptureStats, TcpConversation, Timing, write_capture

CAPTURE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ROOT_CN, INTERMEDIATE_CN = "tlsgen Test Root CA", "tlsgen Test Issuing CA 1"


@dataclass(frozen=True, slots=True)
class Options:
    """Scenario knobs. ``connections`` is the total for ``benchmark`` and the per-minute
    rate for ``steady-plus-burst`` and ``handshake-failures``; the other scenarios have a
    fixed set of connections."""

    seed: int = 1
    connections: int | None = None
    app_segments: int | None = None
    concurrency: int | None = None
    timing: Timing = field(default_factory=Timing)


@dataclass(frozen=True, slots=True)
class AggregateExpectation:
    """A rate rule expected to fire for ``server`` during ``window`` (capture time)."""

    rule: str
    server: tuple[str, int]
    server_name: str
    window: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    connections: tuple[ConnectionSpec, ...]
    roots: tuple[Issued, ...]
    pins: tuple[dict[str, object], ...] = ()
    aggregates: tuple[AggregateExpectation, ...] = ()
    timing: Timing = field(default_factory=Timing)
    flood: Flood | None = None
    """Hostile traffic streamed around ``connections`` (``floods``), if any."""

    @property
    def roots_pem(self) -> bytes:
        """The PEM file to list in the policy's ``trust.ca_files``."""
        return pem_bundle(self.roots)

    def policy(self, ca_file: str | Path) -> dict[str, object]:
        """The policy (as the YAML file's mapping) the ground truth assumes: the defaults,
        the system store off (only our roots), and this scenario's pins."""
        return {"trust": {"system": False, "ca_files": [str(ca_file)]}, "pins": list(self.pins)}

    def conversations(self) -> Iterator[TcpConversation]:
        for spec in self.connections:
            yield conversation(spec, self.seed, self.timing.mss)

    def write(self, path: str | Path) -> CaptureStats:
        """Write the capture; bytes follow from the scenario and its options alone."""
        if self.flood is not None:
            return write_flood(path, self.flood, self.conversations(), self.timing)
        return write_capture(path, self.conversations(), self.timing)


@dataclass(frozen=True, slots=True)
class _Pki:
    factory: CertFactory
    root: Issued
    intermediate: Issued

    def leaf(self, host: str, *, key: KeyKind = "rsa2048", valid: tuple[float, float] = (-30, 335),
             signature_hash: SignatureHash = "sha256", issuer: Issued | None = None,
             self_signed: bool = False, label: str | None = None) -> tuple[bytes, ...]:
        """The chain a server sends: leaf, then its issuer (none when self-signed)."""
        parent = None if self_signed else (issuer or self.intermediate)
        leaf = self.factory.leaf([host], issuer=parent, key=key, key_label=f"leaf-{key}",
                                 valid=valid, signature_hash=signature_hash, label=label)
        return (leaf.der,) if parent is None else (leaf.der, parent.der)


@lru_cache(maxsize=8)
def _pki(seed: int) -> _Pki:
    factory = CertFactory(seed, CAPTURE_TIME)
    root = factory.authority(ROOT_CN, key_label="root")
    return _Pki(factory, root, factory.authority(INTERMEDIATE_CN, issuer=root,
                                                  key_label="intermediate"))


def server(index: int) -> tuple[str, int]:
    return f"192.0.2.{10 + index}", 443


def client(server_index: int, n: int) -> tuple[str, int]:
    """The n-th client of a server: one /24 per server, then ephemeral ports."""
    return f"10.1.{server_index % 256}.{1 + n % 250}", 49152 + (n // 250) % 16384


def _single(pki: _Pki, t0: float, cases: list[dict[str, Any]]) -> list[ConnectionSpec]:
    """One connection per case, each to its own server, one second apart. A case is the
    keyword arguments of ConnectionSpec beyond the addresses and start."""
    return [ConnectionSpec(client=client(i, 0), server=server(i), start=t0 + i,
                           **case)
            for i, case in enumerate(cases)]


_Built = tuple[list[ConnectionSpec], list[dict[str, Any]], list[AggregateExpectation]]
CaseBuilder = Callable[["_Pki", "Options", float], _Built]
TLS12_ECDHE: dict[str, Any] = {
    "version": hs.TLS12, "cipher": 0xC02F, "group": hs.X25519, "alpn": b"h2"}
TLS13: dict[str, Any] = {"version": hs.TLS13, "cipher": 0x1301, "group": hs.X25519, "grease": True}


def _clean_tls12(pki: _Pki, o: Options, t0: float) -> _Built:
    return _single(pki, t0, [
        {**TLS12_ECDHE, "sni": "www.example.com", "chain": pki.leaf("www.example.com")},
        {"version": hs.TLS12, "cipher": 0xC02B, "group": hs.SECP256R1, "sni": "ec.example.com",
         "chain": pki.leaf("ec.example.com", key="p256"), "grease": True},
        {"version": hs.TLS12, "cipher": 0x009E, "dh_bits": 2048, "sni": "dhe.example.com",
         "chain": pki.leaf("dhe.example.com")},
    ]), [], []


def _clean_tls13(pki: _Pki, o: Options, t0: float) -> _Built:
    return _single(pki, t0, [
        {"version": hs.TLS13, "cipher": 0x1301, "group": hs.X25519, "sni": "www.example.com",
         "grease": True},
        {"version": hs.TLS13, "cipher": 0x1302, "group": hs.SECP256R1, "sni": "api.example.com"},
    ]), [], []


def _cert_case(host: str, rules: set[str], maybe: frozenset[str] = frozenset(),
               **leaf: Any) -> Callable[[_Pki, Options, float], _Built]:
    def build(pki: _Pki, o: Options, t0: float) -> _Built:
        chain = pki.leaf(host, **leaf)
        return _single(pki, t0, [{**TLS12_ECDHE, "sni": host, "chain": chain,
                                  "rules": frozenset(rules), "maybe_rules": maybe}]), [], []
    return build


def _wrong_host(pki: _Pki, o: Options, t0: float) -> _Built:
    return _single(pki, t0, [{**TLS12_ECDHE, "sni": "shop.example.com",
                              "chain": pki.leaf("other.example.net"),
                              "rules": frozenset({"cert.hostname_mismatch"})}]), [], []


def _rogue_ca(pki: _Pki, o: Options, t0: float) -> _Built:
    """The pinned host first shows its real chain, then one from a rogue CA whose root and
    intermediate copy the real subjects (an issuer-DN pin would not notice; SPKI does)."""
    f, host = pki.factory, "bank.example.com"
    rogue_root = f.authority(ROOT_CN, key_label="rogue-root")
    rogue_mid = f.authority(INTERMEDIATE_CN, issuer=rogue_root, key_label="rogue-intermediate")
    real, rogue = pki.leaf(host), pki.leaf(host, issuer=rogue_mid, label="rogue-bank")
    specs = [ConnectionSpec(client(0, n), server(0), t0 + n, **TLS12_ECDHE,
                            sni=host, chain=chain, rules=rules)
             for n, (chain, rules) in enumerate([
                 (real, frozenset()),
                 (rogue, frozenset({"cert.untrusted_chain", "cert.pin_mismatch",
                                    "cert.changed"}))])]
    return specs, [{"host": host, "spki_sha256": [pki.intermediate.spki_sha256]}], []


def _protocol_case(cases: list[dict[str, Any]]) -> Callable[[_Pki, Options, float], _Built]:
    def build(pki: _Pki, o: Options, t0: float) -> _Built:
        full = [{"chain": pki.leaf(f"legacy{i}.example.com"), "sni": f"legacy{i}.example.com",
                 **case, "rules": frozenset(case.get("rules", ()))}
                for i, case in enumerate(cases)]
        for case in full:
            if case.get("version") == hs.SSL3:
                case["sni"] = None  # SSLv3 hellos have no extensions (RFC 6101)
        return _single(pki, t0, full), [], []
    return build


DEPRECATED, WEAK_CIPHER, WEAK_DH = "tls.deprecated_version", "tls.weak_cipher", "tls.weak_dh"
# RFC 5280 6.1.3 (a)(2) makes the validity period part of path validation, so a chain
# verifier judging at the handshake's time may also call an expired (or not yet valid) leaf
# untrusted; whether ``cert.untrusted_chain`` repeats what ``cert.expired`` says is the
# detector's choice, not the capture's.
OUT_OF_VALIDITY = frozenset({"cert.untrusted_chain"})
# The default policy's ``min_count`` for both rate rules (processors.policy.TrafficSpike):
# a window with fewer connections (or failures) never alerts, so a scenario run at a lower
# rate expects no aggregate.
SPIKE_MIN_COUNT = 20


def _per_minute(rate: int, minutes: range, rng: random.Random) -> Iterator[tuple[int, float]]:
    """(minute, offset seconds) of ~``rate`` connections per minute, +-20% jitter."""
    for minute in minutes:
        count = max(1, rate + rng.randint(-(rate // 5), rate // 5))
        for offset in sorted(rng.uniform(0, 59.9) for _ in range(count)):
            yield minute, offset


def _steady_plus_burst(pki: _Pki, o: Options, t0: float) -> _Built:
    rate, host = o.connections or 30, "api.example.com"
    rng, chain = random.Random(f"tlsgen-steady:{o.seed}"), pki.leaf(host)
    times = [t0 + 60 * m + s for m, s in _per_minute(rate, range(60), rng)]
    times += sorted(t0 + 3600 + rng.uniform(0, 59.9) for _ in range(10 * rate))
    specs = [ConnectionSpec(client(0, n), server(0), t, **TLS12_ECDHE,
                            sni=host, chain=chain, app_segments=o.app_segments or 0)
             for n, t in enumerate(times)]
    spike = AggregateExpectation("traffic.spike", server(0), host, (t0 + 3600, t0 + 3660))
    return specs, [], [spike] if 10 * rate >= SPIKE_MIN_COUNT else []


def _handshake_failures(pki: _Pki, o: Options, t0: float) -> _Built:
    """30 minutes of ~rate connections a minute with a few fatal alerts, then one minute
    in which every connection fails: the connection rate is unchanged, failures jump."""
    rate, host = o.connections or 30, "legacy.example.com"
    rng, chain = random.Random(f"tlsgen-failures:{o.seed}"), pki.leaf(host)
    specs: list[ConnectionSpec] = []
    for n, (minute, offset) in enumerate(_per_minute(rate, range(31), rng)):
        fails = minute == 30 or rng.random() < 0.05
        alert = rng.choice((hs.HANDSHAKE_FAILURE, hs.PROTOCOL_VERSION)) if fails else None
        specs.append(ConnectionSpec(client(0, n), server(0), t0 + 60 * minute + offset,
                                    **TLS12_ECDHE, sni=host, chain=() if fails else chain,
                                    failure_alert=alert))
    spike = AggregateExpectation("tls.handshake_failure_spike", server(0), host,
                                 (t0 + 1800, t0 + 1860))
    burst = sum(1 for spec in specs if spec.start >= t0 + 1800)  # minute 30: all fail
    return specs, [], [spike] if burst >= SPIKE_MIN_COUNT else []


BYTE_BURST_SEGMENTS = 2000
"""``byte-burst``'s default segments per burst connection: 4 x 2000 x 1460 bytes, ~11.7 MB,
above the byte rate's default ``min_bytes`` (10 MB)."""


def _byte_burst(pki: _Pki, o: Options, t0: float) -> _Built:
    """20 minutes of ~rate connections a minute carrying two segments of data each, then
    one minute at the same connection rate whose connections carry ``app_segments``
    segments each: only the byte rate changes. The expectation holds for a policy with
    ``traffic.spike.bytes.enabled`` and a ``min_bytes`` below the burst's bytes; the
    connection rate (and so the default policy) sees nothing."""
    rate, host = o.connections or 4, "files.example.com"
    rng, chain = random.Random(f"tlsgen-bytes:{o.seed}"), pki.leaf(host)
    burst = o.app_segments or BYTE_BURST_SEGMENTS
    specs = [ConnectionSpec(client(0, n), server(0), t0 + 60 * minute + offset,
                            **TLS12_ECDHE, sni=host, chain=chain,
                            app_segments=burst if minute == 20 else 2)
             for n, (minute, offset) in enumerate(_per_minute(rate, range(21), rng))]
    spike = AggregateExpectation("traffic.spike", server(0), host, (t0 + 1200, t0 + 1260))
    return specs, [], [spike]


def _benchmark(pki: _Pki, o: Options, t0: float) -> _Built:
    """70% TLS 1.2 (2-certificate chain), 30% TLS 1.3, over 16 servers, ``app_segments``
    full segments of server data each, about ``concurrency`` connections open at once."""
    total, k, m = o.connections or 1000, o.app_segments or 20, o.concurrency or 50
    hosts = [f"svc{j}.example.com" for j in range(16)]
    chains = [pki.leaf(h) for h in hosts]
    duration = (k * 1.5 + 16) * o.timing.packet_gap  # packets of one connection x gap
    specs = []
    for i in range(total):
        j = i % 16
        base = TLS13 if i % 10 >= 7 else {**TLS12_ECDHE, "chain": chains[j]}
        specs.append(ConnectionSpec(client(j + 100, i // 16), server(j + 100),
                                    t0 + i * duration / m, sni=hosts[j], app_segments=k,
                                    **base))
    return specs, [], []


def _flood(name: str) -> CaseBuilder:
    """The legitimate connections of a flood: TLS 1.2, spread over the flood's duration,
    to the flooded server for the SYN flood, else each to its own server."""
    def build(pki: _Pki, o: Options, t0: float) -> _Built:
        flood = flood_spec(name, o.connections, t0)
        specs = []
        for i, offset in enumerate(flood.legit_offsets()):
            host = f"legit{i}.example.com"
            where = (client(0, i), server(0)) if flood.kind == "syn" else (client(i, 0),
                                                                           server(i))
            specs.append(ConnectionSpec(*where, t0 + offset, **TLS12_ECDHE, sni=host,
                                        chain=pki.leaf(host)))
        return specs, [], []
    return build


_SCENARIOS: dict[str, tuple[str, CaseBuilder]] = {
    "clean-tls12": ("TLS 1.2 with valid chains: RSA/ECDHE, ECDSA/ECDHE, RSA/DHE-2048",
                    _clean_tls12),
    "clean-tls13": ("TLS 1.3: certificates are encrypted, nothing to alert on", _clean_tls13),
    "expired": ("a leaf that expired 30 days before the capture",
                _cert_case("expired.example.com", {"cert.expired"}, OUT_OF_VALIDITY,
                           valid=(-400, -30))),
    "not-yet-valid": ("a leaf valid from 10 days after the capture",
                      _cert_case("future.example.com", {"cert.not_yet_valid"}, OUT_OF_VALIDITY,
                                 valid=(10, 375))),
    "self-signed": ("a self-signed leaf", _cert_case(
        "selfsigned.example.com", {"cert.self_signed", "cert.untrusted_chain"}, self_signed=True)),
    "wrong-host": ("SNI shop.example.com, certificate for other.example.net", _wrong_host),
    "weak-rsa-1024": ("a 1024-bit RSA leaf", _cert_case(
        "weak.example.com", {"cert.weak_key"}, frozenset({"cert.untrusted_chain"}),
        key="rsa1024")),
    "sha1-signature": ("a leaf signed with SHA-1", _cert_case(
        "sha1.example.com", {"cert.weak_signature"}, frozenset({"cert.untrusted_chain"}),
        signature_hash="sha1")),
    "rogue-ca-for-pinned-host": ("a pinned host, then the same names from a rogue CA",
                                 _rogue_ca),
    "sslv3": ("SSLv3 with RSA key exchange", _protocol_case(
        [{"version": hs.SSL3, "cipher": 0x002F, "rules": {DEPRECATED}}])),
    "tls10": ("TLS 1.0 with ECDHE", _protocol_case(
        [{"version": hs.TLS10, "cipher": 0xC013, "group": hs.SECP256R1, "rules": {DEPRECATED}}])),
    "rc4": ("RC4 suites in TLS 1.2", _protocol_case([
        {"version": hs.TLS12, "cipher": 0xC011, "group": hs.X25519, "rules": {WEAK_CIPHER}},
        {"version": hs.TLS12, "cipher": 0x0005, "rules": {WEAK_CIPHER}}])),
    "export": ("EXPORT suites in TLS 1.0 (512-bit RSA and DH)", _protocol_case([
        {"version": hs.TLS10, "cipher": 0x0003, "export_rsa_bits": 512,
         "rules": {WEAK_CIPHER, DEPRECATED}},
        {"version": hs.TLS10, "cipher": 0x0014, "dh_bits": 512,
         "rules": {WEAK_CIPHER, DEPRECATED, WEAK_DH}}])),
    "dhe-1024": ("DHE with the RFC 2409 1024-bit group", _protocol_case(
        [{"version": hs.TLS12, "cipher": 0x009E, "dh_bits": 1024, "rules": {WEAK_DH}}])),
    "steady-plus-burst": ("one server, ~N connections a minute for an hour, then 10x for a "
                          "minute", _steady_plus_burst),
    "handshake-failures": ("one server, 30 minutes with few fatal alerts, then a minute of "
                           "failures only", _handshake_failures),
    "byte-burst": ("one server, ~N connections a minute with little data for 20 minutes, then "
                   "a minute of as many connections carrying --app-segments segments each "
                   "(a byte-rate spike only)", _byte_burst),
    "benchmark": ("70% TLS 1.2 / 30% TLS 1.3 with bulk data, many connections at once",
                  _benchmark),
    **{name: (description, _flood(name)) for name, (_k, description, _n) in FLOODS.items()},
}
# Floods are left out of NAMES: every NAMES scenario is seen anomaly-free, connection by
# connection (tests/tools/test_tlsgen.py); a flood is about bounds (tests/sensor/test_floods).
# byte-burst is left out too: its aggregate needs a policy with the byte rate on, not the
# default one every NAMES scenario is judged with (tests/processors/test_traffic_bytes.py).
BYTE_RATE_SCENARIOS = ("byte-burst",)
NAMES = tuple(name for name in _SCENARIOS if name not in FLOODS
              and name not in BYTE_RATE_SCENARIOS)
ALL_NAMES = tuple(_SCENARIOS)


def build(name: str, options: Options = Options()) -> Scenario:
    """The scenario ``name`` (one of :data:`ALL_NAMES`) for ``options``. Raises KeyError for an
    unknown name."""
    description, builder = _SCENARIOS[name]
    pki = _pki(options.seed)
    specs, pins, aggregates = builder(pki, options, CAPTURE_TIME.timestamp())
    specs = [replace(s, label=s.label or name) for s in specs]
    flood = (flood_spec(name, options.connections, CAPTURE_TIME.timestamp())
             if name in FLOODS else None)
    return Scenario(name, description, options.seed, tuple(sorted(specs, key=lambda s: s.start)),
                    (pki.root,), tuple(pins), tuple(aggregates), options.timing, flood)

"""``traffic.unexpected_source``: a client the server should not be hearing from.

Two ways to know what is expected (docs/detectors-traffic.md):

* **Configured** (``servers`` in the policy): a server named by SNI pattern (``api.example.com``,
  ``*.example.com`` = exactly one more label) or by address (``10.0.0.5``, ``10.0.0.5:443``,
  ``2001:db8::5``, ``[2001:db8::5]:443``) with the client networks allowed to reach it. A client
  outside every allowed network of every entry that matches → finding at the catalogue
  severity (medium). A server that matches an entry is judged by it only, never learned.
* **Learned** (``learn``): for ``learning_period`` of event time after a server key's first
  handshake, every client network (the client address truncated to ``ipv4_prefix`` /
  ``ipv6_prefix``) is learned. Afterwards a handshake from a network never seen → finding at
  LOW severity, and the network is learned, so each new network is reported once.

Bounds: ``max_networks_per_server`` per server; a server that reaches it has too many client
networks for "new network" to mean anything (a public service) and is marked open: it stops
being judged and its networks are dropped (counted in ``saturated``). At most ``MAX_SERVERS``
servers and ``MAX_NETWORKS`` networks in all, least recently seen server evicted first
(counted in ``evicted``); an evicted server learns again from its next handshake.

The finding's identity is (server key, client network): repeated handshakes from one network
are one problem; the client address is in the details.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

from processors.base import Finding, event_time
from processors.catalog import RULES, Severity
from processors.hostnames import matches, normalise
from processors.memo import BoundedMemo, event_server_key, microseconds
from processors.policy import AllowedSources, Policy
from schemas.events import HandshakeEvent

RULE: Final = "traffic.unexpected_source"
MAX_SERVERS: Final = 100_000
"""Servers learned at once (LRU). Not a policy field yet: a local default."""
MAX_NETWORKS: Final = 1_000_000
"""Client networks learned in all servers together (LRU of servers). A local default."""

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_V6_TAG: Final = 1 << 128  # keeps IPv6 network numbers apart from IPv4 ones in one set
_MICROSECOND: Final = timedelta(microseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UNSEEN: Final[tuple[IpAddress | int, int]] = (ipaddress.IPv4Address(0), -1)
"""The client memo's "not memoised yet", told apart by identity (None is a memoised value)."""


@dataclass(frozen=True, slots=True)
class ServerPattern:
    """One configured server: by name pattern (``name``) or by address (``ip``, and ``port``
    unless any port will do), with the client networks allowed to reach it."""

    name: str | None
    ip: IpAddress | None
    port: int | None
    allow: tuple[IpNetwork, ...]

    def matches(self, server_name: str | None, ip: IpAddress | None, port: int) -> bool:
        """Does a handshake to ``server_name`` (the SNI) at ``ip``:``port`` match?"""
        if self.ip is not None:
            return ip == self.ip and (self.port is None or port == self.port)
        # One wildcard rule for every detector (processors.hostnames, RFC 6125 6.4.3):
        # "*.example.com" covers "a.example.com", not "a.b.example.com" nor "example.com".
        return server_name is not None and self.name is not None and matches(self.name,
                                                                              server_name)

    def allows(self, client: IpAddress) -> bool:
        """Is ``client`` inside one of the allowed networks?"""
        return any(client in network for network in self.allow)


def parse_server_pattern(entry: AllowedSources) -> ServerPattern:
    """The ``host`` of a configured entry, parsed; ValueError names a malformed one."""
    host = normalise(entry.host)
    allow = tuple(entry.allow)
    address = _parse_address(host)
    if address is not None:
        return ServerPattern(None, address[0], address[1], allow)
    name = host[2:] if host.startswith("*.") else host
    if not name or any(char in name for char in "*:[]/ "):
        raise ValueError(f"{entry.host!r}: expected a server name (a leading '*.' covers one "
                         "label), an IP address, ip:port or [ipv6]:port")
    return ServerPattern(host, None, None, allow)


def _parse_address(host: str) -> tuple[IpAddress, int | None] | None:
    """``ip``, ``ip:port``, ``v6`` or ``[v6]:port`` → (address, port); None for a name."""
    text, port = host, None
    if host.startswith("["):
        text, bracket, tail = host[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"{host!r}: expected [ipv6]:port")
        port = _port(host, tail[1:]) if tail else None
    elif host.count(":") == 1:
        text, _, tail = host.partition(":")
        port = _port(host, tail)
    try:
        return ipaddress.ip_address(text), port
    except ValueError:
        if port is not None or host.startswith("["):
            raise ValueError(f"{host!r}: {text!r} is not an IP address") from None
        return None


def _port(host: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"{host!r}: {text!r} is not a port number")
    return int(text)


# Exactly the texts ``ipaddress.IPv4Address`` accepts (four ASCII decimal octets of 0-255
# without leading zeros, Python >= 3.9.5), which is how a sensor writes an IPv4 client.
_OCTET: Final = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD: Final = re.compile(r"\.".join([_OCTET] * 4))


def _client_address(text: str) -> IpAddress | None:
    """The client address, IPv4-mapped IPv6 seen as the IPv4 it is; None if unparsable."""
    # Client addresses are mostly distinct and mostly IPv4: one regex match and an int
    # costs about half of ipaddress's octet-by-octet parse, with the same result.
    quad = _DOTTED_QUAD.fullmatch(text)
    if quad is not None:
        first, second, third, fourth = quad.groups()
        return ipaddress.IPv4Address(int(first) << 24 | int(second) << 16 | int(third) << 8
                                     | int(fourth))
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _address(client: IpAddress | int) -> IpAddress:
    """A client as ``_client_address`` gives it: an int is a dotted quad's value."""
    return ipaddress.IPv4Address(client) if isinstance(client, int) else client


def _microseconds(when: datetime) -> int:
    """Event time as integer microseconds since the epoch (naive times are taken as UTC);
    memoised per datetime object, since every time-based detector asks for it."""
    return microseconds(when)


class _Server:
    __slots__ = ("learn_until", "networks", "open")

    def __init__(self, learn_until: int) -> None:
        self.learn_until = learn_until
        """Event time (µs since the epoch) until which every network is learned silently."""
        self.networks: set[int] = set()
        self.open = False
        """Too many client networks to judge: nothing is learned or reported any more."""


class UnexpectedSourceDetector:
    """``traffic.unexpected_source``: configured allowed networks, and learned ones."""

    rules: ClassVar[tuple[str, ...]] = (RULE,)

    def __init__(self, policy: Policy, max_servers: int = MAX_SERVERS,
                 max_networks: int = MAX_NETWORKS) -> None:
        settings = policy.rules.unexpected_source
        self._enabled = settings.enabled
        self._patterns: Sequence[ServerPattern] = [parse_server_pattern(entry)
                                                   for entry in settings.servers]
        self._learn = settings.learn
        self._period_us = settings.learning_period // _MICROSECOND
        self._v4_prefix = settings.ipv4_prefix
        self._v6_prefix = settings.ipv6_prefix
        self._max_per_server = settings.max_networks_per_server
        self._max_servers = max_servers
        self._max_networks = max_networks
        self._servers: OrderedDict[str, _Server] = OrderedDict()
        self._learned = 0
        # Client addresses repeat: their parse is memoised (bounded, emptied when full).
        self._addresses: BoundedMemo[str, tuple[IpAddress | int, int] | None] = BoundedMemo(16_384)
        self.evicted = 0
        """Servers forgotten to stay within ``max_servers`` / ``max_networks``."""
        self.saturated = 0
        """Servers that reached ``max_networks_per_server`` and were marked open."""

    @property
    def learned_networks(self) -> int:
        """Client networks currently remembered, all servers together."""
        return self._learned

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """A finding when the client is outside the configured networks of a matching server,
        or (learning) in a network never seen for this server after its learning period."""
        if not self._enabled:
            return []
        text = event.source.ip
        addresses = self._addresses
        # Client addresses repeat: the parse and the network number are memoised; None is
        # memoised too, for "not an address" (hence the sentinel: one lookup per event).
        parsed = addresses.get(text, _UNSEEN)
        if parsed is _UNSEEN:
            parsed = addresses.put(text, self._parse_client(text))
        if parsed is None:
            return []
        compact, number = parsed
        if not self._patterns:  # the usual case: no configured server to match
            if not self._learn:
                return []
            # The usual verdict, inlined: a known server past nothing new (the network is
            # known, or the server is open). Same LRU touch as ``_judge_learned``.
            key = event_server_key(event)
            server = self._servers.get(key)
            if server is not None and (server.open or number in server.networks):
                self._servers.move_to_end(key)
                return []
            return self._judge_learned(event, compact, number)
        client = _address(compact)
        destination = event.destination
        matched = self._matching(event.tls.client.server_name, destination.ip, destination.port)
        if matched:
            if any(pattern.allows(client) for pattern in matched):
                return []
            return [self._configured_finding(event, client, matched)]
        if self._learn:
            return self._judge_learned(event, compact, number)
        return []

    def _parse_client(self, text: str) -> tuple[IpAddress | int, int] | None:
        """(the client, its network number), or None when ``text`` is not an address. A
        dotted quad (the usual client) is kept as its int: most are never reported, and an
        ``IPv4Address`` is built from the int only for a finding (``_address``)."""
        quad = _DOTTED_QUAD.fullmatch(text)
        if quad is not None:
            first, second, third, fourth = quad.groups()
            value = int(first) << 24 | int(second) << 16 | int(third) << 8 | int(fourth)
            host_bits = 32 - self._v4_prefix
            return value, value >> host_bits << host_bits
        client = _client_address(text)
        return None if client is None else (client, self._network_number(client))

    def _matching(self, server_name: str | None, ip: str, port: int) -> list[ServerPattern]:
        """The configured entries that cover this server (usually none)."""
        if not self._patterns:
            return []
        address = _client_address(ip)
        return [pattern for pattern in self._patterns
                if pattern.matches(server_name, address, port)]

    def _network_number(self, client: IpAddress) -> int:
        """The client's network as a set key: the address with its host bits cleared (IPv6
        tagged above bit 128 so that it never equals an IPv4 one)."""
        if client.version == 4:
            host_bits = 32 - self._v4_prefix
            return int(client) >> host_bits << host_bits
        host_bits = 128 - self._v6_prefix
        return (int(client) >> host_bits << host_bits) | _V6_TAG

    def _network(self, client: IpAddress) -> IpNetwork:
        """The client's network, for messages and identities."""
        prefix = self._v4_prefix if client.version == 4 else self._v6_prefix
        return ipaddress.ip_network((client, prefix), strict=False)

    def _judge_learned(self, event: HandshakeEvent, compact: IpAddress | int, number: int
                       ) -> list[Finding]:
        key = event_server_key(event)
        now = _microseconds(event_time(event))
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = _Server(now + self._period_us)
            self._evict(keep=key)
        else:
            self._servers.move_to_end(key)
        if server.open:
            return []
        if number in server.networks:
            return []
        learning = now < server.learn_until
        if len(server.networks) >= self._max_per_server:
            self._learned -= len(server.networks)
            server.networks.clear()
            server.open = True
            self.saturated += 1
            return []
        server.networks.add(number)
        self._learned += 1
        self._evict(keep=key)
        if learning:
            return []
        client = _address(compact)
        network = self._network(client)
        return [Finding(
            rule=RULE, severity=Severity.LOW,
            message=(f"client {client} is the first seen from {network} for {key} since its "
                     "learning period ended"),
            identity=(key, str(network)),
            details={"mode": "learned", "client_ip": str(client),
                     "client_network": str(network),
                     "known_networks": len(server.networks) - 1},
        )]

    def _evict(self, keep: str) -> None:
        """Forget least recently seen servers (never ``keep``) until within both bounds."""
        while (len(self._servers) > self._max_servers
               or (self._learned > self._max_networks and len(self._servers) > 1)):
            oldest = next(iter(self._servers))
            if oldest == keep:
                break
            self._learned -= len(self._servers.pop(oldest).networks)
            self.evicted += 1

    def _configured_finding(self, event: HandshakeEvent, client: IpAddress,
                            matched: Sequence[ServerPattern]) -> Finding:
        key = event_server_key(event)
        network = self._network(client)
        allowed = sorted({str(net) for pattern in matched for net in pattern.allow})
        return Finding(
            rule=RULE, severity=RULES[RULE].severity,
            message=(f"client {client} is outside the networks allowed to reach {key} "
                     f"({', '.join(allowed)})"),
            identity=(key, str(network)),
            details={"mode": "configured", "client_ip": str(client),
                     "client_network": str(network), "allowed": allowed},
        )

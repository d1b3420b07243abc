"""``cert.changed``: a known server presents a leaf it has not presented before.

State, per server (its key, SNI else ip:port, plus the destination port): the leaf SHA-256s
it presented, most recent last. The first sighting of a server only learns. A later leaf not
in the remembered set is a finding (details: the previous leaf, i.e. the most recently seen
one, and the new one) and is then remembered, so a server rotating among a few known
certificates (a load balancer with several) is quiet once each was seen.

Bounds (``policy.rules.changed``): at most ``max_servers`` servers (least recently seen
evicted first, counted in ``evicted_servers``) and ``max_certificates_per_server`` leaves
per server (oldest evicted first, counted in ``evicted_certificates``). A server forgotten
by eviction is learnt again without a finding. Handshakes without a visible chain (TLS 1.3)
neither learn nor alert.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

from processors.base import Finding
from processors.catalog import RULES
from processors.memo import event_server_key
from processors.policy import Policy
from schemas.events import HandshakeEvent

RULE = "cert.changed"


class CertificateChanged:
    """``cert.changed`` (see the module docstring)."""

    rules: ClassVar[tuple[str, ...]] = (RULE,)

    def __init__(self, policy: Policy) -> None:
        settings = policy.rules.changed
        self.enabled = settings.enabled
        self.max_servers = settings.max_servers
        self.max_certificates = settings.max_certificates_per_server
        self.evicted_servers = 0
        self.evicted_certificates = 0
        # server (key, port) -> leaf sha256 -> None, ordered oldest first (an ordered set)
        self._servers: OrderedDict[tuple[str, int], OrderedDict[str, None]] = OrderedDict()

    def __len__(self) -> int:
        """The number of servers remembered."""
        return len(self._servers)

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        chain = event.certwatch.tls.server_chain
        if not self.enabled or not chain:
            return []
        leaf = chain[0].hash.sha256.lower()
        server = (event_server_key(event), event.destination.port)
        seen = self._servers.get(server)
        if seen is None:
            self._remember_server(server, leaf)
            return []
        self._servers.move_to_end(server)
        if leaf in seen:
            seen.move_to_end(leaf)
            return []
        previous, known = next(reversed(seen)), len(seen)
        seen[leaf] = None
        if len(seen) > self.max_certificates:
            seen.popitem(last=False)
            self.evicted_certificates += 1
        key, port = server
        return [Finding(
            rule=RULE,
            severity=RULES[RULE].severity,
            message=f"{key} (port {port}) presented a new certificate {leaf[:16]}... "
                    f"(previously {previous[:16]}...)",
            identity=(key, str(port), leaf),
            certificate_position=0,
            details={"previous_sha256": previous, "new_sha256": leaf,
                     "known_certificates": known},
        )]

    def _remember_server(self, server: tuple[str, int], leaf: str) -> None:
        self._servers[server] = OrderedDict({leaf: None})
        if len(self._servers) > self.max_servers:
            self._servers.popitem(last=False)
            self.evicted_servers += 1

"""``cert.hostname_mismatch`` and ``cert.self_signed``: is the leaf the server's own, and
who vouches for it.

Hostname: the SNI must be covered by the leaf's dNSName / iPAddress SANs, or by its subject
commonName when it has no dNSName SAN (RFC 6125 6.4; the rules are in
``processors.hostnames``). No SNI means the client did not say which name it wanted:
nothing to judge. A leaf that could not be parsed is not judged either (its names are
unknown; ``cert.untrusted_chain`` reports it).

Self-signed: the leaf is self-signed (``certwatch.self_signed``: subject equals issuer and the
signature verifies with its own key, as the sensor decides) *and* nothing in the policy
vouches for that exact certificate. A self-signed leaf is fine, and raises nothing, when
it is

* one of the trust store's roots (``trust.ca_files`` is how a private self-signed service
  is declared; the same roots ``cert.untrusted_chain`` uses),
* in the allowlist (``allowlist.sha256``), or
* pinned: a pin entry for the SNI is satisfied by it (``processors.detectors.pins``).

Otherwise it is reported even when ``cert.untrusted_chain`` also fires: the two rules
answer different questions and are switched separately.
"""

from __future__ import annotations

from typing import ClassVar

from processors.base import Finding
from processors.catalog import RULES
from processors.detectors.pins import pinned_and_satisfied
from processors.detectors.trust import load_anchors
from processors.hostnames import certificate_covers
from processors.memo import BoundedMemo, event_server_key
from processors.policy import Policy
from schemas.events import HandshakeEvent

HOSTNAME_MISMATCH = "cert.hostname_mismatch"
SELF_SIGNED = "cert.self_signed"


class HostnameMismatch:
    """``cert.hostname_mismatch`` (see the module docstring)."""

    rules: ClassVar[tuple[str, ...]] = (HOSTNAME_MISMATCH,)

    def __init__(self, policy: Policy) -> None:
        self.enabled = policy.rules.enabled(HOSTNAME_MISMATCH)
        self._covers: BoundedMemo[tuple[str, tuple[str, ...], tuple[str, ...], str | None],
                                  bool] = BoundedMemo(4096)

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        sni = event.tls.client.server_name
        chain = event.certwatch.tls.server_chain
        if not self.enabled or not sni or not chain:
            return []
        leaf = chain[0]
        if leaf.x509 is None or leaf.certwatch.parse_error is not None:
            return []
        subject = leaf.x509.subject
        names = subject.common_name if subject is not None else []
        common_name = names[-1] if names else None  # the most specific (last) CN
        extra = leaf.certwatch
        # The verdict is a pure function of the name and the certificate's identifiers,
        # which repeat from handshake to handshake: memoised (bounded).
        key = (sni, tuple(extra.san_dns), tuple(extra.san_ip), common_name)
        covered = self._covers.get(key)
        if covered is None:
            covered = self._covers.put(
                key, certificate_covers(sni, extra.san_dns, extra.san_ip, common_name))
        if covered:
            return []
        server, port = event_server_key(event), event.destination.port
        presented = [*extra.san_dns, *extra.san_ip] or ([common_name] if common_name else [])
        return [Finding(
            rule=HOSTNAME_MISMATCH,
            severity=RULES[HOSTNAME_MISMATCH].severity,
            message=f"{server} (port {port}): the certificate is not valid for {sni!r} "
                    f"(it names {', '.join(presented[:5]) or 'nothing'}"
                    f"{', ...' if len(presented) > 5 else ''})",
            identity=(server, str(port), leaf.hash.sha256),
            certificate_position=0,
            details={"server_name": sni, "san_dns": list(extra.san_dns),
                     "san_ip": list(extra.san_ip), "common_name": common_name,
                     "leaf_sha256": leaf.hash.sha256},
        )]


class SelfSigned:
    """``cert.self_signed`` (see the module docstring). The trust store is loaded when the
    detector is built (shared with ``cert.untrusted_chain``: ``load_anchors`` caches it), so
    a bad ``trust.ca_files`` is a start-up error, never one in ``inspect``."""

    rules: ClassVar[tuple[str, ...]] = (SELF_SIGNED,)

    def __init__(self, policy: Policy) -> None:
        self.enabled = policy.rules.enabled(SELF_SIGNED)
        self.pins = tuple(policy.pins)
        self.allowed = frozenset(policy.allowlist.sha256) if policy.allowlist else frozenset()
        self.anchors = load_anchors(policy.trust) if self.enabled else None

    def _vouched_for(self, event: HandshakeEvent, sha256: str) -> bool:
        return (sha256 in self.allowed
                or (self.anchors is not None and sha256 in self.anchors.sha256)
                or pinned_and_satisfied(self.pins, event))

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        chain = event.certwatch.tls.server_chain
        if not self.enabled or not chain or not chain[0].certwatch.self_signed:
            return []
        leaf = chain[0]
        sha256 = leaf.hash.sha256.lower()
        if self._vouched_for(event, sha256):
            return []
        server, port = event_server_key(event), event.destination.port
        subject = leaf.x509.subject if leaf.x509 else None
        dn = subject.distinguished_name if subject else None
        return [Finding(
            rule=SELF_SIGNED,
            severity=RULES[SELF_SIGNED].severity,
            message=f"{server} (port {port}) presented a self-signed certificate "
                    f"({dn or 'unnamed'}) that the policy does not trust, allowlist or pin",
            identity=(server, str(port), sha256),
            certificate_position=0,
            details={"leaf_sha256": sha256, "subject": dn},
        )]

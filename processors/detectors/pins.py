"""``cert.pin_mismatch`` and ``cert.not_allowlisted``: what the policy authorises.

Pins (``policy.pins``, RFC 7469 semantics without the HTTP header): a pin entry applies to a
handshake when its ``host`` pattern covers the SNI (``processors.hostnames.matches``: exact,
or ``*.example.com`` for exactly one label). An entry is *satisfied* when every constraint it
gives holds:

* ``sha256``: the leaf's SHA-256 is one of them;
* ``spki_sha256``: some certificate the server sent has one of these SPKI hashes (RFC 7469
  2.4; only certificates on the wire count: a root the server does not send cannot match);
* ``issuer``: the leaf's issuer DN equals it, compared as RFC 4514 strings normalised (see
  :func:`normalise_dn`), in either order (RFC 4514 writes the most specific RDN first, OpenSSL
  the reverse; operators paste both).

Several entries may apply to one host (a backup pin): the handshake is fine when any one of
them is satisfied, and ``cert.pin_mismatch`` (critical) fires when none is. No SNI, or no
chain (TLS 1.3), means nothing to judge.

Allowlist: when ``policy.allowlist`` is present (strict inventory mode), every leaf seen must
be in ``allowlist.sha256``, whatever the server; else ``cert.not_allowlisted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from processors.base import Finding
from processors.catalog import RULES
from processors.hostnames import matches
from processors.memo import event_server_key
from processors.policy import Pin, Policy
from schemas.events import HandshakeEvent
from schemas.x509 import ChainCertificate

PIN_MISMATCH = "cert.pin_mismatch"
NOT_ALLOWLISTED = "cert.not_allowlisted"

# Dotted forms of the attribute types RFC 4514 3 names (and the usual extras), so that
# "2.5.4.3=x" and "CN=x" compare equal.
_TYPE_SYNONYMS = {
    "2.5.4.3": "CN", "COMMONNAME": "CN", "2.5.4.6": "C", "COUNTRYNAME": "C",
    "2.5.4.7": "L", "LOCALITYNAME": "L", "2.5.4.8": "ST", "S": "ST",
    "STATEORPROVINCENAME": "ST", "2.5.4.10": "O", "ORGANIZATIONNAME": "O",
    "2.5.4.11": "OU", "ORGANIZATIONALUNITNAME": "OU", "2.5.4.9": "STREET",
    "STREETADDRESS": "STREET", "0.9.2342.19200300.100.1.25": "DC",
    "DOMAINCOMPONENT": "DC", "0.9.2342.19200300.100.1.1": "UID", "USERID": "UID",
    "1.2.840.113549.1.9.1": "EMAILADDRESS", "E": "EMAILADDRESS",
    "2.5.4.5": "SERIALNUMBER",
}

NormalisedDn = tuple[tuple[tuple[str, str], ...], ...]


def _split_unescaped(text: str, separators: str) -> list[str]:
    """Split on separator characters not preceded by a backslash (RFC 4514 2.4)."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in separators:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    r"""RFC 4514 2.4 escapes: ``\,`` and friends, and ``\XX`` hex pairs (UTF-8)."""
    out = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out += bytes.fromhex(pair)
                i += 3
                continue
            out += value[i + 1].encode()
            i += 2
            continue
        out += char.encode()
        i += 1
    return out.decode("utf-8", "replace")


def normalise_dn(dn: str) -> NormalisedDn:
    """An RFC 4514 DN string as comparable data: RDNs in written order, each a sorted tuple of
    (attribute type in upper case with dotted OIDs named, value unescaped, whitespace-collapsed
    and case-folded). Case-folding the value follows RFC 5280 7.1 (caseIgnoreMatch)."""
    rdns = []
    for rdn in _split_unescaped(dn, ",;"):
        if not rdn.strip():
            continue
        attributes = []
        for attribute in _split_unescaped(rdn, "+"):
            kind, _, value = attribute.partition("=")
            kind = kind.strip().upper()
            kind = _TYPE_SYNONYMS.get(kind, kind)
            attributes.append((kind, " ".join(_unescape(value.strip()).split()).casefold()))
        rdns.append(tuple(sorted(attributes)))
    return tuple(rdns)


def same_dn(a: str, b: str) -> bool:
    """Whether two RFC 4514 strings name the same DN, written in the same or reverse order."""
    left, right = normalise_dn(a), normalise_dn(b)
    return bool(left) and (left == right or left == right[::-1])


def pin_failures(pin: Pin, chain: Sequence[ChainCertificate]) -> list[str]:
    """The constraints of ``pin`` that ``chain`` (leaf first, non-empty) breaks; empty means
    the pin is satisfied."""
    leaf = chain[0]
    failures = []
    if pin.sha256 and leaf.hash.sha256.lower() not in pin.sha256:
        failures.append("sha256")
    if pin.spki_sha256 and not any(
            (cert.certwatch.spki_sha256 or "").lower() in pin.spki_sha256 for cert in chain):
        failures.append("spki_sha256")
    if pin.issuer is not None:
        issuer = leaf.x509.issuer if leaf.x509 is not None else None
        if issuer is None or issuer.distinguished_name is None or not same_dn(
                pin.issuer, issuer.distinguished_name):
            failures.append("issuer")
    return failures


def applicable_pins(pins: Sequence[Pin], server_name: str | None) -> list[Pin]:
    """The pin entries whose host pattern covers ``server_name`` (none without SNI)."""
    if not server_name:
        return []
    return [pin for pin in pins if matches(pin.host, server_name)]


def pinned_and_satisfied(pins: Sequence[Pin], event: HandshakeEvent) -> bool:
    """Whether some pin entry applies to this handshake and is satisfied by its chain."""
    chain = event.certwatch.tls.server_chain
    return bool(chain) and any(
        not pin_failures(pin, chain)
        for pin in applicable_pins(pins, event.tls.client.server_name))


class PinMismatch:
    """``cert.pin_mismatch`` (see the module docstring)."""

    rules: ClassVar[tuple[str, ...]] = (PIN_MISMATCH,)

    def __init__(self, policy: Policy) -> None:
        self.pins = tuple(policy.pins) if policy.rules.enabled(PIN_MISMATCH) else ()
        self.idle = not self.pins
        """Nothing pinned (or the rule off): never a finding, the processor skips it."""

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        if not self.pins:
            return []  # nothing pinned (or the rule is off): nothing to look at
        chain = event.certwatch.tls.server_chain
        sni = event.tls.client.server_name
        applicable = applicable_pins(self.pins, sni) if chain else []
        if not applicable:
            return []
        failures = {pin.host: pin_failures(pin, chain) for pin in applicable}
        if any(not broken for broken in failures.values()):
            return []
        server, port, leaf = event_server_key(event), event.destination.port, chain[0].hash.sha256
        broken = sorted({item for items in failures.values() for item in items})
        return [Finding(
            rule=PIN_MISMATCH,
            severity=RULES[PIN_MISMATCH].severity,
            message=f"{server} (port {port}) is pinned but presented a certificate matching "
                    f"none of its pins (failed: {', '.join(broken)})",
            identity=(server, str(port), leaf),
            certificate_position=0,
            details={"server_name": sni, "pins": sorted(failures), "failed": broken,
                     "leaf_sha256": leaf,
                     "spki_sha256": [c.certwatch.spki_sha256 or "" for c in chain],
                     "issuer": (chain[0].x509.issuer.distinguished_name
                                if chain[0].x509 and chain[0].x509.issuer else None)},
        )]


class NotAllowlisted:
    """``cert.not_allowlisted`` (see the module docstring)."""

    rules: ClassVar[tuple[str, ...]] = (NOT_ALLOWLISTED,)

    def __init__(self, policy: Policy) -> None:
        allowlist = policy.allowlist
        self.allowed = (frozenset(allowlist.sha256)
                        if allowlist is not None and policy.rules.enabled(NOT_ALLOWLISTED)
                        else None)
        self.idle = self.allowed is None
        """No allowlist (or the rule off): never a finding, the processor skips it."""

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        chain = event.certwatch.tls.server_chain
        if self.allowed is None or not chain:
            return []
        leaf = chain[0].hash.sha256.lower()
        if leaf in self.allowed:
            return []
        server, port = event_server_key(event), event.destination.port
        subject = chain[0].x509.subject if chain[0].x509 else None
        return [Finding(
            rule=NOT_ALLOWLISTED,
            severity=RULES[NOT_ALLOWLISTED].severity,
            message=f"{server} (port {port}) presented a certificate that is not in the "
                    f"allowlist ({leaf})",
            identity=(server, str(port), leaf),
            certificate_position=0,
            details={"leaf_sha256": leaf,
                     "subject": subject.distinguished_name if subject else None},
        )]

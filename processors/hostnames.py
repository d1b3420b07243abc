"""Matching a server name against the identifiers a certificate (or a policy) presents.

RFC 6125 section 6 (and RFC 9525, which replaces it), as every detector here applies it:

* names compare case-insensitively (ASCII only: DNS is case-insensitive in ASCII, RFC 4343),
  with one trailing dot ignored;
* IDNA names are compared as A-labels, as they are on the wire (``xn--...``): the SNI carries
  A-labels (RFC 6066 section 3) and so do dNSName SANs (RFC 5280 section 7.2), so no
  conversion is needed and none is attempted;
* a wildcard is only the whole left-most label (``*.example.com``) and matches exactly one
  non-empty label: not ``example.com``, not ``a.b.example.com`` (RFC 6125 6.4.3, RFC 9525
  6.3). Partial-label wildcards (``w*.example.com``) and wildcards elsewhere match nothing,
  and a wildcard needs at least two labels after it (``*.com`` matches nothing);
* an IP address is matched only against iPAddress SANs, by value (RFC 6125 6.2.1 / 9525 6.2);
* the subject commonName is a fallback used only when the certificate has no dNSName SAN
  (RFC 6125 6.4.4).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def normalise(name: str) -> str:
    """Lower-case (ASCII) and drop one trailing dot: the form every comparison uses."""
    name = name.strip()
    if name.endswith("."):
        name = name[:-1]
    # str.lower() would also fold non-ASCII letters; DNS only folds A-Z (RFC 4343 3).
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ip_literal(name: str) -> _IpAddress | None:
    """The address if ``name`` is an IPv4/IPv6 literal (``[v6]`` accepted), else None."""
    name = name.strip().strip("[]")
    if ":" not in name and not name[-1:].isdigit():
        return None  # the common case, a DNS name: spare the exception (IPv4 ends in a digit)
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def matches(pattern: str, host: str) -> bool:
    """Whether the reference identifier ``pattern`` (a SAN dNSName, a CN, or a policy host
    pattern) covers ``host``, under the rules of the module docstring."""
    pattern, host = normalise(pattern), normalise(host)
    if not pattern or not host or "*" in host:
        return False
    if not pattern.startswith("*."):
        return "*" not in pattern and pattern == host
    suffix = pattern[2:]
    if "*" in suffix or suffix.count(".") < 1:
        return False
    first, dot, rest = host.partition(".")
    return bool(first) and bool(dot) and rest == suffix


def ip_matches(candidates: Iterable[str], address: _IpAddress) -> bool:
    """Whether one of the textual addresses ``candidates`` is ``address`` (by value, so
    ``::1`` equals ``0:0::1``)."""
    return any(ip_literal(candidate) == address for candidate in candidates)


def certificate_covers(host: str, san_dns: Sequence[str], san_ip: Sequence[str],
                       common_name: str | None) -> bool:
    """Whether a certificate with these identifiers is valid for ``host`` (RFC 6125 6.4).

    ``host`` may be a DNS name or an IP literal (SNI must not carry one, RFC 6066 3, but some
    clients send it anyway). ``common_name`` is the most specific subject CN, consulted only
    when ``san_dns`` is empty.
    """
    address = ip_literal(host)
    if address is not None:
        return ip_matches(san_ip, address)
    if san_dns:
        return any(matches(pattern, host) for pattern in san_dns)
    return common_name is not None and matches(common_name, host)

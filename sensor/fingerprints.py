"""TLS fingerprints of hellos and certificates: JA3/JA3S, JA4 (+ raw/original variants),
JA4S and JA4X.

Definitions followed:

* JA3/JA3S: Salesforce's definition. JA3 = ``SSLVersion,Ciphers,Extensions,EllipticCurves,
  EllipticCurvePointFormats``; JA3S = ``SSLVersion,Cipher,Extensions``; decimal values joined
  with ``-``, GREASE values (RFC 8701) removed from every list, MD5 of the string.
* JA4 (BSD-3-Clause), JA4S and JA4X (FoxIO License 1.1): FoxIO's technical specifications
  (``technical_details/JA4.md``, ``JA4S.md``, ``JA4X.md``). JA4S and JA4X are licensed for
  non-commercial use only: callers must only call :func:`ja4s`/:func:`ja4x` when the
  deployment's licence switch says FoxIO License 1.1 terms are accepted.

Where the reference implementations disagree with the written specification we follow the
specification (see the test module for the cases that prove it):

* a first ALPN value whose first or last byte is not alphanumeric is shown as the first and
  last hex digits of the whole value (``0xBA 0xAD`` → ``bd``); the reference Python and Rust
  tools print ``99`` there (tls-non-ascii-alpn.pcapng), a rule of an older spec revision.
* GREASE is removed from the signature algorithm list too ("ignore GREASE values anywhere").
* JA4 version: "the highest value" of supported_versions means the newest version; DTLS
  codes count *down* (RFC 6347 4.1: 1.0 = 0xfeff, 1.2 = 0xfefd), so for DTLS we take the
  newest, not the numerically largest.

Where the specifications are silent we chose, and say so: an empty extension list in JA4S
and JA4X hashes to ``000000000000`` like JA4's empty lists; GREASE is removed from JA4S's and
JA3S's extension lists as in JA4.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sensor.errors import CertificateError
from sensor.tls.messages import ClientHello, ServerHello
from sensor.tls.registry import is_grease
from sensor.x509 import name_attribute_oids, parse_tbs

_SNI = 0x0000  # RFC 6066 section 3
_ALPN = 0x0010  # RFC 7301 section 3.1
_EMPTY_HASH = "000000000000"  # JA4.md: an empty list is shown as zeros, not sha256("")

# JA4.md "TLS and DTLS Version".
_JA4_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_TRANSPORTS = frozenset("tqd")
# The sixteen RFC 8701 GREASE values of 16-bit fields as a set (section 2: 0x0A0A, 0x1A1A, ...
# 0xFAFA), checked against the registry's definition: one membership test per value instead of
# a function call. Written out rather than found by testing all 65,536 values with
# ``is_grease`` (~5 ms of every start-up); tests/sensor/test_fingerprints.py compares the two.
_GREASE = frozenset(v for v in (0x0A0A + 0x1010 * i for i in range(16)) if is_grease(v))


def _no_grease(values: Iterable[int]) -> list[int]:
    grease = _GREASE
    return [v for v in values if v not in grease]


def _dec(values: Iterable[int]) -> str:
    return "-".join(str(v) for v in values)


def _hex(values: Iterable[int]) -> str:
    return ",".join(f"{v:04x}" for v in values)


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12] if text else _EMPTY_HASH


# ---------------------------------------------------------------------------------- JA3 / JA3S


def ja3_string(ch: ClientHello) -> str:
    """The JA3 string: ``version,ciphers,extensions,groups,point_formats`` (decimal)."""
    return ",".join(
        (
            str(ch.legacy_version),
            _dec(_no_grease(ch.cipher_suites)),
            _dec(_no_grease(ext.type for ext in ch.extensions)),
            _dec(_no_grease(ch.supported_groups)),
            _dec(ch.ec_point_formats),
        )
    )


def ja3(ch: ClientHello) -> str:
    """JA3: MD5 (lowercase hex) of :func:`ja3_string`."""
    return hashlib.md5(ja3_string(ch).encode("ascii"), usedforsecurity=False).hexdigest()


def ja3s_string(sh: ServerHello) -> str:
    """The JA3S string: ``version,cipher,extensions`` (decimal; version as sent in the
    ServerHello's legacy_version field, as Salesforce's JA3S does)."""
    extensions = _dec(_no_grease(ext.type for ext in sh.extensions))
    return f"{sh.legacy_version},{sh.cipher_suite},{extensions}"


def ja3s(sh: ServerHello) -> str:
    """JA3S: MD5 (lowercase hex) of :func:`ja3s_string`."""
    return hashlib.md5(ja3s_string(sh).encode("ascii"), usedforsecurity=False).hexdigest()


# ----------------------------------------------------------------------------------------- JA4


def _check_transport(transport: str) -> None:
    if transport not in _TRANSPORTS:
        raise ValueError(f"transport must be 't', 'q' or 'd', not {transport!r}")


def _newest(versions: list[int]) -> int:
    # DTLS versions are one's complements of (1.x) and count down (RFC 6347 4.1).
    return max(versions, key=lambda v: 0x10000 - v if v >> 8 == 0xFE else v)


def _ja4_version(ch: ClientHello) -> str:
    offered = _no_grease(ch.supported_versions)
    version = _newest(offered) if offered else ch.legacy_version
    return _JA4_VERSIONS.get(version, "00")


def alpn_chars(value: bytes | None) -> str:
    """First and last character of an ALPN value per JA4.md "ALPN Extension Value":
    ``00`` when absent or empty; the characters when both end bytes are ASCII letters or
    digits; else the first and last digit of the value's lowercase hex."""
    if not value:
        return "00"
    first, last = value[0], value[-1]
    if _alnum(first) and _alnum(last):
        return chr(first) + chr(last)
    text = value.hex()
    return text[0] + text[-1]


def _alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _ja4_parts(ch: ClientHello, transport: str, *, original: bool) -> tuple[str, str, str]:
    """JA4's a section, cipher list and extension(+sigalg) list, unhashed."""
    sorted_parts, original_parts = _ja4_both(ch, transport)
    return original_parts if original else sorted_parts


def _ja4_both(
    ch: ClientHello, transport: str
) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """JA4's unhashed parts for the sorted lists (JA4, JA4_r) and for the lists in wire order
    (JA4_o, JA4_ro), sharing the a section and the GREASE filtering."""
    _check_transport(transport)
    ciphers = _no_grease(ch.cipher_suites)
    extensions = _no_grease([ext.type for ext in ch.extensions])
    sni = "d" if _SNI in extensions else "i"
    alpn = alpn_chars(ch.alpn[0] if ch.alpn else None)
    a = (
        f"{transport}{_ja4_version(ch)}{sni}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn}"
    )
    sigalgs = _no_grease(ch.signature_algorithms)
    sigalg_text = f"_{_hex(sigalgs)}" if sigalgs else ""
    # JA4.md: sorted, and SNI/ALPN left out as the a section already shows them.
    sorted_exts = sorted(e for e in extensions if e not in (_SNI, _ALPN))
    return (
        (a, _hex(sorted(ciphers)), _hex(sorted_exts) + sigalg_text),
        (a, _hex(ciphers), _hex(extensions) + sigalg_text),
    )


def _ja4_hashed(a: str, ciphers: str, extensions: str) -> str:
    # The c section is zeros when the extension list is empty, even if sigalgs remain.
    c = _EMPTY_HASH if extensions.startswith("_") or not extensions else _hash12(extensions)
    return f"{a}_{_hash12(ciphers)}_{c}"


def ja4(ch: ClientHello, *, transport: str = "t") -> str:
    """JA4 of a ClientHello; ``transport`` is ``t`` (TCP), ``q`` (QUIC) or ``d`` (DTLS).
    Raises ValueError for any other transport."""
    return _ja4_hashed(*_ja4_parts(ch, transport, original=False))


def ja4_r(ch: ClientHello, *, transport: str = "t") -> str:
    """JA4_r: the raw JA4 string (sorted lists, SNI and ALPN left out), unhashed."""
    return "_".join(_ja4_parts(ch, transport, original=False))


def ja4_o(ch: ClientHello, *, transport: str = "t") -> str:
    """JA4_o: JA4 hashed over the lists in wire order (SNI and ALPN kept)."""
    return _ja4_hashed(*_ja4_parts(ch, transport, original=True))


def ja4_ro(ch: ClientHello, *, transport: str = "t") -> str:
    """JA4_ro: the raw, wire-order JA4 string."""
    return "_".join(_ja4_parts(ch, transport, original=True))


def ja4_all(ch: ClientHello, *, transport: str = "t") -> tuple[str, str, str, str]:
    """(JA4, JA4_r, JA4_o, JA4_ro) of one ClientHello, its lists walked once: what the
    event builder wants. Raises ValueError for a transport other than ``t``/``q``/``d``."""
    sorted_parts, original_parts = _ja4_both(ch, transport)
    return (
        _ja4_hashed(*sorted_parts),
        "_".join(sorted_parts),
        _ja4_hashed(*original_parts),
        "_".join(original_parts),
    )


# ---------------------------------------------------------------------------------------- JA4S


def _ja4s_parts(sh: ServerHello, transport: str) -> tuple[str, str]:
    _check_transport(transport)
    extensions = _no_grease(ext.type for ext in sh.extensions)
    version = _JA4_VERSIONS.get(sh.selected_version, "00")
    a = f"{transport}{version}{min(len(extensions), 99):02d}{alpn_chars(sh.alpn)}"
    return f"{a}_{sh.cipher_suite:04x}", _hex(extensions)


def ja4s(sh: ServerHello, *, transport: str = "t") -> str:
    """JA4S of a ServerHello (FoxIO License 1.1: call only when that licence is accepted).
    Raises ValueError for a transport other than ``t``/``q``/``d``."""
    head, extensions = _ja4s_parts(sh, transport)
    return f"{head}_{_hash12(extensions)}"


def ja4s_r(sh: ServerHello, *, transport: str = "t") -> str:
    """JA4S_r: the raw JA4S string (FoxIO License 1.1 likewise)."""
    head, extensions = _ja4s_parts(sh, transport)
    return f"{head}_{extensions}"


# ---------------------------------------------------------------------------------------- JA4X


def _ja4x_parts(der: bytes) -> tuple[str, str, str] | None:
    try:
        tbs = parse_tbs(der)
        issuer = name_attribute_oids(tbs.issuer)
        subject = name_attribute_oids(tbs.subject)
    except CertificateError:
        return None
    extensions = [ext.oid for ext in tbs.extensions]
    return _oid_list(issuer), _oid_list(subject), _oid_list(extensions)


def _oid_list(oids: list[bytes]) -> str:
    return ",".join(oid.hex() for oid in oids)


def ja4x(der: bytes) -> str | None:
    """JA4X of a DER certificate (FoxIO License 1.1: call only when that licence is
    accepted): the truncated SHA-256 of the issuer's attribute OIDs, the subject's, and the
    extensions' OIDs, each as the hex of the OID's DER content octets in encoded order.
    ``None`` when the DER cannot be framed. Works on certificates ``cryptography`` refuses
    (it reads only the structure), so a fingerprint exists for every framed certificate."""
    parts = _ja4x_parts(der)
    return None if parts is None else "_".join(_hash12(part) for part in parts)


def ja4x_r(der: bytes) -> str | None:
    """JA4X_r: the raw JA4X string (FoxIO License 1.1 likewise)."""
    parts = _ja4x_parts(der)
    return None if parts is None else "_".join(parts)

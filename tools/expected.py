"""Readers of what independent tools say is in a capture, normalised for comparison.

Each reader takes the text (or decoded JSON/YAML) of one expected-output file and returns
one :class:`Expected` per TLS handshake the tool reported, with its values rewritten into
one canonical form per field, so that a comparison is a string equality:

=============== ================================================ ========================
field           canonical form                                   from
=============== ================================================ ========================
``sni``         the server name as sent                          tshark zeek ja4 ndpi suricata
``version``     ``tls1.2``, ``tls1.3`` (drafts too), ``ssl3.0``  tshark zeek ndpi suricata
``cipher``      IANA name, or ``0xc02f`` where the tool gives    tshark (code) zeek ndpi
                the code only
``alpn``        the protocol the server selected                 tshark zeek ndpi suricata
``alpn_offered`` the client's list, comma-joined                 tshark ndpi suricata
``leaf_sha256`` lower-case hex of the leaf certificate's DER     tshark zeek
``leaf_sha1``   lower-case hex                                   tshark ndpi suricata
``serial``      upper-case hex without leading zeros             tshark zeek suricata
``ja3`` ``ja3s`` lower-case hex MD5                              tshark ndpi suricata
``ja4`` ``ja4s`` as printed                                      ja4 ndpi zeek suricata
=============== ================================================ ========================

Endpoints are normalised with :mod:`ipaddress` (so IPv6 text compares equal however it
was written). Readers never guess which side is the client beyond what the tool says;
the caller matches handshakes on the unordered pair of endpoints.

The formats are the tools' documented outputs (Zeek TSV logs, nDPI's ``ndpiReader -v``
flow lines, the JA4 reference's JSON, Suricata-verify's ``test.yaml`` and our own
``tshark_oracle`` JSON); nothing here is taken from those projects' code.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

FIELDS: Final = (
    "sni", "version", "cipher", "alpn", "alpn_offered", "leaf_sha256", "leaf_sha1",
    "serial", "ja3", "ja3s", "ja4", "ja4s",
)
"""Every field a reference can carry, in report order."""

Endpoint = tuple[str, int]
FlowKey = tuple[str, int, str, int]
"""(client ip, client port, server ip, server port), as the tool oriented it."""


@dataclass(frozen=True, slots=True)
class Expected:
    """One handshake as one reference tool reported it.

    ``key`` is None for a check that names no endpoints (some Suricata-verify tests):
    it applies to whichever handshake of the capture it matches.
    """

    tool: str
    key: FlowKey | None
    transport: str
    values: Mapping[str, str]
    origin: str = ""


# -- normalisation ---------------------------------------------------------------------

def norm_ip(text: str) -> str:
    """Canonical text of an IPv4/IPv6 address (brackets and zone-less); raises ValueError."""
    return str(ipaddress.ip_address(text.strip().strip("[]")))


def split_endpoint(text: str) -> Endpoint:
    """``1.2.3.4:443``, ``[2001:db8::1]:443`` or ``2001:db8::1:443`` (port after the last
    colon, as tshark prints it) to a normalised (ip, port)."""
    host, _, port = text.strip().rpartition(":")
    return norm_ip(host), int(port)


def make_key(client: Endpoint, server: Endpoint) -> FlowKey:
    return client[0], client[1], server[0], server[1]


def unordered(key: FlowKey) -> tuple[Endpoint, Endpoint]:
    """The key without its direction: tools disagree on who is the client mid-stream."""
    a, b = (key[0], key[1]), (key[2], key[3])
    return (a, b) if a <= b else (b, a)


_VERSION_RE: Final = re.compile(
    r"^(?P<proto>D?TLS|SSL)\s*v?\s*(?P<major>\d)(?:\.?(?P<minor>\d))?", re.IGNORECASE
)


def norm_version(text: str | None) -> str | None:
    """``TLSv12`` (Zeek), ``TLSv1.2`` (tshark, nDPI), ``TLS 1.2`` / ``TLSv1`` (Suricata),
    ``TLSv1.3-draft23`` / ``TLS 1.3 draft-22`` / ``TLSv1.3 (Fizz)`` to ``tls1.2`` /
    ``tls1.3``; SSL to ``ssl3.0``/``ssl2.0``. Anything else is kept, lower-cased."""
    if not text or text in ("-", "UNDETERMINED"):
        return None
    match = _VERSION_RE.match(text.strip())
    if match is None:
        return text.strip().lower()
    return f"{match['proto'].lower()}{match['major']}.{match['minor'] or '0'}"


def norm_hex(text: str | None) -> str | None:
    """A digest written with or without colons, either case, to plain lower-case hex."""
    if not text:
        return None
    return text.replace(":", "").strip().lower() or None


def norm_serial(text: str | None) -> str | None:
    """A serial as hex (``00:8A:07``, ``8a07``, ``'32'``) to upper-case hex without leading
    zeros, so that DER's sign byte and tools' zero-stripping compare equal."""
    digits = norm_hex(text)
    if digits is None:
        return None
    try:
        return f"{int(digits, 16):X}"
    except ValueError:
        return digits.upper()


def norm_cipher(text: str | None) -> str | None:
    """A cipher name as is (upper-cased), or a code ``0xC02F`` as ``0xc02f``."""
    if not text:
        return None
    text = text.strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]{4}", text):
        return text.lower()
    return text.upper()


def is_cipher_code(value: str) -> bool:
    return len(value) == 6 and value.startswith("0x")


def transport_of_ja4(ja4: str | None) -> str:
    """JA4's first letter is the transport: ``t`` TCP, ``q`` QUIC, ``d`` DTLS (both UDP)."""
    return "udp" if ja4 and ja4[0] in "qd" else "tcp"


def _clean(values: Mapping[str, str | None]) -> dict[str, str]:
    return {name: value for name, value in values.items() if value}


def _alpn_list(items: Iterable[object]) -> str | None:
    joined = ",".join(str(item) for item in items if item is not None)
    return joined or None


# -- tshark oracle (our tools/tshark_oracle.py over tshark 4.0) -------------------------

def _msg_str(message: Mapping[str, object], name: str) -> str | None:
    value = message.get(name)
    return value if isinstance(value, str) and value else None


def _msg_list(message: Mapping[str, object], name: str) -> list[object]:
    value = message.get(name)
    return list(value) if isinstance(value, list) else []


def tshark_handshakes(oracle: Mapping[str, object], origin: str = "") -> list[Expected]:
    """One record per TCP stream / UDP flow holding a hello: the first ClientHello, the
    first ServerHello and the first server Certificate message of that stream."""
    streams: dict[tuple[str, str], dict[str, Mapping[str, object]]] = {}
    for message in _msg_list(oracle, "handshake_messages"):
        if not isinstance(message, Mapping):
            continue
        msg = _msg_str(message, "msg")
        if msg == "Certificate" and message.get("from_client"):
            continue
        stream_id = (str(message.get("transport")), str(message.get("stream")))
        if msg is not None:
            streams.setdefault(stream_id, {}).setdefault(msg, message)
    return [
        record for messages in streams.values()
        if (record := _tshark_stream(messages, origin)) is not None
    ]


def _tshark_stream(
    messages: Mapping[str, Mapping[str, object]], origin: str
) -> Expected | None:
    hello = messages.get("ClientHello")
    server = messages.get("ServerHello")
    if hello is not None:
        client_ep, server_ep = hello.get("src"), hello.get("dst")
    elif server is not None:
        client_ep, server_ep = server.get("dst"), server.get("src")
    else:
        return None
    if not isinstance(client_ep, str) or not isinstance(server_ep, str):
        return None
    values: dict[str, str | None] = {}
    if hello is not None:
        values["sni"] = _msg_str(hello, "sni")
        values["alpn_offered"] = _alpn_list(_msg_list(hello, "alpn"))
        values["ja3"] = norm_hex(_msg_str(hello, "ja3"))
    if server is not None:
        values["version"] = norm_version(_msg_str(server, "selected_version"))
        values["cipher"] = norm_cipher(_msg_str(server, "cipher_suite"))
        values["alpn"] = _alpn_list(_msg_list(server, "alpn")[:1])
        values["ja3s"] = norm_hex(_msg_str(server, "ja3s"))
    certificate = messages.get("Certificate")
    chain = _msg_list(certificate, "chain") if certificate is not None else []
    if chain and isinstance(chain[0], Mapping):
        leaf = chain[0]
        values["leaf_sha256"] = norm_hex(_msg_str(leaf, "sha256"))
        values["leaf_sha1"] = norm_hex(_msg_str(leaf, "sha1"))
        values["serial"] = norm_serial(_msg_str(leaf, "serial_hex"))
    first = hello if hello is not None else server
    assert first is not None
    transport = "udp" if first.get("transport") == "udp" else "tcp"
    key = make_key(split_endpoint(client_ep), split_endpoint(server_ep))
    return Expected("tshark", key, transport, _clean(values), origin)


def tshark_tuples(oracle: Mapping[str, object]) -> dict[tuple[Endpoint, Endpoint], str]:
    """Every endpoint pair tshark saw a handshake message on, with its transport."""
    seen: dict[tuple[Endpoint, Endpoint], str] = {}
    for message in _msg_list(oracle, "handshake_messages"):
        if isinstance(message, Mapping):
            src, dst = message.get("src"), message.get("dst")
            if isinstance(src, str) and isinstance(dst, str):
                pair = unordered(make_key(split_endpoint(src), split_endpoint(dst)))
                seen[pair] = "udp" if message.get("transport") == "udp" else "tcp"
    return seen


# -- Zeek TSV logs (ssl.log, x509.log) -------------------------------------------------

@dataclass(frozen=True, slots=True)
class ZeekLog:
    """One Zeek ASCII log: its ``#path`` and rows; unset fields (``-``) are absent."""

    path: str
    rows: Sequence[Mapping[str, str]]


def parse_zeek_log(text: str) -> ZeekLog:
    """Parse Zeek's tab-separated log format (header lines ``#separator``, ``#path``,
    ``#fields``...). Unset fields are dropped from the row; ``(empty)`` becomes ``""``.
    Text without a ``#fields`` header gives an empty log."""
    separator, unset, empty, path = "\t", "-", "(empty)", ""
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("#"):
            if line.startswith("#separator "):
                separator = line.split(" ", 1)[1].encode().decode("unicode_escape")
                continue
            name, _, value = line[1:].partition(separator)
            if name == "fields":
                fields = value.split(separator)
            elif name == "path":
                path = value
            elif name == "unset_field":
                unset = value
            elif name == "empty_field":
                empty = value
            continue
        if not fields or not line:
            continue
        row = {
            name: ("" if value == empty else value)
            for name, value in zip(fields, line.split(separator), strict=False)
            if value != unset
        }
        rows.append(row)
    return ZeekLog(path, rows)


def zeek_serials(logs: Iterable[ZeekLog]) -> dict[str, str]:
    """SHA-256 fingerprint to serial from x509 logs (recent Zeek logs the fingerprint)."""
    serials: dict[str, str] = {}
    for log in logs:
        for row in log.rows:
            fingerprint, serial = norm_hex(row.get("fingerprint")), row.get("certificate.serial")
            if fingerprint and serial:
                serials.setdefault(fingerprint, serial)
    return serials


def zeek_handshakes(
    ssl_log: ZeekLog, serials: Mapping[str, str] | None = None, origin: str = ""
) -> list[Expected]:
    """One record per ssl.log row; the leaf is the first of ``cert_chain_fps``, its serial
    comes from the x509 log(s) given as ``serials`` (see :func:`zeek_serials`)."""
    records = []
    for row in ssl_log.rows:
        try:
            client = norm_ip(row["id.orig_h"]), int(row["id.orig_p"])
            server = norm_ip(row["id.resp_h"]), int(row["id.resp_p"])
        except (KeyError, ValueError):
            continue
        chain = [fp for fp in row.get("cert_chain_fps", "").split(",") if fp]
        leaf = norm_hex(chain[0]) if chain else None
        version = row.get("version", "")
        values = {
            "sni": row.get("server_name"),
            "version": norm_version(version),
            "cipher": norm_cipher(row.get("cipher")),
            "alpn": row.get("next_protocol"),
            "leaf_sha256": leaf,
            "serial": norm_serial((serials or {}).get(leaf or "")),
            "ja4": row.get("ja4"),
            "ja4s": row.get("ja4s"),
        }
        udp = version.startswith("DTLS") or transport_of_ja4(row.get("ja4")) == "udp"
        transport = "udp" if udp else "tcp"
        records.append(
            Expected("zeek", make_key(client, server), transport, _clean(values), origin)
        )
    return records


# -- JA4 reference implementation (python/ja4.py JSON output) --------------------------

def ja4_handshakes(streams: Sequence[object], origin: str = "") -> list[Expected]:
    """One record per stream with a ClientHello or ServerHello fingerprint. ``JA4.1`` is
    the stream's first ClientHello (``JA4.2`` a second one, after a HelloRetryRequest)."""
    records = []
    for stream in streams:
        if not isinstance(stream, Mapping):
            continue
        ja4, ja4s = stream.get("JA4.1"), stream.get("JA4S")
        if not isinstance(ja4, str) and not isinstance(ja4s, str):
            continue
        try:
            client = norm_ip(str(stream["src"])), int(str(stream["srcport"]))
            server = norm_ip(str(stream["dst"])), int(str(stream["dstport"]))
        except (KeyError, ValueError):
            continue
        domain = stream.get("domain")
        values = {
            "ja4": ja4 if isinstance(ja4, str) else None,
            "ja4s": ja4s if isinstance(ja4s, str) else None,
            "sni": domain if isinstance(domain, str) else None,
        }
        transport = transport_of_ja4(values["ja4"] or values["ja4s"])
        records.append(
            Expected("ja4", make_key(client, server), transport, _clean(values), origin)
        )
    return records


# -- nDPI (ndpiReader -v flow lines) -----------------------------------------------------

_NDPI_FLOW: Final = re.compile(r"^\s*\d+\s+(TCP|UDP)\s+(\S+)\s+<?->\s+(\S+)\s+(.*)$")
_NDPI_TOKENS: Final = {
    "sni": re.compile(r"\[Hostname/SNI: ([^\]]*)\]"),
    "ja3": re.compile(r"\[JA3C: ([0-9a-f]+)"),
    "ja4": re.compile(r"\[JA4: ([^\]\s]+)\]"),
    "ja3s": re.compile(r"\[JA3S: ([0-9a-f]+)"),
    "cipher": re.compile(r"\[Cipher: ([^\]]+)\]"),
    "alpn": re.compile(r"\[\(Negotiated\) ALPN: ([^\]]*)\]"),
    "alpn_offered": re.compile(r"\[\(Advertised\) ALPNs: ([^\]]*)\]"),
    "leaf_sha1": re.compile(r"\[Certificate SHA-1: ([0-9A-Fa-f:]+)\]"),
    "version": re.compile(r"\]\[((?:D?TLS|SSL)v[0-9.]+)(?: \([^)\]]*\))?\]"),
}
_NDPI_TLS_SIGNS: Final = ("ja3", "ja4", "ja3s", "cipher", "version")


def ndpi_handshakes(text: str, origin: str = "") -> list[Expected]:
    """One record per flow line carrying TLS details (a JA3C/JA4/JA3S, cipher or TLS
    version). nDPI prints the ClientHello's version when it saw no ServerHello; the
    version is kept only when a ServerHello was seen (a JA3S or cipher is printed)."""
    records = []
    for line in text.splitlines():
        flow = _NDPI_FLOW.match(line)
        if flow is None:
            continue
        proto, first, second, rest = flow.groups()
        found = {
            name: match.group(1).strip()
            for name, pattern in _NDPI_TOKENS.items()
            if (match := pattern.search(rest)) is not None
        }
        if not any(name in found for name in _NDPI_TLS_SIGNS):
            continue
        if "ja3s" not in found and "cipher" not in found:
            found.pop("version", None)
        values = {
            "sni": found.get("sni"),
            "ja3": found.get("ja3"),
            "ja4": found.get("ja4"),
            "ja3s": found.get("ja3s"),
            "cipher": norm_cipher(found.get("cipher")),
            "alpn": found.get("alpn"),
            "alpn_offered": _alpn_list(found.get("alpn_offered", "").split(";")),
            "leaf_sha1": norm_hex(found.get("leaf_sha1")),
            "version": norm_version(found.get("version")),
        }
        try:
            key = make_key(split_endpoint(first), split_endpoint(second))
        except ValueError:
            continue
        records.append(Expected("ndpi", key, proto.lower(), _clean(values), origin))
    return records


# -- Suricata-verify (test.yaml checks on eve.json tls events) ---------------------------

_SURICATA_FIELDS: Final[Mapping[str, tuple[str, Callable[[str], str | None]]]] = {
    "tls.sni": ("sni", str),
    "tls.version": ("version", norm_version),
    "tls.serial": ("serial", norm_serial),
    "tls.fingerprint": ("leaf_sha1", norm_hex),
    "tls.ja3.hash": ("ja3", norm_hex),
    "tls.ja3s.hash": ("ja3s", norm_hex),
    "tls.ja4": ("ja4", str),
    "tls.server_alpns[0]": ("alpn", str),
}


def suricata_handshakes(test: Mapping[str, object], origin: str = "") -> list[Expected]:
    """One record per ``filter`` check on a ``tls`` event expected at least once. Checks
    without ``src_ip``/``dest_ip`` get ``key=None``."""
    checks = test.get("checks")
    records = []
    for check in checks if isinstance(checks, list) else []:
        spec = check.get("filter") if isinstance(check, Mapping) else None
        match = spec.get("match") if isinstance(spec, Mapping) else None
        if not isinstance(spec, Mapping) or not isinstance(match, Mapping):
            continue
        if match.get("event_type") != "tls" or spec.get("count", 1) == 0:
            continue
        values: dict[str, str | None] = {
            name: convert(str(match[path]))
            for path, (name, convert) in _SURICATA_FIELDS.items()
            if path in match
        }
        offered = [match[f"tls.client_alpns[{i}]"] for i in range(16)
                   if f"tls.client_alpns[{i}]" in match]
        values["alpn_offered"] = _alpn_list(offered)
        key = None
        if "src_ip" in match and "dest_ip" in match:
            key = make_key(
                (norm_ip(str(match["src_ip"])), int(str(match.get("src_port", 0)))),
                (norm_ip(str(match["dest_ip"])), int(str(match.get("dest_port", 0)))),
            )
        transport = "udp" if str(match.get("proto", "TCP")).upper() == "UDP" else "tcp"
        records.append(Expected("suricata", key, transport, _clean(values), origin))
    return records

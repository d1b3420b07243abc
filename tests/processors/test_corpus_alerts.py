"""The detectors on real captures, against what independent tools say about them.

Every expectation here is built from another tool's output beside the captures in
``tests/data`` (tshark's view with each certificate's dates, signature and key; Zeek's
``ssl.log`` and, where ``../shared/corpus`` is present, Zeek's certificate validation
baseline; nDPI's per-flow risks), mapped to our rules through the rule definitions of the
default policy, never from our own output. Where a tool's notion is wider or narrower than
the rule's (nDPI's "weak cipher" includes every suite without forward secrecy; Zeek's
validation of 2014 accepted SHA-1 chains that today's web PKI rejects) only the direction
both agree on is asserted, and the comment says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.alerts import AlertEvent
from schemas.events import HandshakeEvent
from sensor.tls.registry import cipher_suite, cipher_suite_name
from tests.sensor.test_pipeline_golden import (
    TSHARK_CAPTURES,
    TSHARK_MISREADS,
    by_tuple,
    match,
    tshark_handshakes,
)
from tests.support import DATA, handshakes, read_frames, run_sensor
from tools.expected import parse_zeek_log, split_endpoint

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"

Endpoint = tuple[str, int]
Finding = tuple[str, Endpoint, str]
"""(rule, server endpoint, what it is about: certificate sha256, or "" for the handshake)."""

# The default policy's thresholds (processors.policy / processors.profiles defaults).
DEPRECATED_VERSIONS = {"SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"}
WEAK_HASHES = ("md2", "md4", "md5", "sha1")
MIN_KEY_BITS = {"RSA": 2048, "DSA": 2048, "EC": 224}
EXPIRING_SOON = timedelta(days=14)
# A date this close to the handshake is not judged: tshark's message time and the event's
# time differ by the handshake's round trips.
MARGIN = timedelta(days=1)


@cache
def run(capture: Path) -> tuple[list[HandshakeEvent], list[AlertEvent]]:
    """Our handshakes and alerts for a capture, default policy, a fresh processor."""
    events = handshakes(run_sensor(read_frames(capture)))
    processor = Processor(Policy(), DETECTORS)
    return events, [alert for event in events for alert in processor.process(event)]


def finding_of(alert: AlertEvent) -> Finding:
    cert = alert.certwatch.certificate
    about = cert.hash.sha256.lower() if cert is not None and cert.hash.sha256 else ""
    ip, port = alert.destination.ip, alert.destination.port
    assert ip is not None and port is not None
    return alert.rule.name, (str(ip), port), about


def ours(capture: Path, rules: Iterable[str], servers: set[Endpoint] | None = None
         ) -> set[Finding]:
    wanted = set(rules)
    return {f for f in map(finding_of, run(capture)[1])
            if f[0] in wanted and (servers is None or f[1] in servers)}


def server_of(event: HandshakeEvent) -> Endpoint:
    ip, port = event.destination.ip, event.destination.port
    assert ip is not None and port is not None
    return str(ip), port


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- tshark: every capture ------------------------------------------------------------------

CERT_RULES = ("cert.expired", "cert.not_yet_valid", "cert.expiring_soon", "cert.weak_signature",
              "cert.weak_key")
PROTOCOL_RULES = ("tls.deprecated_version", "tls.weak_cipher")


def tshark_findings(capture: Path) -> tuple[set[Finding], set[Endpoint], set[Endpoint]]:
    """What tshark's view implies under the default policy, and the servers it judged:
    (findings, servers with a ServerHello, servers with a server Certificate)."""
    events = by_tuple(run(capture)[0])
    expected: set[Finding] = set()
    hello_servers: set[Endpoint] = set()
    cert_servers: set[Endpoint] = set()
    for key, messages in tshark_handshakes(capture).items():
        skip = TSHARK_MISREADS.get((capture.name, key[0][1]), frozenset())
        event = match(events, key)
        if "handshake" in skip or event is None:
            continue  # the sensor tests check that no handshake tshark sees goes missing
        server = server_of(event)  # tunnelled flows: tshark names the outer addresses
        for hello in messages.get("ServerHello", [])[:1]:
            hello_servers.add(server)
            if hello["selected_version"] in DEPRECATED_VERSIONS:
                expected.add(("tls.deprecated_version", server, ""))
            if "cipher" not in skip and cipher_suite(int(hello["cipher_suite"], 16)).weak:
                expected.add(("tls.weak_cipher", server, ""))
        for message in messages.get("Certificate", [])[:1]:
            cert_servers.add(server)
            expected |= chain_findings(server, message["chain"], message["time"])
    return expected, hello_servers, cert_servers


def chain_findings(server: Endpoint, chain: list[dict[str, Any]], time: float) -> set[Finding]:
    now = datetime.fromtimestamp(time, UTC)
    found: set[Finding] = set()
    for position, cert in enumerate(chain):
        if "parse_error" in cert:
            continue  # nothing to judge; cert.untrusted_chain's business
        sha256 = cert["sha256"].lower()
        start, end = when(cert["not_before"]), when(cert["not_after"])
        if end < now - MARGIN:
            found.add(("cert.expired", server, sha256))
        if start > now + MARGIN:
            found.add(("cert.not_yet_valid", server, sha256))
        if position == 0 and now + MARGIN < end < now + EXPIRING_SOON - MARGIN:
            found.add(("cert.expiring_soon", server, sha256))
        signature = cert["sig_alg"].lower()
        if not cert["self_signed_name"] and signature.startswith(WEAK_HASHES):
            found.add(("cert.weak_signature", server, sha256))
        minimum = MIN_KEY_BITS.get(cert["key_type"])
        if minimum is not None and cert["key_bits"] < minimum:
            found.add(("cert.weak_key", server, sha256))
    return found


def _near_boundary(capture: Path) -> set[Endpoint]:
    """Servers with a certificate date within MARGIN of the handshake: not compared."""
    near: set[Endpoint] = set()
    events = by_tuple(run(capture)[0])
    for key, messages in tshark_handshakes(capture).items():
        event = match(events, key)
        for message in messages.get("Certificate", [])[:1]:
            now = datetime.fromtimestamp(message["time"], UTC)
            for cert in message["chain"]:
                dates = [when(cert[k]) for k in ("not_before", "not_after") if k in cert]
                if event is not None and any(abs(d - now) <= MARGIN or
                                             abs(d - now - EXPIRING_SOON) <= MARGIN
                                             for d in dates):
                    near.add(server_of(event))
    return near


@pytest.mark.parametrize("capture", TSHARK_CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_version_and_cipher_alerts_follow_tsharks_server_hello(capture: Path) -> None:
    expected, hello_servers, _ = tshark_findings(capture)
    want = {f for f in expected if f[0] in PROTOCOL_RULES}
    assert ours(capture, PROTOCOL_RULES, hello_servers) == want


@pytest.mark.parametrize("capture", TSHARK_CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_certificate_alerts_follow_tsharks_dates_signatures_and_keys(capture: Path) -> None:
    expected, _, cert_servers = tshark_findings(capture)
    servers = cert_servers - _near_boundary(capture)
    want = {f for f in expected if f[0] in CERT_RULES and f[1] in servers}
    assert ours(capture, CERT_RULES, servers) == want


def test_the_corpus_holds_what_these_comparisons_need() -> None:
    """The comparisons above are not vacuous: tshark's views imply findings of every
    kind this file checks, across the shipped captures."""
    kinds = {f[0] for capture in TSHARK_CAPTURES for f in tshark_findings(capture)[0]}
    assert kinds >= {"tls.deprecated_version", "tls.weak_cipher", "cert.expired",
                     "cert.expiring_soon", "cert.weak_signature"}


def test_the_expired_certificate_capture_alerts_on_the_expired_leaf_only() -> None:
    """tls-expired-cert.pcap: www.spidh.org's leaf ended 2014-03-04 23:59:59 (tshark),
    the handshake is on 2014-03-13; the other server's leaf is still valid that day."""
    capture = DATA / "zeek" / "tls-expired-cert.pcap"
    view = tshark_handshakes(capture)
    (expired_leaf,) = [
        m["chain"][0] for msgs in view.values() for m in msgs.get("Certificate", [])
        if when(m["chain"][0]["not_after"]) < datetime.fromtimestamp(m["time"], UTC)]
    got = ours(capture, ["cert.expired"])
    assert got == {("cert.expired", ("87.98.220.10", 443), expired_leaf["sha256"].lower())}


# -- Zeek: ssl.log, and the certificate validation baseline when the corpus is present ---

ZEEK_LOGS = sorted((DATA / "zeek").glob("*.ssl.log"))
ZEEK_DEPRECATED = {"SSLv2", "SSLv3", "TLSv10", "TLSv11"}


@cache
def suite_codes() -> dict[str, int]:
    """IANA name -> code, for the names Zeek and nDPI print."""
    return {cipher_suite_name(code): code for code in range(0x10000)}


@pytest.mark.parametrize("log", ZEEK_LOGS, ids=lambda p: p.name)
def test_version_and_cipher_alerts_follow_zeeks_ssl_log(log: Path) -> None:
    capture = log.with_name(log.name.removesuffix(".ssl.log"))
    expected: set[Finding] = set()
    servers: set[Endpoint] = set()
    for row in parse_zeek_log(log.read_text()).rows:
        server = split_endpoint(f"{row['id.resp_h']}:{row['id.resp_p']}")
        servers.add(server)
        if row["version"] in ZEEK_DEPRECATED:
            expected.add(("tls.deprecated_version", server, ""))
        if cipher_suite(suite_codes()[row["cipher"]]).weak:
            expected.add(("tls.weak_cipher", server, ""))
    assert servers
    assert ours(capture, PROTOCOL_RULES, servers) == expected


# Zeek's validate-certs baselines (OpenSSL against Zeek's Mozilla root bundle, at capture
# time) for captures shipped in tests/data: capture -> baseline file.
ZEEK_VALIDATION = {
    "tls-expired-cert.pcap": "scripts.policy.protocols.ssl.validate-certs/ssl-all.log",
    "CVE-2015-3194.pcap": "scripts.base.protocols.ssl.cve-2015-3194/ssl.log",
}


@pytest.mark.parametrize("capture_name", sorted(ZEEK_VALIDATION))
def test_chains_zeek_could_not_validate_are_untrusted(capture_name: str) -> None:
    """Only "not ok" is asserted: a chain OpenSSL could not validate in 2014-2015 does not
    verify today either, while Zeek's "ok" for SHA-1 chains is not today's verdict."""
    baseline = CORPUS / "zeek" / "Baseline" / ZEEK_VALIDATION[capture_name]
    if not baseline.exists():
        pytest.skip(f"{baseline} is not here (../shared/corpus is CI's, not a fresh clone's)")
    capture = next((DATA / "zeek").glob(capture_name))
    events = run(capture)[0]
    present = {server_of(e) for e in events}
    expected: set[tuple[str, Endpoint]] = set()
    for row in parse_zeek_log(baseline.read_text()).rows:
        server = split_endpoint(f"{row['id.resp_h']}:{row['id.resp_p']}")
        if server not in present or row["validation_status"] == "ok":
            continue
        expected.add(("cert.untrusted_chain", server))
        if row["validation_status"] == "certificate has expired":
            expected.add(("cert.expired", server))
    assert expected
    got = {(rule, server) for rule, server, _ in
           ours(capture, ["cert.untrusted_chain", "cert.expired"], {s for _, s in expected})}
    assert got == expected


# -- nDPI: the risks of each flow --------------------------------------------------------

NDPI_OUTS = sorted((DATA / "ndpi").glob("*.out"))
_FLOW = re.compile(r"^\s*\d+\s+(TCP|UDP)\s+(\S+)\s+<?->\s+(\S+)\s+\[")
_RISKS = re.compile(r"Risk: ((?:\*\* [^*]+ \*\*)+)")
_CIPHER = re.compile(r"\[Cipher: ([A-Z0-9_]+)\]")
_VERSION = re.compile(r"\]\[((?:D?TLS|SSL)v[0-9.]+)\]")
# nDPI risk -> our rule, where the two mean the same under the default policy.
NDPI_RULES = {
    "Obsolete TLS (v1.1 or older)": "tls.deprecated_version",
    "Self-signed Cert": "cert.self_signed",
    "TLS Cert Expired": "cert.expired",
    "TLS Cert Mismatch": "cert.hostname_mismatch",
}


def ndpi_flows(out: Path) -> list[tuple[Endpoint, Endpoint, set[str], str | None, str | None]]:
    """(first, second endpoint, risks, cipher, version) of each flow line of a .out."""
    flows = []
    for line in out.read_text().splitlines():
        flow = _FLOW.match(line)
        if flow is None:
            continue
        risks = set()
        if (found := _RISKS.search(line)) is not None:
            risks = {r.strip() for r in found.group(1).split("**") if r.strip()}
        try:
            first, second = split_endpoint(flow.group(2)), split_endpoint(flow.group(3))
        except ValueError:
            continue  # an endpoint nDPI printed without a port (non-TCP/UDP payloads)
        cipher, version = _CIPHER.search(line), _VERSION.search(line)
        flows.append((first, second, risks, cipher.group(1) if cipher else None,
                      version.group(1) if version else None))
    return flows


@pytest.mark.parametrize("out", NDPI_OUTS, ids=lambda p: p.name)
def test_ndpi_risks_are_our_alerts(out: Path) -> None:
    capture = out.with_name(out.name.removesuffix(".out"))
    events = run(capture)[0]
    servers = {server_of(e) for e in events}
    got = {(rule, server) for rule, server, _ in ours(capture, [*NDPI_RULES.values(),
                                                              "tls.weak_cipher"])}
    for first, second, risks, cipher, version in ndpi_flows(out):
        server = second if second in servers else first if first in servers else None
        if server is None:
            continue  # not a TLS flow of ours (or tunnelled: nDPI names inner addresses)
        for risk, rule in NDPI_RULES.items():
            if risk in risks:
                assert (rule, server) in got, f"nDPI: {risk} for {server}"
        # nDPI's "Obsolete TLS" is exactly our default minimum (TLS 1.2): both ways, when
        # nDPI printed the negotiated version (a cipher means it saw the ServerHello).
        if version is not None and cipher is not None:
            obsolete = "Obsolete TLS (v1.1 or older)" in risks
            assert (("tls.deprecated_version", server) in got) == obsolete, server
        # nDPI's "Weak TLS Cipher" also covers suites without forward secrecy, which the
        # default policy allows: asserted only for suites in the default forbidden classes.
        if "Weak TLS Cipher" in risks and cipher is not None:
            weak = cipher_suite(suite_codes()[cipher]).weak
            assert (("tls.weak_cipher", server) in got) == weak, (server, cipher)


def test_ndpi_files_carry_the_risks_compared() -> None:
    risks = {r for out in NDPI_OUTS for flow in ndpi_flows(out) for r in flow[2]}
    assert {"Obsolete TLS (v1.1 or older)", "Self-signed Cert", "Weak TLS Cipher"} <= risks

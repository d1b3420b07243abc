"""traffic.unexpected_source: configured allowed networks and learned client networks."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.base import Finding
from processors.catalog import Severity
from processors.detectors.sources import UnexpectedSourceDetector
from processors.policy import Policy
from schemas.events import HandshakeEvent

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
_COUNTER = iter(range(10**9))


def handshake(client: str, *, sni: str | None = "api.example.com", server: str = "203.0.113.10",
              port: int = 443, when: datetime = T0) -> HandshakeEvent:
    """A minimal handshake event, as the sensor would publish it."""
    return HandshakeEvent.model_validate({
        "@timestamp": when,
        "event": {"id": f"e{next(_COUNTER)}", "kind": "event", "category": ["network"],
                  "type": ["connection"], "dataset": "certwatch.tls.handshake",
                  "outcome": "success"},
        "observer": {"name": "tap-1"},
        "source": {"ip": client, "port": 50000},
        "destination": {"ip": server, "port": port},
        "network": {"type": "ipv6" if ":" in server else "ipv4"},
        "tls": {"version": "1.3", "established": True, "client": {"server_name": sni}},
        "certwatch": {"tls": {"ended_by": "established"}},
    })


def detector(**tunables: Any) -> UnexpectedSourceDetector:
    return UnexpectedSourceDetector(
        Policy.model_validate({"rules": {"traffic.unexpected_source": tunables}}))


def configured(host: str, *allow: str) -> UnexpectedSourceDetector:
    return detector(learn=False, servers=[{"host": host, "allow": list(allow)}])


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1
    return findings[0]


def test_client_outside_the_allowed_networks_of_a_named_server() -> None:
    watch = configured("API.example.com.", "10.0.0.0/8", "2001:db8:1::/48")
    assert watch.inspect(handshake("10.20.30.40")) == []
    assert watch.inspect(handshake("2001:db8:1:2::9")) == []
    finding = only(watch.inspect(handshake("192.0.2.77")))
    assert finding.rule == "traffic.unexpected_source"
    assert finding.severity is Severity.MEDIUM
    assert finding.identity == ("api.example.com", "192.0.2.0/24")
    assert finding.details["client_ip"] == "192.0.2.77"
    assert finding.details["allowed"] == ["10.0.0.0/8", "2001:db8:1::/48"]
    assert "192.0.2.77" in finding.message and "api.example.com" in finding.message
    # Another server is not covered by the entry (and learning is off).
    assert watch.inspect(handshake("192.0.2.77", sni="www.example.com")) == []


def test_wildcard_covers_exactly_one_label() -> None:
    watch = configured("*.example.com", "10.0.0.0/8")
    assert len(watch.inspect(handshake("192.0.2.1", sni="a.example.com"))) == 1
    assert watch.inspect(handshake("192.0.2.1", sni="a.b.example.com")) == []
    assert watch.inspect(handshake("192.0.2.1", sni="example.com")) == []
    assert watch.inspect(handshake("192.0.2.1", sni=None)) == []


@pytest.mark.parametrize(("host", "server", "port", "judged"), [
    ("203.0.113.10", "203.0.113.10", 8443, True),
    ("203.0.113.10:443", "203.0.113.10", 443, True),
    ("203.0.113.10:443", "203.0.113.10", 8443, False),
    ("203.0.113.11", "203.0.113.10", 443, False),
    ("2001:db8::10", "2001:db8:0:0::10", 443, True),
    ("[2001:db8::10]:443", "2001:db8::10", 443, True),
    ("[2001:db8::10]:443", "2001:db8::10", 444, False),
])
def test_server_by_address(host: str, server: str, port: int, judged: bool) -> None:
    # By address, whatever name the client asked for.
    watch = configured(host, "10.0.0.0/8")
    found = watch.inspect(handshake("192.0.2.1", server=server, port=port))
    assert bool(found) is judged
    assert watch.inspect(handshake("10.1.1.1", server=server, port=port)) == []


def test_an_entry_of_several_matching_allows_the_client() -> None:
    watch = detector(learn=False, servers=[
        {"host": "*.example.com", "allow": ["10.0.0.0/8"]},
        {"host": "api.example.com", "allow": ["192.0.2.0/24"]}])
    assert watch.inspect(handshake("192.0.2.1")) == []
    assert watch.inspect(handshake("10.0.0.1")) == []
    assert only(watch.inspect(handshake("198.51.100.1"))).details["allowed"] == [
        "10.0.0.0/8", "192.0.2.0/24"]


@pytest.mark.parametrize("host", ["[2001:db8::1", "10.0.0.1:99999", "api.example.com:443",
                                  "a*.example.com", "*.*.example.com", "10.0.0.300:443"])
def test_malformed_server_is_a_configuration_error(host: str) -> None:
    with pytest.raises(ValueError, match=r"expected|not"):
        configured(host, "10.0.0.0/8")


def test_learning_then_one_low_finding_per_new_network() -> None:
    watch = detector(learning_period="1h")
    during = [handshake(ip, when=T0 + n * timedelta(minutes=10))
              for n, ip in enumerate(["10.0.0.5", "10.0.1.5", "192.0.2.5", "2001:db8:aa:1::5"])]
    assert [f for event in during for f in watch.inspect(event)] == []
    later = T0 + 2 * HOUR
    # Known networks, other hosts in them: nothing.
    for ip in ["10.0.0.99", "10.0.1.1", "192.0.2.200", "2001:db8:aa:ffff::1"]:
        assert watch.inspect(handshake(ip, when=later)) == []
    finding = only(watch.inspect(handshake("198.51.100.23", when=later)))
    assert finding.severity is Severity.LOW
    assert finding.identity == ("api.example.com", "198.51.100.0/24")
    assert finding.details["mode"] == "learned"
    # Learned now: the same network never alerts again.
    assert watch.inspect(handshake("198.51.100.24", when=later + HOUR)) == []
    v6 = only(watch.inspect(handshake("2001:db8:ab::1", when=later)))
    assert v6.identity == ("api.example.com", "2001:db8:ab::/48")


def test_learning_period_starts_at_each_servers_first_handshake() -> None:
    watch = detector(learning_period="1h")
    watch.inspect(handshake("10.0.0.1", sni="old.example.com"))
    late_start = T0 + 5 * HOUR
    assert watch.inspect(handshake("10.0.0.1", sni="new.example.com", when=late_start)) == []
    # new.example.com is still learning; old.example.com is not.
    at = late_start + timedelta(minutes=30)
    assert watch.inspect(handshake("192.0.2.1", sni="new.example.com", when=at)) == []
    assert len(watch.inspect(handshake("192.0.2.1", sni="old.example.com", when=at))) == 1
    # A network known for one server is still new for another.
    after = late_start + 2 * HOUR
    assert watch.inspect(handshake("192.0.2.1", sni="new.example.com", when=after)) == []
    assert len(watch.inspect(handshake("198.51.100.1", sni="new.example.com", when=after))) == 1


def test_prefixes_are_tunable_and_mapped_ipv4_is_ipv4() -> None:
    watch = detector(learning_period="1h", ipv4_prefix=16, ipv6_prefix=64)
    watch.inspect(handshake("10.1.2.3"))
    later = T0 + 2 * HOUR
    assert watch.inspect(handshake("10.1.200.3", when=later)) == []
    assert watch.inspect(handshake("::ffff:10.1.9.9", when=later)) == []
    finding = only(watch.inspect(handshake("::ffff:10.2.0.1", when=later)))
    assert finding.identity[1] == "10.2.0.0/16"


def test_configured_server_is_judged_by_its_entry_not_learned() -> None:
    watch = detector(learning_period="1h",
                     servers=[{"host": "api.example.com", "allow": ["10.0.0.0/8"]}])
    later = T0 + 2 * HOUR
    watch.inspect(handshake("10.0.0.1"))
    assert watch.inspect(handshake("10.200.0.1", when=later)) == []  # allowed, never seen
    assert only(watch.inspect(handshake("192.0.2.1", when=later))).severity is Severity.MEDIUM
    assert watch.learned_networks == 0


def test_learning_off_finds_nothing_for_unconfigured_servers() -> None:
    watch = detector(learn=False)
    watch.inspect(handshake("10.0.0.1"))
    assert watch.inspect(handshake("192.0.2.1", when=T0 + 2 * HOUR)) == []


def test_server_with_too_many_networks_is_marked_open() -> None:
    watch = detector(learning_period="1h", max_networks_per_server=8)
    later = T0 + 2 * HOUR
    watch.inspect(handshake("10.0.0.1"))
    found = [f for n in range(1, 20) for f in watch.inspect(handshake(f"10.0.{n}.1", when=later))]
    assert len(found) == 7  # up to the bound, then the server is treated as public
    assert watch.saturated == 1 and watch.learned_networks == 0
    assert watch.inspect(handshake("192.0.2.1", when=later)) == []


def test_servers_and_networks_are_bounded() -> None:
    watch = UnexpectedSourceDetector(Policy(), max_servers=10, max_networks=25)
    for n in range(40):
        watch.inspect(handshake("10.0.0.1", sni=f"s{n}.example.com"))
    assert watch.evicted == 30 and watch.learned_networks == 10
    for n in range(20):
        watch.inspect(handshake(f"10.0.{n}.1", sni="s39.example.com"))
    assert watch.learned_networks <= 25
    # An evicted server starts learning again instead of alerting on everything.
    assert watch.inspect(handshake("192.0.2.1", sni="s0.example.com", when=T0 + 10 * HOUR)) == []
    assert watch.inspect(handshake("198.51.100.1", sni="s0.example.com",
                                   when=T0 + 12 * HOUR)) != []


def test_unparsable_client_address_is_not_judged() -> None:
    watch = configured("api.example.com", "10.0.0.0/8")
    assert watch.inspect(handshake("not-an-ip")) == []


_CLIENT_TEXTS = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=4).map(lambda address: f"::ffff:{address}"),
    st.lists(st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "1a", "", "+1"]),
             min_size=3, max_size=5).map(".".join),
)


@settings(max_examples=300, deadline=None)
@given(text=_CLIENT_TEXTS, prefix=st.integers(8, 32))
def test_after_learning_a_new_network_is_reported_as_ipaddress_sees_it(text: str,
                                                                       prefix: int) -> None:
    # The detector keeps a dotted quad as an int and builds the address only for a finding:
    # what it reports (client, network, identity) must be what ``ipaddress`` makes of the text.
    judge = detector(learning_period=HOUR, ipv4_prefix=prefix, ipv6_prefix=64)
    assert judge.inspect(handshake("198.51.100.7")) == []  # the server's first handshake
    found = judge.inspect(handshake(text, when=T0 + 2 * HOUR))
    try:
        client = ipaddress.ip_address(text)
    except ValueError:
        assert found == []
        return
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    network = ipaddress.ip_network(
        (client, prefix if client.version == 4 else 64), strict=False)
    first = ipaddress.ip_network(("198.51.100.7", prefix), strict=False)
    if network == first:
        assert found == []  # the learned network itself
        return
    assert [(f.details["client_ip"], f.details["client_network"], f.identity) for f in found] \
        == [(str(client), str(network), ("api.example.com", str(network)))]

"""tlsgen: the captures it writes say what it meant, to the sensor and to cryptography.

Ground truth comes from the generator's specs (and, for certificates, from ``cryptography``
checking them independently); the sensor is the reader under test of every capture.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from processors.catalog import RULES
from schemas.events import HandshakeEvent
from tests.support import anomalies, handshakes, read_frames, run_sensor, tcp_segments
from tools.tlsgen import handshake as hs
from tools.tlsgen.__main__ import main
from tools.tlsgen.certs import _is_probable_prime
from tools.tlsgen.connection import ConnectionSpec, conversation, tls_writes
from tools.tlsgen.pcap import Timing, write_capture
from tools.tlsgen.scenarios import CAPTURE_TIME, NAMES, Options, Scenario, build

ROOT = Path(__file__).resolve().parents[2]
ECS_VERSION = {hs.SSL3: "3.0", hs.TLS10: "1.0", hs.TLS11: "1.1", hs.TLS12: "1.2",
               hs.TLS13: "1.3"}
GROUP = {hs.X25519: "x25519", hs.SECP256R1: "secp256r1"}
ALERT = {hs.HANDSHAKE_FAILURE: "handshake_failure", hs.PROTOCOL_VERSION: "protocol_version"}
SMALL = {"steady-plus-burst": Options(connections=3), "handshake-failures": Options(connections=4),
         "benchmark": Options(connections=60, app_segments=3, concurrency=8)}


def scenario(name: str) -> Scenario:
    return build(name, SMALL.get(name, Options()))


def sensor_view(s: Scenario, path: Path) -> dict[tuple[str, int], HandshakeEvent]:
    s.write(path)
    events = run_sensor(read_frames(path))
    assert anomalies(events) == []
    seen = handshakes(events)
    by_client = {(e.source.ip, e.source.port): e for e in seen}
    assert len(by_client) == len(seen)
    return by_client


@pytest.mark.parametrize("name", NAMES)
def test_sensor_sees_exactly_what_the_scenario_meant(name: str, tmp_path: Path) -> None:
    s = scenario(name)
    seen = sensor_view(s, tmp_path / f"{name}.pcap")
    assert set(seen) == {spec.client for spec in s.connections}
    for spec in s.connections:
        assert spec.rules | spec.maybe_rules <= set(RULES)
        event = seen[spec.client]
        detail = event.certwatch.tls
        assert (event.destination.ip, event.destination.port) == spec.server
        assert event.tls.client.server_name == spec.sni
        assert event.tls.established == spec.established
        if not spec.established:  # the server's only answer is a fatal alert
            assert event.tls.version is None and detail.server_hello is None
            assert detail.server_chain == [] and not spec.chain
            assert detail.ended_by == "alert"
            assert [(a.sender, a.level, a.description) for a in detail.alerts] == [
                ("server", "fatal", ALERT[spec.failure_alert or 0])]
            continue
        assert event.tls.version == ECS_VERSION[spec.version]
        assert detail.server_hello is not None
        assert detail.server_hello.cipher_suite_code == f"{spec.cipher:04x}"
        assert [c.hash.sha256 for c in detail.server_chain] == [
            hashlib.sha256(der).hexdigest() for der in spec.chain]
        assert detail.certificate_encrypted == (spec.version == hs.TLS13)
        kx = detail.key_exchange
        assert (kx.dh_prime_bits if kx else None) == spec.dh_bits
        if spec.group is not None:
            assert event.tls.curve == GROUP[spec.group]
        assert detail.ended_by == "established" and detail.alerts == []


def _verify(s: Scenario, chain: tuple[bytes, ...], host: str) -> None:
    store = Store(x509.load_pem_x509_certificates(s.roots_pem))
    verifier = (PolicyBuilder().store(store).time(CAPTURE_TIME)
                .build_server_verifier(x509.DNSName(host)))
    certs = [x509.load_der_x509_certificate(der) for der in chain]
    verifier.verify(certs[0], certs[1:])


def _leaf(s: Scenario, index: int = 0) -> x509.Certificate:
    return x509.load_der_x509_certificate(s.connections[index].chain[0])


def test_clean_chains_verify_to_the_roots_for_their_names() -> None:
    s = build("clean-tls12")
    for spec in s.connections:
        assert spec.sni is not None and not spec.rules
        _verify(s, spec.chain, spec.sni)


def test_each_bad_certificate_is_bad_in_the_way_its_rule_says() -> None:
    assert _leaf(build("expired")).not_valid_after_utc < CAPTURE_TIME
    assert _leaf(build("not-yet-valid")).not_valid_before_utc > CAPTURE_TIME
    weak = _leaf(build("weak-rsa-1024")).public_key()
    assert isinstance(weak, rsa.RSAPublicKey) and weak.key_size == 1024
    wrong = build("wrong-host")
    with pytest.raises(VerificationError):
        _verify(wrong, wrong.connections[0].chain, "shop.example.com")
    _verify(wrong, wrong.connections[0].chain, "other.example.net")
    selfsigned = _leaf(build("self-signed"))
    assert selfsigned.issuer == selfsigned.subject
    selfsigned.verify_directly_issued_by(selfsigned)


def test_sha1_leaf_carries_a_valid_sha1_signature_by_its_issuer() -> None:
    s = build("sha1-signature")
    leaf = _leaf(s)
    issuer = x509.load_der_x509_certificate(s.connections[0].chain[1])
    assert leaf.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.5"
    key = issuer.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1())


def test_rogue_chain_copies_the_names_but_not_the_keys_of_the_pinned_pki() -> None:
    s = build("rogue-ca-for-pinned-host")
    real, rogue = (tuple(x509.load_der_x509_certificate(d) for d in c.chain)
                   for c in s.connections)
    assert [c.subject for c in real] == [c.subject for c in rogue]
    assert real[0].issuer == rogue[0].issuer
    _verify(s, s.connections[0].chain, "bank.example.com")
    with pytest.raises(VerificationError):
        _verify(s, s.connections[1].chain, "bank.example.com")
    pin = s.pins[0]
    assert pin["host"] == "bank.example.com"
    assert "cert.pin_mismatch" in s.connections[1].rules and not s.connections[0].rules


def test_dh_groups_are_the_published_safe_primes() -> None:
    import random

    rng = random.Random(0)
    for name, bits in (("modp1024", 1024), ("modp2048", 2048), ("ffdhe2048", 2048)):
        p = hs.rfc_dh_prime(name)
        assert p.bit_length() == bits
        assert _is_probable_prime(p, rng) and _is_probable_prime((p - 1) // 2, rng)
    # RFC 3526 section 3 prints the 2048-bit prime; its first words:
    assert hex(hs.rfc_dh_prime("modp2048")).startswith("0xffffffffffffffffc90fdaa22168c234")


def test_rate_scenarios_hold_the_burst_their_aggregates_name() -> None:
    s = build("steady-plus-burst", Options(connections=30))
    per_minute = Counter(int((c.start - CAPTURE_TIME.timestamp()) // 60) for c in s.connections)
    baseline = sorted(per_minute[m] for m in range(60))
    (spike,) = s.aggregates
    assert spike.rule == "traffic.spike" and per_minute[60] == 300
    assert baseline[0] >= 24 and baseline[-1] <= 36
    f = build("handshake-failures", Options(connections=30))
    failures: defaultdict[int, int] = defaultdict(int)
    for c in f.connections:
        failures[int((c.start - CAPTURE_TIME.timestamp()) // 60)] += not c.established
    assert f.aggregates[0].rule == "tls.handshake_failure_spike"
    assert failures[30] >= 24 and max(failures[m] for m in range(30)) <= 6


def test_tcp_streams_carry_exactly_the_tls_bytes_at_consistent_sequence_numbers(
    tmp_path: Path,
) -> None:
    spec = build("benchmark", Options(connections=1, app_segments=5)).connections[0]
    expected = [b"", b""]
    for side, data in tls_writes(spec, 1):
        expected[side] += data
    write_capture(tmp_path / "one.pcap", [conversation(spec, 1)], Timing(mss=500))
    streams: dict[bytes, bytearray] = defaultdict(bytearray)
    isn: dict[bytes, int] = {}
    for _, seg in tcp_segments(read_frames(tmp_path / "one.pcap")):
        if seg.flags & 0x02:
            isn[seg.src_addr] = seg.seq + 1
        assert len(seg.payload) <= 500
        if seg.payload:
            assert seg.seq - isn[seg.src_addr] == len(streams[seg.src_addr])  # in order
            streams[seg.src_addr] += seg.payload
    client, server = (bytes(int(x) for x in a[0].split(".")) for a in (spec.client, spec.server))
    assert bytes(streams[client]) == expected[0] and bytes(streams[server]) == expected[1]


def test_a_chain_longer_than_one_record_and_ipv6_are_read_whole(tmp_path: Path) -> None:
    base = build("clean-tls12").connections[0]
    chain = base.chain + base.chain[1:] * 20  # a Certificate message above 2^14 bytes
    assert len(hs.certificate(chain)) > hs.MAX_FRAGMENT
    spec = ConnectionSpec(("2001:db8::10", 50000), ("2001:db8::1", 443), base.start,
                          base.version, base.cipher, chain, base.sni, group=base.group)
    write_capture(tmp_path / "v6.pcap", [conversation(spec, 1)])
    (event,) = handshakes(run_sensor(read_frames(tmp_path / "v6.pcap")))
    assert event.network.type == "ipv6" and event.tls.established
    assert len(event.certwatch.tls.server_chain) == len(chain)


def test_same_seed_same_bytes_in_process_and_across_processes(tmp_path: Path) -> None:
    build("rogue-ca-for-pinned-host").write(tmp_path / "a.pcap")
    build("rogue-ca-for-pinned-host").write(tmp_path / "b.pcap")
    build("rogue-ca-for-pinned-host", Options(seed=2)).write(tmp_path / "c.pcap")
    a = (tmp_path / "a.pcap").read_bytes()
    assert a == (tmp_path / "b.pcap").read_bytes()
    assert a != (tmp_path / "c.pcap").read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "rogue-ca-for-pinned-host",
                    str(tmp_path / "d.pcap")], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    assert (tmp_path / "d.pcap").read_bytes() == a


def test_benchmark_of_1000_connections_is_quick_mixed_and_concurrent(tmp_path: Path) -> None:
    build("benchmark")  # certificates made (and cached) outside the timing
    started = time.perf_counter()
    stats = build("benchmark", Options(connections=1000, app_segments=20,
                                       concurrency=50)).write(tmp_path / "bench.pcap")
    assert time.perf_counter() - started < 10
    assert stats.connections == 1000
    seen = handshakes(run_sensor(read_frames(tmp_path / "bench.pcap")))
    assert Counter(e.tls.version for e in seen) == {"1.2": 700, "1.3": 300}
    assert all(e.tls.established for e in seen)
    assert all(len(e.certwatch.tls.server_chain) == 2 for e in seen if e.tls.version == "1.2")
    open_now, peak = 0, 0
    for _, seg in tcp_segments(read_frames(tmp_path / "bench.pcap")):
        if seg.flags & 0x12 == 0x02:
            open_now += 1
        elif seg.flags & 0x01 and seg.src_port == 443:
            open_now -= 1
        peak = max(peak, open_now)
    assert 25 <= peak <= 100


def test_cli_writes_capture_roots_policy_and_truth(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.pcap"
    assert main(["dhe-1024", str(out), "--seed", "3", "--write-roots", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "1 connections" in printed and out.exists()
    roots = x509.load_pem_x509_certificates((tmp_path / "dhe-1024-roots.pem").read_bytes())
    assert roots[0].subject == roots[0].issuer
    truth = (tmp_path / "dhe-1024-truth.json").read_text()
    assert '"dh_bits": 1024' in truth and "tls.weak_dh" in truth
    policy = json.loads((tmp_path / "dhe-1024-policy.yaml").read_text())
    assert policy["trust"]["ca_files"] == [str((tmp_path / "dhe-1024-roots.pem").resolve())]

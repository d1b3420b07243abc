"""``certwatch replay`` with detectors, ``policy check`` and ``csr check``, as users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from processors.catalog import RULES
from processors.registry import DETECTOR_RULES
from schemas.alerts import AlertEvent
from tests.support import DATA

CERTWATCH = [sys.executable, "-m", "certwatch.cli"]


def certwatch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CERTWATCH, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def alerts_of(text: str) -> list[AlertEvent]:
    return [AlertEvent.model_validate_json(line) for line in text.splitlines()]


def test_every_catalogue_rule_has_a_detector() -> None:
    assert set(RULES) == DETECTOR_RULES


def test_an_expired_certificate_is_judged_as_of_the_capture(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    result = certwatch("replay", DATA / "zeek" / "tls-expired-cert.pcap", "--events",
                       tmp_path / "events.jsonl", "--alerts", out)
    assert result.returncode == 0, result.stderr
    alerts = alerts_of(out.read_text())
    expired = [a for a in alerts if a.rule.name == "cert.expired"]
    assert len(expired) == 1
    alert = expired[0]
    assert alert.event.kind == "alert" and alert.event.severity == 73
    assert alert.destination.ip == "87.98.220.10" and "87.98.220.10" in alert.message
    assert alert.certwatch.certificate is not None
    assert alert.certwatch.certificate.x509 is not None
    not_after = alert.certwatch.certificate.x509.not_after
    assert not_after is not None and not_after < alert.timestamp  # capture time, not today
    assert "cert.expired 1" in result.stderr  # the summary counts alerts by rule
    assert "87.98.220.10:443" in result.stderr  # ... and by server


def test_rules_can_be_switched_off_and_thresholds_set(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  cert.expired: {enabled: false}\n"
                      "  tls.deprecated_version: {min_version: '1.0'}\n")
    result = certwatch("replay", DATA / "zeek" / "tls-expired-cert.pcap", "--policy", policy,
                       "--events", "/dev/null")
    assert result.returncode == 0, result.stderr
    names = {a.rule.name for a in alerts_of(result.stdout)}
    assert "cert.expired" not in names and "tls.deprecated_version" not in names
    assert "tls.weak_dh" in names


def test_a_profile_names_the_requirement_broken(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("profile: nist-800-52r2\n")
    result = certwatch("replay", DATA / "zeek" / "tls1_1.pcap", "--policy", policy,
                       "--events", "/dev/null")
    assert result.returncode == 0, result.stderr
    deprecated = [a for a in alerts_of(result.stdout) if a.rule.name == "tls.deprecated_version"]
    assert deprecated and deprecated[0].certwatch.alert.profile == "nist-800-52r2"
    assert deprecated[0].certwatch.alert.requirement


def test_a_bad_policy_is_refused_with_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("trust:\n  system: true\nrules:\n  cert.expiring_soon:\n    days: soon\n")
    result = certwatch("policy", "check", policy)
    assert result.returncode == 2
    assert "policy.yaml:5" in result.stderr and "days" in result.stderr
    replay = certwatch("replay", DATA / "zeek" / "tls1.2.pcap", "--policy", policy)
    assert replay.returncode == 2 and replay.stdout == ""


def test_a_good_policy_checks_out(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("profile: pci-dss-4\npins:\n  - host: login.example.com\n"
                      "    sha256: [" + "ab" * 32 + "]\nsuppress: {default: 30m}\n")
    result = certwatch("policy", "check", policy)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "1 pins" in result.stdout


def _csr(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
         names: list[str]) -> Path:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    ).add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    path = tmp_path / "request.csr"
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


def test_csr_check_passes_a_good_request_and_its_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(tmp_path, key, ["www.example.com", "example.com"])
    key_file = tmp_path / "request.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    result = certwatch("csr", "check", csr, "--key", key_file, "--host", "www.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("error")]


def test_csr_check_fails_a_weak_key_and_a_missing_host(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = _csr(tmp_path, key, ["www.example.com"])
    result = certwatch("csr", "check", csr, "--host", "api.example.com")
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error")]
    assert any("cert.weak_key" in line and "1024" in line for line in errors)
    assert any("cert.hostname_mismatch" in line and "api.example.com" in line
               for line in errors)


def test_csr_check_refuses_what_is_not_a_csr(tmp_path: Path) -> None:
    bogus = tmp_path / "cert.pem"
    bogus.write_text("hello\n")
    result = certwatch("csr", "check", bogus)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_the_alert_schema_is_exported(tmp_path: Path) -> None:
    result = certwatch("schema", "export", tmp_path)
    assert result.returncode == 0
    schema = json.loads((tmp_path / "certwatch.alerts.schema.json").read_text())
    assert {"rule", "message", "@timestamp"} <= set(schema["properties"])

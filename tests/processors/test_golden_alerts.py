"""Golden alerts: generated captures in, exactly the alerts their ground truth names out.

Every scenario of ``tools.tlsgen`` is written to a pcap with its trust roots and policy, and
replayed the way a user does it (``certwatch replay CAPTURE --policy P --alerts FILE``, the
CLI in-process, once as a subprocess). The expectation is the generator's: each
connection's ``rules`` (``maybe_rules`` may fire or not) and each rate rule's
:class:`~tools.tlsgen.scenarios.AggregateExpectation`, never our own output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from certwatch.cli import main
from processors.catalog import RULES
from schemas.alerts import SEVERITY_SCORES, AlertEvent
from tools.tlsgen.connection import ConnectionSpec
from tools.tlsgen.scenarios import NAMES, Options, Scenario, build

ROOT = Path(__file__).resolve().parents[2]
# Rate scenarios at sizes that keep the file fast but still reach the default policy's
# min_count (20 per window): a burst of 30 connections, a minute of >= 24 failures.
SIZES = {
    "steady-plus-burst": Options(connections=3),
    "handshake-failures": Options(connections=30),
    "benchmark": Options(connections=60, app_segments=3, concurrency=8),
}
CLEAN = ("clean-tls12", "clean-tls13", "benchmark")
# Alerts are matched to what the generator meant by (rule, client, server); the rate rules
# fire on whichever connection tips the window, so they are matched by (rule, server).
Key = tuple[str, tuple[str, int] | None, tuple[str, int]]


def scenario(name: str, options: Options | None = None) -> Scenario:
    return build(name, options or SIZES.get(name, Options()))


@dataclass(frozen=True)
class Run:
    scenario: Scenario
    alerts: list[AlertEvent]
    stderr: str


def replay(s: Scenario, folder: Path, *, times: int = 1, profile: str | None = None,
           capsys: pytest.CaptureFixture[str] | None = None) -> Run:
    """Write the capture, roots and policy into ``folder`` and run ``certwatch replay`` on
    the capture (``times`` times in one run) through the CLI's ``main``."""
    folder.mkdir(parents=True, exist_ok=True)
    capture, roots = folder / f"{s.name}.pcap", folder / "roots.pem"
    s.write(capture)
    roots.write_bytes(s.roots_pem)
    policy = s.policy(roots)
    if profile is not None:
        policy["profile"] = profile
    policy_file = folder / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    alerts_file = folder / "alerts.jsonl"
    code = main(["replay", *[str(capture)] * times, "--policy", str(policy_file),
                 "--alerts", str(alerts_file), "--events", os.devnull])
    stderr = capsys.readouterr().err if capsys is not None else ""
    assert code == 0, stderr
    lines = alerts_file.read_text().splitlines()
    return Run(s, [AlertEvent.model_validate_json(line) for line in lines], stderr)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every scenario replayed once, shared by the tests that only read the alerts."""
    folder = tmp_path_factory.mktemp("golden")
    return {name: replay(scenario(name), folder / name) for name in NAMES}


def endpoint(alert: AlertEvent, side: str) -> tuple[str, int]:
    ep = alert.source if side == "source" else alert.destination
    assert ep.ip is not None and ep.port is not None
    return str(ep.ip), ep.port


def key_of(alert: AlertEvent) -> Key:
    rule = alert.rule.name
    if RULES[rule].category == "traffic":
        return rule, None, endpoint(alert, "destination")
    return rule, endpoint(alert, "source"), endpoint(alert, "destination")


def expected(s: Scenario) -> tuple[Counter[Key], Counter[Key]]:
    """(alerts that must fire, alerts that may also fire), from the generator's truth."""
    must: Counter[Key] = Counter()
    may: Counter[Key] = Counter()
    for c in s.connections:
        must.update((rule, c.client, c.server) for rule in c.rules)
        may.update((rule, c.client, c.server) for rule in c.maybe_rules)
    must.update((a.rule, None, a.server) for a in s.aggregates)
    return must, may


def spec_of(s: Scenario, alert: AlertEvent) -> ConnectionSpec:
    client = endpoint(alert, "source")
    (spec,) = [c for c in s.connections if c.client == client]
    return spec


def server_key(spec: ConnectionSpec) -> str:
    return spec.sni or f"{spec.server[0]}:{spec.server[1]}"


@pytest.mark.parametrize("name", NAMES)
def test_each_scenario_raises_exactly_the_alerts_its_ground_truth_names(
    name: str, golden: dict[str, Run]
) -> None:
    run = golden[name]
    must, may = expected(run.scenario)
    got = Counter(key_of(a) for a in run.alerts)
    missing = must - got
    unexpected = got - must - may
    assert not missing and not unexpected, f"missing {dict(missing)}, unexpected {dict(unexpected)}"
    if name in CLEAN:
        assert run.alerts == []
    else:
        assert run.alerts


def test_a_rate_below_the_policy_minimum_raises_no_spike(tmp_path: Path) -> None:
    """Four connections a minute: the all-failures minute holds fewer than the default
    min_count, so the generator expects nothing and nothing fires."""
    s = scenario("handshake-failures", Options(connections=4))
    assert s.aggregates == () and sum(not c.established for c in s.connections) >= 4
    assert replay(s, tmp_path).alerts == []


@pytest.mark.parametrize("name", [n for n in NAMES if n not in CLEAN])
def test_every_alert_is_complete_and_names_its_server_and_certificate(
    name: str, golden: dict[str, Run]
) -> None:
    run = golden[name]
    for alert in run.alerts:
        # Round trip through the schema by alias, as a SIEM consumer would read it.
        again = AlertEvent.model_validate(json.loads(alert.model_dump_json(by_alias=True)))
        assert again == alert
        info = RULES[alert.rule.name]
        detail = alert.certwatch.alert
        assert alert.rule.id == info.id and alert.rule.id.startswith("CW-")
        assert alert.event.kind == "alert"
        assert isinstance(alert.event.severity, int)
        assert alert.event.severity == SEVERITY_SCORES[detail.severity]
        assert detail.identifier.startswith(alert.rule.name + "|")
        assert detail.server_key in alert.message
        if info.category == "traffic":
            (aggregate,) = [a for a in run.scenario.aggregates if a.rule == alert.rule.name]
            assert detail.server_key == aggregate.server_name
            start, end = aggregate.window
            assert start <= alert.timestamp.timestamp() < end
            continue
        spec = spec_of(run.scenario, alert)
        assert detail.server_key == server_key(spec)
        if info.category == "certificate":
            cert = alert.certwatch.certificate
            assert cert is not None and cert.position == 0, alert.message
            assert cert.hash.sha256 is not None
            assert cert.hash.sha256.lower() == hashlib.sha256(spec.chain[0]).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_replaying_again_gives_the_same_alert_ids(
    name: str, golden: dict[str, Run], tmp_path: Path
) -> None:
    again = replay(scenario(name), tmp_path)
    assert [a.event.id for a in again.alerts] == [a.event.id for a in golden[name].alerts]
    assert len({a.event.id for a in again.alerts}) == len(again.alerts)


@pytest.mark.parametrize("name", ["rc4", "tls10", "export", "weak-rsa-1024"])
def test_a_compliance_profile_quotes_its_requirement(
    name: str, golden: dict[str, Run], tmp_path: Path
) -> None:
    """PCI DSS 4.0 sets the same thresholds as the defaults: the same alerts, each now
    quoting the requirement it breaks."""
    run = replay(scenario(name), tmp_path, profile="pci-dss-4")
    assert Counter(map(key_of, run.alerts)) == Counter(map(key_of, golden[name].alerts))
    for alert in run.alerts:
        assert alert.certwatch.alert.profile == "pci-dss-4"
        requirement = alert.certwatch.alert.requirement
        assert requirement is not None and "PCI DSS" in requirement and "4.2.1" in requirement
    for alert in golden[name].alerts:
        assert alert.certwatch.alert.requirement is None


@pytest.mark.parametrize("name", ["export", "self-signed", "rogue-ca-for-pinned-host"])
def test_the_same_capture_twice_in_one_run_does_not_double_the_alerts(
    name: str, golden: dict[str, Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same findings at the same capture times fall in the same suppression windows: the
    second pass is held back and counted, the alert ids are those of a single pass."""
    once = golden[name].alerts
    twice = replay(scenario(name), tmp_path, times=2, capsys=capsys)
    assert [a.event.id for a in twice.alerts] == [a.event.id for a in once]
    # cert.changed judges history: in the second pass both of the rogue CA scenario's
    # certificates have been presented before, so it finds nothing to hold back. Every
    # other finding recurs and is counted as a suppressed repeat.
    repeats = sum(a.rule.name != "cert.changed" for a in once)
    assert f"suppressed repeats {repeats}" in twice.stderr


def test_a_user_running_the_command_gets_the_alerts_on_stdout(tmp_path: Path) -> None:
    """The installed entry point in a subprocess, alerts to stdout: the same alerts as the
    ground truth for the self-signed scenario."""
    s = scenario("self-signed")
    s.write(tmp_path / "capture.pcap")
    (tmp_path / "roots.pem").write_bytes(s.roots_pem)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(s.policy(tmp_path / "roots.pem")))
    result = subprocess.run(
        [sys.executable, "-m", "certwatch.cli", "replay", str(tmp_path / "capture.pcap"),
         "--policy", str(tmp_path / "policy.yaml"), "--alerts", "-", "--events", os.devnull],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    alerts = [AlertEvent.model_validate_json(line) for line in result.stdout.splitlines()]
    must, may = expected(s)
    assert Counter(map(key_of, alerts)) == must and not may
    assert "alerts         2" in result.stderr

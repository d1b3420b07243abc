"""Start-up of ``certwatch``: each command imports what it uses, and only that.

``certwatch replay --no-alerts`` is what the benchmark times from spawn to exit; the
processors, the policy YAML loader, the broker clients and the metrics library are no part
of it. Each case runs the real command line in a fresh interpreter and reads the modules it
loaded at exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import DATA

# Runs ``certwatch.cli.main`` on argv[2:], then writes the loaded module names to argv[1].
WRAPPER = """
import sys
out = sys.argv.pop(1)
from certwatch.cli import main
try:
    code = main(sys.argv[1:])
finally:
    with open(out, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
sys.exit(code)
"""

#: Packages a replay without detectors must not load (top-level names or module prefixes).
NOT_FOR_A_SENSOR_REPLAY = (
    "processors", "yaml", "aiokafka", "aiomqtt", "prometheus_client", "pydantic_settings",
    "certwatch.bus", "certwatch.services", "certwatch.codec", "certwatch.kafka_cli",
    "certwatch.settings", "multiprocessing", "asyncio", "certwatch.watch",
)


def run(tmp_path: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    modules = tmp_path / "modules.txt"
    result = subprocess.run([sys.executable, "-c", WRAPPER, str(modules), *map(str, args)],
                            capture_output=True, text=True, timeout=120)
    return result, set(modules.read_text().split())


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules
                  if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_replay_without_alerts_loads_no_detector_broker_or_yaml(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result, modules = run(tmp_path, "replay", "--no-alerts", "--events", events,
                          DATA / "zeek" / "tls1.2.pcap")
    assert result.returncode == 0, result.stderr
    assert loaded(modules, NOT_FOR_A_SENSOR_REPLAY) == []
    # ... and still did its job: the handshake and its three certificates.
    datasets = [json.loads(line)["event"]["dataset"] for line in events.read_text().splitlines()]
    assert datasets.count("certwatch.tls.handshake") == 1
    assert datasets.count("certwatch.tls.certificate") == 3
    assert "handshakes     1 (TLSv1.2 1)" in result.stderr


def test_replay_with_workers_and_no_alerts_loads_no_detector(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result, modules = run(tmp_path, "replay", "--no-alerts", "--workers", "2", "--events",
                          events, DATA / "zeek" / "tls1.2.pcap")
    assert result.returncode == 0, result.stderr
    assert loaded(modules, ("processors", "yaml", "aiokafka", "aiomqtt")) == []
    assert "handshakes     1 (TLSv1.2 1)" in result.stderr


def test_a_policy_given_with_no_alerts_is_still_checked(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("no_such_setting: 1\n")
    result, _ = run(tmp_path, "replay", "--no-alerts", "--policy", policy, "--events",
                    tmp_path / "events.jsonl", DATA / "zeek" / "tls1.2.pcap")
    assert result.returncode == 2
    assert "no_such_setting" in result.stderr


def test_replay_with_alerts_loads_the_detectors_and_raises_alerts(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    result, modules = run(tmp_path, "replay", "--events", tmp_path / "events.jsonl",
                          "--alerts", alerts, DATA / "zeek" / "tls1.2.pcap")
    assert result.returncode == 0, result.stderr
    assert "processors.engine" in modules
    rules = {json.loads(line)["rule"]["name"] for line in alerts.read_text().splitlines()}
    assert "tls.weak_cipher" in rules  # TLS_RSA_WITH_RC4_128_MD5


def test_help_lists_every_command_without_loading_them(tmp_path: Path) -> None:
    result, modules = run(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("replay", "policy", "csr", "sensor", "processor", "topics", "watch",
                    "schema"):
        assert command in result.stdout
    assert loaded(modules, (*NOT_FOR_A_SENSOR_REPLAY, "sensor.sensor")) == []


def test_watch_is_listed_and_parsed_as_its_module_defines_it() -> None:
    """``certwatch watch`` is registered without importing its module; once used, its parser
    is the one ``add_watch_command`` makes: same line in the command list, same help, same
    parse."""
    import argparse

    from certwatch.cli import build_parser
    from certwatch.watch import add_watch_command

    def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
        return next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))

    lazy = build_parser()
    eager = argparse.ArgumentParser(prog="certwatch")
    add_watch_command(eager.add_subparsers(dest="command"))
    listed = {a.dest: a.help for a in subparsers(lazy)._choices_actions}
    assert listed["watch"] == {a.dest: a.help for a in subparsers(eager)._choices_actions}["watch"]
    lazy_watch = subparsers(lazy).choices["watch"]
    eager_watch = subparsers(eager).choices["watch"]
    assert lazy_watch.format_help() == eager_watch.format_help()
    argv = ["-i", "eth1", "--duration", "5", "--no-alerts", "--bpf", "tcp port 443"]
    assert vars(lazy.parse_args(["watch", *argv])) == {
        "verbose": False, "log_format": "auto", **vars(eager.parse_args(["watch", *argv]))}

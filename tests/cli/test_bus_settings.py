"""``--bus`` is one flag among the others: optional when the environment or the settings file
names the brokers, refused with a clear message when nothing does, and it wins over both."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from certwatch.kafka_cli import add_kafka_flags, kafka_settings
from certwatch.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CERTWATCH_"):
            monkeypatch.delenv(name)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_kafka_flags(parser)
    return parser.parse_args(list(argv))


def test_brokers_from_the_environment_without_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTWATCH_KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("CERTWATCH_KAFKA_SECURITY_PROTOCOL", "SSL")
    settings = kafka_settings(parse())
    assert settings.bootstrap_servers == ["k1:9093", "k2:9093"]
    assert settings.security_protocol == "SSL"


def test_brokers_from_the_settings_file_without_bus(tmp_path: Path) -> None:
    file = tmp_path / "certwatch.toml"
    file.write_text('[kafka]\nbootstrap_servers = ["file-broker:9092"]\n')
    assert kafka_settings(parse("--settings", str(file))).bootstrap_servers == [
        "file-broker:9092"]


def test_bus_beats_environment_beats_file(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "certwatch.yaml"
    file.write_text("kafka:\n  bootstrap_servers: [file:9092]\n  client_id: from-file\n")
    monkeypatch.setenv("CERTWATCH_SETTINGS", str(file))
    assert kafka_settings(parse()).bootstrap_servers == ["file:9092"]
    monkeypatch.setenv("CERTWATCH_KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    assert kafka_settings(parse()).bootstrap_servers == ["env:9092"]
    settings = kafka_settings(parse("--bus", "kafka+ssl://flag:9093"))
    assert settings.bootstrap_servers == ["flag:9093"]
    assert settings.security_protocol == "SSL"
    assert settings.client_id == "from-file"  # the other sources still fill the rest


def test_no_broker_named_anywhere_is_refused_not_guessed() -> None:
    with pytest.raises(SettingsError, match=r"no Kafka broker named: give --bus .*"
                       r"CERTWATCH_KAFKA_BOOTSTRAP_SERVERS.*settings file"):
        kafka_settings(parse())


@pytest.mark.parametrize("command", [["processor"], ["topics", "create"],
                                     ["sensor", "--pcap", "x.pcap"]])
def test_the_commands_say_so_and_exit_2(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWATCH_")}
    done = subprocess.run([sys.executable, "-m", "certwatch.cli", *command], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, env=env, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("certwatch: no Kafka broker named"), done.stderr

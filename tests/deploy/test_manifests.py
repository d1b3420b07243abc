"""Everything under deploy/ refers to things that exist, and runs against the installed CLI.

No container engine or cluster runs here, so the files are checked by parsing them and by
running what they run: every ``certwatch`` command line (compose, Kubernetes, systemd, the
READMEs) goes through ``certwatch <subcommand> --help`` and the CLI's own argument parser,
every ``CERTWATCH_*`` variable must be a setting that exists and the set of them must
validate, every mounted file must be in the repository, the committed alert schema must be
what ``certwatch schema export`` writes today, and the sample capture is replayed with the
deployment's policy.
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from certwatch.bus.mqtt import parse_mqtt_url
from certwatch.cli import build_parser
from certwatch.kafka_cli import kafka_settings
from certwatch.settings import (
    ENV_PREFIX,
    SETTINGS_FILE_ENV,
    KafkaSettings,
    TopicNames,
    parse_bus_url,
)
from processors.registry import DETECTOR_RULES
from schemas.alerts import AlertEvent
from schemas.topics import ALERT_TOPIC

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
SIEM = DEPLOY / "siem"
SAMPLE = REPO / "tests" / "data" / "ja4" / "latest.pcapng"

_VENV_CLI = Path(sys.executable).with_name("certwatch")
CLI = [str(_VENV_CLI)] if _VENV_CLI.exists() else [sys.executable, "-m", "certwatch.cli"]

# Every variable the settings read: CERTWATCH_KAFKA_<FIELD>, the nested topic names, and the
# settings file. Nothing else named CERTWATCH_* is read by the CLI.
KNOWN_ENV = (
    {ENV_PREFIX + name.upper() for name in KafkaSettings.model_fields}
    | {f"{ENV_PREFIX}TOPICS__{role.upper()}" for role in TopicNames.model_fields}
    | {SETTINGS_FILE_ENV}
)

Env = dict[str, str]


# --- helpers -----------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def split_command(argv: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """(``("topics", "create")``, the rest) as the CLI's own parser nests its subcommands."""
    parser = build_parser()
    words: list[str] = []
    rest = list(argv)
    while rest and rest[0] in (choices := _subcommands(parser)):
        words.append(rest[0])
        parser = choices[rest.pop(0)]
    assert not _subcommands(parser), f"{list(argv)}: incomplete subcommand {words}"
    return tuple(words), rest


@functools.cache
def help_text(words: tuple[str, ...]) -> str:
    result = subprocess.run([*CLI, *words, "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"certwatch {' '.join(words)} --help: {result.stderr}"
    return result.stdout


def check_command(argv: Sequence[str], where: str) -> argparse.Namespace:
    """``argv`` (after ``certwatch``) is a real subcommand whose every flag its ``--help``
    shows, and the CLI's parser accepts the whole line (required options, choices, types)."""
    words, rest = split_command(argv)
    assert words, f"{where}: {list(argv)} does not start with a certwatch subcommand"
    text = help_text(words)
    for token in rest:
        if token.startswith("-") and token != "-":
            flag = token.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{where}: {flag} is not an option of `certwatch {' '.join(words)}`")
    try:
        return build_parser().parse_args(list(argv))
    except SystemExit:
        pytest.fail(f"{where}: certwatch rejects {shlex.join(argv)}")


def check_env_names(env: Mapping[str, str], where: str) -> None:
    unknown = sorted(name for name in env if name.startswith("CERTWATCH_")
                     and name not in KNOWN_ENV)
    assert not unknown, f"{where}: no setting reads {unknown}"


def effective_settings(args: argparse.Namespace, env: Mapping[str, str],
                       monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    """The Kafka settings the command would run with, given exactly ``env``."""
    for name in list(os.environ):
        if name.startswith("CERTWATCH_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("CERTWATCH_"):
            monkeypatch.setenv(name, value)
    return kafka_settings(args)


def compose_interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set (so the defaults), and ``$$``."""
    def replace(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"{text}: ${{{match.group(1)}}} has no default"
        return match.group(2)
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", replace, text).replace("$$", "$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- every file parses -------------------------------------------------------------------


def test_every_yaml_toml_and_json_file_under_deploy_parses() -> None:
    parsers: dict[str, Callable[[Path], object]] = {
        ".yaml": yaml_documents, ".yml": yaml_documents,
        ".toml": lambda p: tomllib.loads(p.read_text(encoding="utf-8")),
        ".json": lambda p: json.loads(p.read_text(encoding="utf-8")),
    }
    files = [p for p in DEPLOY.rglob("*") if p.suffix in parsers]
    assert {p.suffix for p in files} >= {".yaml", ".toml", ".json"}
    for path in files:
        assert parsers[path.suffix](path), f"{path} is empty"


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    return instructions


def test_dockerfile_is_multi_stage_slim_non_root_with_the_certwatch_entry_point() -> None:
    instructions = dockerfile()
    args = dict(rest.split("=", 1) for kw, rest in instructions if kw == "ARG" and "=" in rest)
    stages = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest).split()
              for kw, rest in instructions if kw == "FROM"]
    assert [s[0] for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    assert [s[-1] for s in stages] == ["builder", "runtime"]
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    builder, runtime = instructions[starts[0]:starts[1]], instructions[starts[1]:]
    assert any(kw == "RUN" and "pip wheel" in rest for kw, rest in builder)
    runs = " ".join(rest for kw, rest in runtime if kw == "RUN")
    assert "from=builder" in runs and "--no-index" in runs  # only the built wheels
    assert "libpcap0.8" in runs  # scapy's BPF compiler loads libpcap
    users = [rest for kw, rest in runtime if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entry = [rest for kw, rest in runtime if kw == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["certwatch"]
    # The user the live sensor drops to (--user certwatch) is created with that uid.
    assert re.search(rf"useradd .*--uid {users[-1].split(':')[0]} .*certwatch", runs)
    has_health_command = "health" in _subcommands(build_parser())
    assert any(kw == "HEALTHCHECK" for kw, _ in instructions) == has_health_command
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "CAP_NET_RAW" in text and "CAP_NET_ADMIN" in text


def test_the_builder_compiles_and_the_runtime_has_no_toolchain() -> None:
    instructions = dockerfile()
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    builder, runtime = instructions[starts[0]:starts[1]], instructions[starts[1]:]
    # The compiled build is asked for by default (setup.py reads CERTWATCH_COMPILE) ...
    args = dict(rest.split("=", 1) for kw, rest in builder if kw == "ARG" and "=" in rest)
    assert args.get("CERTWATCH_COMPILE") == "1"
    env = " ".join(rest for kw, rest in builder if kw == "ENV")
    assert "CERTWATCH_COMPILE=${CERTWATCH_COMPILE}" in env
    # ... from setup.py, which the builder gets, with a C compiler there and only there.
    sources = {source for kw, rest in builder if kw == "COPY" for source in rest.split()[:-1]}
    assert "setup.py" in sources
    builder_runs = " ".join(rest for kw, rest in builder if kw == "RUN")
    runtime_runs = " ".join(rest for kw, rest in runtime if kw == "RUN")
    assert re.search(r"apt-get install .*\bgcc\b", builder_runs)
    assert not re.search(r"\b(gcc|build-essential|libc6-dev|mypy)\b", runtime_runs)


def test_the_image_gets_every_package_the_wheel_is_built_from() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    sources = {source for kw, rest in dockerfile() if kw == "COPY" and "--from" not in rest
               for source in rest.split()[:-1]}
    assert packages <= sources, f"the builder does not COPY {packages - sources}"
    allowed = {line[1:] for line in
               (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
               if line.startswith("!")}
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert source in allowed, f"COPY {source}: left out by Dockerfile.dockerignore"


# --- compose -----------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    (document,) = yaml_documents(DEPLOY / "compose.yaml")
    assert isinstance(document, dict)
    return document


def compose_env(service: Mapping[str, Any]) -> Env:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): compose_interpolate(str(v)) for k, v in env.items()}


def certwatch_services() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose()["services"].items():
        if "build" in service or str(service.get("image", "")).startswith("certwatch"):
            yield name, service


def compose_command(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [compose_interpolate(arg) for arg in argv]


def bind_mounts(service: Mapping[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (relative to deploy/)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target, kind = volume.get("source", ""), volume["target"], volume["type"]
        else:
            source, target = volume.split(":")[:2]
            kind = "bind" if source.startswith((".", "/")) else "volume"
        if kind == "bind":
            mounts[target] = (DEPLOY / source).resolve()
        else:
            assert source in (compose().get("volumes") or {}), f"volume {source} undeclared"
    return mounts


def test_compose_images_are_pinned_and_builds_exist() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
            assert context == REPO
        else:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")


def test_compose_kafka_runs_in_kraft_mode_and_serves_the_addresses_certwatch_uses() -> None:
    env = compose_env(compose()["services"]["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == str(env["KAFKA_NODE_ID"])
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == ":" + voter.rpartition(":")[2]
    advertised = {item.split("://")[1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    # "[ip:]host_port:container_port": what the host network reaches is the host side.
    published = {port.split(":")[-2] for port in compose()["services"]["kafka"]["ports"]}
    for name, service in certwatch_services():
        args = check_command(compose_command(service), f"compose {name}")
        for server in parse_bus_url(args.bus)["bootstrap_servers"]:
            assert server in advertised, f"{name}: Kafka does not advertise {server}"
            host, _, port = server.rpartition(":")
            if service.get("network_mode") == "host":
                assert host == "127.0.0.1" and port in published, name
            else:
                assert host in compose()["services"], name


def test_compose_commands_env_and_mounts_are_real(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = set()
    for name, service in certwatch_services():
        argv = compose_command(service)
        args = check_command(argv, f"compose {name}")
        seen.add(argv[0])
        env = compose_env(service)
        check_env_names(env, f"compose {name}")
        settings = effective_settings(args, env, monkeypatch)
        # Real Kafka implements idempotent producers; only the Tansu test broker lacks them.
        assert settings.enable_idempotence and "--no-idempotence" not in argv, name
        mounts = bind_mounts(service)
        for host_path in mounts.values():
            assert host_path.exists() and REPO in host_path.parents, f"{name}: {host_path}"
        used = [*(getattr(args, "pcap", None) or []), getattr(args, "policy", None)]
        for path in filter(None, used):
            assert str(path) in mounts, f"{name}: {path} is not mounted"
    assert seen >= {"topics", "sensor", "processor"}


def test_compose_sensors_replay_the_sample_or_capture_with_the_right_privileges() -> None:
    services = dict(certwatch_services())
    replay = services["sensor"]
    assert bind_mounts(replay)[build_parser().parse_args(
        compose_command(replay)).pcap[0]] == SAMPLE
    live = services["sensor-live"]
    argv = live["command"]
    assert argv[argv.index("--interface") + 1].startswith("${CERTWATCH_INTERFACE")
    assert live["network_mode"] == "host"
    assert {"NET_RAW", "NET_ADMIN"} <= set(live["cap_add"]) and live["cap_drop"] == ["ALL"]
    if str(live.get("user", "")).split(":")[0] in ("0", "root"):
        assert "--user" in argv  # never parses packets as root


def test_compose_runs_two_processors_on_the_deploy_policy_publishing_to_mosquitto() -> None:
    services = compose()["services"]
    processors = [(name, s) for name, s in certwatch_services()
                  if compose_command(s)[0] == "processor"]
    assert sum((s.get("deploy") or {}).get("replicas", 1) for _, s in processors) >= 2
    conf_path = bind_mounts(services["mosquitto"])["/mosquitto/config/mosquitto.conf"]
    listeners = {line.split()[1] for line in conf_path.read_text().splitlines()
                 if line.startswith("listener ")}
    for name, service in processors:
        args = build_parser().parse_args(compose_command(service))
        assert bind_mounts(service)[str(args.policy)] == DEPLOY / "policy.yaml", name
        mqtt = parse_mqtt_url(args.mqtt)
        assert services[mqtt.host]["image"].startswith("eclipse-mosquitto:"), name
        assert str(mqtt.port) in listeners, name


def test_the_mosquitto_config_starts_a_broker(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.skip("mosquitto is not installed (make test installs it)")
    port = free_port()
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    text = re.sub(r"^listener \d+", f"listener {port} 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^persistence_location .*$", f"persistence_location {tmp_path}/", text,
                  flags=re.M)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text, encoding="utf-8")
    log = tmp_path / "mosquitto.log"
    with log.open("w") as output, subprocess.Popen([binary, "-c", str(conf)], stdout=output,
                                                   stderr=subprocess.STDOUT) as broker:
        try:
            deadline = time.monotonic() + 5
            while True:
                assert broker.poll() is None, f"mosquitto refused the config: {log.read_text()}"
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "mosquitto did not listen"
                    time.sleep(0.05)
        finally:
            broker.terminate()
            broker.wait(5)


# --- Kubernetes --------------------------------------------------------------------------


@functools.cache
def kustomization() -> dict[str, Any]:
    (document,) = yaml_documents(KUBE / "kustomization.yaml")
    assert isinstance(document, dict)
    return document


@functools.cache
def kube_objects() -> list[dict[str, Any]]:
    objects = []
    for resource in kustomization()["resources"]:
        objects.extend(yaml_documents(KUBE / resource))
    return objects


def kube_object(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in kube_objects() if o["kind"] == kind
                and (name is None or o["metadata"]["name"] == name)]
    return found


def example_secret() -> dict[str, Any]:
    (secret,) = yaml_documents(KUBE / "kafka-secret.example.yaml")
    assert isinstance(secret, dict)
    return secret


def workloads() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in kube_objects():
        if obj["kind"] in ("DaemonSet", "Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                yield obj, container


def container_env(container: Mapping[str, Any]) -> Env:
    """The container's environment as the kubelet builds it (field and secret references
    become placeholders; the referenced ConfigMaps and Secret keys must exist)."""
    env: Env = {}
    for source in container.get("envFrom", []):
        config_map = kube_object("ConfigMap", source["configMapRef"]["name"])
        env.update({k: str(v) for k, v in config_map["data"].items()})
    secret = example_secret()
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = kube_expand(str(item["value"]), env)
            continue
        reference = item["valueFrom"]
        if "secretKeyRef" in reference:
            ref = reference["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"], ref
            env[item["name"]] = "from-the-secret"
        else:
            env[item["name"]] = f"placeholder-{reference['fieldRef']['fieldPath'].split('.')[-1]}"
    return env


def kube_expand(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        # An undefined $(VAR) is passed on literally by the kubelet: always a mistake here.
        assert match.group(1) in env, f"$({match.group(1)}) is not defined"
        return env[match.group(1)]
    return re.sub(r"\$\((\w+)\)", replace, text)


def test_every_kubernetes_object_is_complete_and_in_the_namespace() -> None:
    for resource in kustomization()["resources"]:
        assert (KUBE / resource).is_file(), resource
    for obj in [*kube_objects(), example_secret()]:
        assert {"apiVersion", "kind", "metadata"} <= obj.keys(), obj
        assert obj["metadata"]["name"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == kustomization()["namespace"]
    assert kube_object("Namespace")["metadata"]["name"] == kustomization()["namespace"]
    for obj in kube_objects():
        if "selector" in obj.get("spec", {}) and "template" in obj["spec"]:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kubernetes_containers_run_real_commands_with_valid_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text("placeholder\n", encoding="utf-8")
    image_names = {image["name"] for image in kustomization().get("images", [])}
    commands = set()
    for obj, container in workloads():
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert "command" not in container, f"{where}: keep the image's certwatch entry point"
        assert container["image"].split(":")[0] in image_names
        env = container_env(container)
        check_env_names(env, where)
        argv = [kube_expand(str(arg), env) for arg in container["args"]]
        args = check_command(argv, where)
        commands.add(argv[0])
        # The Kafka CA named in the settings is where the pod mounts the Secret's key.
        cafile = Path(env["CERTWATCH_KAFKA_SSL_CAFILE"])
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
        secret_volume = volumes[mounts[str(cafile.parent)]]["secret"]
        assert cafile.name in [item["path"] for item in secret_volume["items"]]
        assert secret_volume["secretName"] == example_secret()["metadata"]["name"]
        settings = effective_settings(args, {**env, "CERTWATCH_KAFKA_SSL_CAFILE": str(ca_file)},
                                      monkeypatch)
        assert settings.enable_idempotence, where
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if "httpGet" in container.get(probe, {}):
                # Only a process started with --metrics-port serves the probe paths.
                assert getattr(args, "metrics_port", None), f"{where}: {probe} without port"
    assert commands == {"sensor", "processor", "topics"}


def test_the_sensor_daemonset_captures_on_tap_nodes_with_only_the_capabilities_it_needs() -> None:
    daemonset = kube_object("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["nodeSelector"] == {"certwatch.io/tap": "true"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    added = set(security["capabilities"]["add"])
    assert {"NET_RAW", "NET_ADMIN"} <= added <= {"NET_RAW", "NET_ADMIN", "SETUID", "SETGID"}
    assert not security.get("privileged", False)
    assert security["allowPrivilegeEscalation"] is False
    if security.get("runAsUser") == 0:
        # Started as root only to open the socket: it must drop to the image's user.
        assert security["runAsNonRoot"] is False and {"SETUID", "SETGID"} <= added
        args = container["args"]
        assert args[args.index("--user") + 1] == "certwatch"
    else:
        assert security.get("runAsNonRoot", True)
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() <= resources["limits"].keys()
    assert container["envFrom"] and any("secretKeyRef" in item.get("valueFrom", {})
                                        for item in container["env"])


def test_the_processors_are_two_non_root_replicas_with_the_policy_and_a_budget() -> None:
    deployment = kube_object("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    env = container_env(container)
    args = build_parser().parse_args([kube_expand(str(a), env) for a in container["args"]])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[str(args.policy.parent)]]
    generated = {g["name"]: g["files"] for g in kustomization()["configMapGenerator"]}
    assert args.policy.name in generated[volume["configMap"]["name"]]
    budget = kube_object("PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert (budget["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items())


def test_the_policy_configmap_is_the_deploy_policy() -> None:
    (files,) = [g["files"] for g in kustomization()["configMapGenerator"]
                if g["name"] == "certwatch-policy"]
    (name,) = files
    assert (KUBE / name).read_bytes() == (DEPLOY / "policy.yaml").read_bytes(), (
        "deploy/kubernetes/policy.yaml must be a copy of deploy/policy.yaml")


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_probes_ask_the_metrics_port_the_container_serves(kind: str) -> None:
    (container,) = kube_object(kind)["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    port = int(args[args.index("--metrics-port") + 1])
    (declared,) = container["ports"]
    assert declared["containerPort"] == port and declared["name"] == "metrics"
    annotations = kube_object(kind)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    host = args[args.index("--metrics-host") + 1]
    assert host in ("0.0.0.0", "$(HOST_IP)")
    if host == "$(HOST_IP)":
        assert container_env(container)["HOST_IP"]


def test_the_served_paths_are_the_ones_the_probes_ask_for(tmp_path: Path) -> None:
    """The probes' paths against a real replay serving them."""
    port = free_port()
    replay = subprocess.Popen(
        [*CLI, "replay", "--no-alerts", "--events", str(tmp_path / "events.jsonl"),
         "--speed", "0.05", "--metrics-port", str(port), str(SAMPLE)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        answers: dict[str, int] = {}
        while time.monotonic() < deadline and len(answers) < 2:
            for path in ("/healthz", "/readyz"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                                timeout=2) as reply:
                        answers[path] = reply.status
                except OSError:
                    time.sleep(0.2)
        assert answers == {"/healthz": 200, "/readyz": 200}
    finally:
        replay.terminate()
        replay.wait(10)


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted(["Namespace", "ConfigMap", "ConfigMap", "Job", "DaemonSet",
                            "Deployment", "PodDisruptionBudget"])
    (policy,) = [d for d in rendered if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"].startswith("certwatch-policy")]
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    names = [v["configMap"]["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]
             if "configMap" in v]
    assert names == [policy["metadata"]["name"]]  # the generated (hashed) name was wired in
    assert policy["data"]["policy.yaml"] == (DEPLOY / "policy.yaml").read_text()


# --- systemd -----------------------------------------------------------------------------

UNITS = sorted(SYSTEMD.glob("*.service"))
SPECIFIERS = {"%I": "eth1", "%i": "eth1", "%H": "tap-01", "%%": "%"}


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def env_file(path: Path) -> Env:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
    return env


def exec_lines(path: Path) -> list[list[str]]:
    """Every Exec*= command of the unit, variables and specifiers expanded."""
    env = env_file(SYSTEMD / "certwatch.env.example")
    service = unit(path)["Service"]
    commands = []
    for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop"):
        if key not in service:
            continue
        line = service[key].lstrip("-@:+!")
        for specifier, value in SPECIFIERS.items():
            line = line.replace(specifier, value)
        line = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env[m.group(1) or m.group(2)], line)
        commands.append(shlex.split(line))
    return commands


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_systemd_units_run_the_installed_cli(path: Path, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    commands = exec_lines(path)
    assert commands
    env = env_file(SYSTEMD / "certwatch.env.example")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("placeholder\n", encoding="utf-8")
    for argv in commands:
        assert Path(argv[0]).name == "certwatch", argv
        args = check_command(argv[1:], path.name)
        if getattr(args, "bus", None):
            settings = effective_settings(
                args, {**env, "CERTWATCH_KAFKA_SSL_CAFILE": str(ca_file)}, monkeypatch)
            assert settings.enable_idempotence
        if argv[1:3] == ["policy", "check"]:  # run it, on the policy the examples install
            result = subprocess.run([*CLI, "policy", "check", str(DEPLOY / "policy.yaml")],
                                    capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode == 0, result.stderr


def test_systemd_environment_file_holds_only_known_settings() -> None:
    env = env_file(SYSTEMD / "certwatch.env.example")
    check_env_names(env, "certwatch.env.example")
    for path in UNITS:
        service = unit(path)["Service"]
        assert service["EnvironmentFile"] == "/etc/certwatch/certwatch.env"
        assert service["Restart"] == "on-failure"


def hardening(path: Path) -> dict[str, str]:
    return dict(unit(path)["Service"])


def test_the_sensor_unit_is_hardened_to_the_two_capture_capabilities() -> None:
    service = hardening(SYSTEMD / "certwatch-sensor@.service")
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    capture = {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(service["CapabilityBoundingSet"].split()) == capture
    assert set(service["AmbientCapabilities"].split()) == capture
    assert set(service["RestrictAddressFamilies"].split()) == {
        "AF_PACKET", "AF_INET", "AF_INET6", "AF_UNIX"}
    assert {service[k] for k in ("NoNewPrivileges", "ProtectHome", "PrivateTmp")} == {"yes"}
    assert service["ProtectSystem"] == "strict"
    assert service["SystemCallFilter"] == "@system-service"
    (argv,) = [line.split() for key, line in service.items() if key == "ExecStart"]
    assert argv[argv.index("--interface") + 1] in ("%I", "%i")  # the instance is the interface
    assert "--allow-root" not in argv


def test_the_processor_unit_has_no_capability_and_no_packet_socket() -> None:
    service = hardening(SYSTEMD / "certwatch-processor.service")
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    assert service["CapabilityBoundingSet"] == "" and service.get("AmbientCapabilities", "") == ""
    assert "AF_PACKET" not in service["RestrictAddressFamilies"]
    assert {service[k] for k in ("NoNewPrivileges", "ProtectHome", "PrivateTmp")} == {"yes"}
    assert service["ProtectSystem"] == "strict"
    assert service["SystemCallFilter"] == "@system-service"


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    installed = str(Path(CLI[0]).resolve()) if len(CLI) == 1 else None
    if installed is None:
        pytest.skip("no certwatch script next to the interpreter")
    paths = []
    for path in UNITS:
        text = path.read_text(encoding="utf-8").replace("/opt/certwatch/bin/certwatch",
                                                         installed)
        # verify would otherwise insist on the real /etc/certwatch/certwatch.env
        text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")
        name = path.name.replace("@.service", "@lo.service")  # a template needs an instance
        (tmp_path / name).write_text(text, encoding="utf-8")
        paths.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True,
                            timeout=60, check=False)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if str(tmp_path) in line]
    assert result.returncode == 0 and not complaints, result.stderr


# --- SIEM --------------------------------------------------------------------------------


def test_the_committed_alert_schema_is_what_the_cli_exports(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "schema", "export", str(tmp_path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    exported = json.loads((tmp_path / f"{ALERT_TOPIC}.schema.json").read_text())
    committed = json.loads((SIEM / f"{ALERT_TOPIC}.schema.json").read_text())
    assert committed == exported, (
        "the alert schema changed: `certwatch schema export DIR` and copy "
        f"{ALERT_TOPIC}.schema.json to deploy/siem/, then update the index template")


def schema_leaves(schema: Mapping[str, Any]) -> dict[str, str]:
    """Dotted path -> JSON type (``date-time`` for timestamps) of every alert field."""
    defs = schema["$defs"]
    leaves: dict[str, str] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) == 1:
                walk(options[0], path)
            else:  # a free-form value (alert details): any scalar
                leaves[path] = "any"
            return
        kind = node.get("type")
        if kind == "object" and "properties" in node:
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}" if path else key)
        elif kind == "object":
            leaves[path] = "object"
        elif kind == "array":
            walk(node["items"], path)
        else:
            leaves[path] = "date-time" if node.get("format") == "date-time" else str(kind)

    walk(schema, "")
    return leaves


@functools.cache
def template() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (SIEM / "elasticsearch" / "index-template.json").read_text())
    return document


def mapping_of(path: str) -> dict[str, Any] | None:
    """The template's mapping for a dotted path (a ``flattened`` parent covers its subtree)."""
    node: dict[str, Any] = {"properties": template()["template"]["mappings"]["properties"]}
    for part in path.split("."):
        if node.get("type") == "flattened":
            return node
        child = node.get("properties", {}).get(part)
        if child is None:
            return None
        node = child
    return node


COMPATIBLE = {
    "string": {"keyword", "constant_keyword", "wildcard", "text", "match_only_text", "ip"},
    "date-time": {"date", "date_nanos"},
    "integer": {"long", "integer", "short", "byte", "unsigned_long"},
    "number": {"double", "float", "scaled_float", "half_float"},
    "boolean": {"boolean"},
}


def check_mapped(path: str, json_type: str) -> None:
    mapping = mapping_of(path)
    assert mapping is not None, f"index template: no mapping for {path}"
    if mapping.get("type") == "flattened":
        return
    assert mapping.get("type") in COMPATIBLE[json_type], f"{path}: {json_type} -> {mapping}"
    if path.endswith(".ip"):
        assert mapping["type"] == "ip", path


def test_the_index_template_maps_every_alert_field_with_a_compatible_type() -> None:
    leaves = schema_leaves(json.loads((SIEM / f"{ALERT_TOPIC}.schema.json").read_text()))
    assert "rule.name" in leaves and "tls.server.x509.not_after" in leaves
    for path, json_type in leaves.items():
        if json_type in ("any", "object"):
            assert (mapping_of(path) or {}).get("type") == "flattened", path
        else:
            check_mapped(path, json_type)
    check_mapped("event.ingested", "date-time")  # set by the ingest pipeline


def test_the_ingest_pipeline_keeps_ecs_fields_and_only_adds_event_ingested() -> None:
    pipeline = json.loads((SIEM / "elasticsearch" / "ingest-pipeline.json").read_text())
    processors = [(kind, body) for p in pipeline["processors"] for kind, body in p.items()]
    assert [(kind, body["field"]) for kind, body in processors] == [("set", "event.ingested")]
    assert "_ingest.timestamp" in processors[0][1]["value"]
    for handler in pipeline.get("on_failure", []):
        assert [body["field"] for body in handler.values()] == ["error.message"]
    settings = template()["template"]["settings"]
    assert settings["index.default_pipeline"] == "certwatch-alerts"
    readme = (SIEM / "README.md").read_text()
    assert "_ingest/pipeline/certwatch-alerts" in readme
    assert "_index_template/certwatch-alerts" in readme


def test_vector_reads_the_alert_topic_into_the_templated_data_stream() -> None:
    config = tomllib.loads((SIEM / "vector.toml").read_text())
    components = {*config["sources"], *config.get("transforms", {})}
    (source,) = config["sources"].values()
    assert source["type"] == "kafka" and source["topics"] == [ALERT_TOPIC]
    assert source["decoding"]["codec"] == "json"
    for section in ("transforms", "sinks"):
        for name, component in config.get(section, {}).items():
            assert set(component["inputs"]) <= components, f"{name}: unknown input"
    (sink,) = [s for s in config["sinks"].values() if s["type"] == "elasticsearch"]
    index = sink["bulk"]["index"]
    assert any(fnmatch.fnmatchcase(index, p) for p in template()["index_patterns"])
    if "data_stream" in template():
        assert sink["bulk"]["action"] == "create"  # the only action a data stream takes
    assert sink["pipeline"] == template()["template"]["settings"]["index.default_pipeline"]
    leaves = schema_leaves(json.loads((SIEM / f"{ALERT_TOPIC}.schema.json").read_text()))
    assert sink["id_key"] in leaves


# --- the sample, through the deployment's policy -----------------------------------------


def replay_alerts(policy: Path, tmp_path: Path) -> list[dict[str, Any]]:
    events, alerts = tmp_path / "events.jsonl", tmp_path / "alerts.jsonl"
    result = subprocess.run(
        [*CLI, "replay", str(SAMPLE), "--policy", str(policy),
         "--events", str(events), "--alerts", str(alerts)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert events.read_text().count("\n") > 0
    return [json.loads(line) for line in alerts.read_text().splitlines()]


def test_replaying_the_sample_with_the_deploy_policy_gives_alerts_the_siem_maps(
        tmp_path: Path) -> None:
    documents = replay_alerts(DEPLOY / "policy.yaml", tmp_path)
    # How many alerts the sample gives with that policy is the detectors' business; so that
    # there surely are some to check, the same policy in strict inventory mode (no leaf is
    # authorised) makes every certificate an alert.
    strict = yaml.safe_load((DEPLOY / "policy.yaml").read_text(encoding="utf-8"))
    strict["allowlist"] = {"sha256": ["00" * 32]}
    (tmp_path / "strict").mkdir()
    strict_policy = tmp_path / "strict" / "policy.yaml"
    strict_policy.write_text(yaml.safe_dump(strict), encoding="utf-8")
    inventory = replay_alerts(strict_policy, tmp_path / "strict")
    assert "cert.not_allowlisted" in {d["rule"]["name"] for d in inventory}
    for document in [*documents, *inventory]:
        alert = AlertEvent.model_validate(document)
        assert alert.rule.name in DETECTOR_RULES
        for path in document_paths(document):
            assert mapping_of(path) is not None, (
                f"an alert has {path}, the index template does not map it")


def document_paths(value: object, path: str = "") -> Iterator[str]:
    """Dotted paths of a JSON document's values (list items share their list's path)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from document_paths(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for child in value:
            yield from document_paths(child, path)
    else:
        yield path


# --- the READMEs -------------------------------------------------------------------------


def readme_commands(path: Path) -> Iterator[list[str]]:
    """``certwatch ...`` lines of the README's code blocks, continuations joined."""
    text = path.read_text(encoding="utf-8")
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("certwatch "):
                yield shlex.split(line)[1:]


def test_readme_commands_and_paths_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    readmes = [DEPLOY / "README.md", SIEM / "README.md"]
    commands = [argv for path in readmes for argv in readme_commands(path)]
    assert {argv[0] for argv in commands} >= {"topics", "replay", "schema"}
    for argv in commands:
        check_command(argv, "deploy/README.md")
    for path in readmes:
        for mention in re.findall(r"(?<![\w/])deploy/[\w./@-]*[\w/]", path.read_text()):
            assert (REPO / mention).exists(), f"{path.name} mentions {mention}"

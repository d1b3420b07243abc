"""The distributed system end to end, through the CLI, with real brokers on loopback.

``certwatch topics create``, ``certwatch sensor`` and ``certwatch processor`` run as child
processes against a Tansu (Kafka protocol) broker of each test's own and the session's
mosquitto; what they produce is read back with :class:`~certwatch.bus.kafka.KafkaBus` and an
aiomqtt subscriber and compared with ``certwatch replay``, the same pipeline in one process.
Alert ids are a pure function of the finding and its time window (processors.suppression),
so "the same alerts" is "the same set of ``event.id``"; duplicates are allowed
(at-least-once), different ids are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiomqtt
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from certwatch.bus import DEAD_LETTER_TOPIC, Message
from certwatch.bus.kafka import KafkaBus, client_kwargs
from certwatch.codec import encode
from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.alerts import AlertEvent
from schemas.base import SCHEMA_VERSION
from schemas.events import AnomalyEvent, HandshakeEvent
from schemas.topics import ALERT_TOPIC, ANOMALY_TOPIC, HANDSHAKE_TOPIC, key_of
from tests.integration.brokers import MosquittoBroker, TansuBroker, free_port, make_tls_files
from tests.integration.conftest import settings_for
from tests.support import DATA, handshakes, read_frames, run_sensor
from tools.tlsgen.connection import conversation
from tools.tlsgen.pcap import Timing, write_capture
from tools.tlsgen.scenarios import Options, build

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ETH_P_ALL = 0x0003  # <linux/if_ether.h>: every protocol, what a capture socket binds to
ALERTING_CAPTURES = [DATA / "zeek" / name for name in (
    "tls-expired-cert.pcap", "tls1.2.pcap", "tls1_1.pcap", "ecdhe.pcap", "cert-no-cn.pcap",
    "ssl-v2.pcap", "smtp-starttls.pcap")]


# -- child processes --------------------------------------------------------------------------

@dataclass
class Child:
    """One ``certwatch`` child process; its stdout and stderr go to files (never a pipe that
    could fill up and stall it)."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    async def wait(self, timeout: float) -> int:
        """The exit status, waiting without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            assert time.monotonic() < deadline, (
                f"{self.name} still running after {timeout} s; stderr:\n{self.err()[-3000:]}")
            await asyncio.sleep(0.05)
        return code

    async def terminate(self, timeout: float = 15.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.wait(timeout)


@dataclass
class Children:
    """Starts ``certwatch`` commands; :meth:`kill_all` (in a finally) leaves none behind."""

    directory: Path
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        stdout, stderr = self.directory / f"{name}.out", self.directory / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "certwatch.cli", *args], cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=os.environ | (env or {}))
        child = Child(name, process, stdout, stderr)
        self.started.append(child)
        return child

    async def run(self, name: str, *args: str, timeout: float = 60.0,
                  env: dict[str, str] | None = None) -> Child:
        """Run to completion; fails unless the exit status is 0."""
        child = self.start(name, *args, env=env)
        code = await child.wait(timeout)
        assert code == 0, f"{name} exited {code}; stderr:\n{child.err()[-3000:]}"
        return child

    def kill_all(self) -> None:
        for child in self.started:
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    spawned = Children(tmp_path)
    try:
        yield spawned
    finally:
        spawned.kill_all()


@pytest.fixture
def tansu(tansu_path: str, tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker of the test's own: these tests use the real topic names (the CLI's), and
    some stop and restart it."""
    broker = TansuBroker(tmp_path, tansu_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def kafka_flags(broker: TansuBroker) -> tuple[str, ...]:
    return ("--bus", f"kafka://{broker.bootstrap}", "--no-idempotence")


async def create_topics(children: Children, broker: TansuBroker, name: str = "topics"
                        ) -> Child:
    return await children.run(name, "topics", "create", *kafka_flags(broker),
                              "--partitions", "4", "--replication-factor", "1", timeout=30)


# -- what the system should produce -----------------------------------------------------------

def replay_alert_ids(children: Children, captures: Sequence[Path], name: str = "replay"
                     ) -> set[str]:
    """``certwatch replay`` of ``captures`` in this order: the in-process pipeline's alerts."""
    alerts = children.directory / f"{name}.alerts.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "certwatch.cli", "replay", *map(str, captures),
         "--alerts", str(alerts), "--events", "/dev/null"],
        cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    ids = {json.loads(line)["event"]["id"] for line in alerts.read_text().splitlines()}
    assert ids, "the captures raise no alert: the test would prove nothing"
    return ids


def scenario_capture(path: Path, scenario: str, *, connections: int | None = None,
                     app_segments: int | None = None) -> Path:
    """A ``tools.tlsgen`` scenario's capture (what ``python -m tools.tlsgen`` writes)."""
    build(scenario, Options(connections=connections, app_segments=app_segments)).write(path)
    return path


def many_servers_capture(path: Path, servers: int, *, spacing: float = 0.01,
                         scenario: str = "expired") -> Path:
    """The single connection of a ``tools.tlsgen`` certificate scenario, repeated to
    ``servers`` distinct servers (own address, own SNI, one /24 of clients each),
    ``spacing`` seconds apart. The certificate names none of the SNIs, so every connection
    raises its own alerts (hostname mismatch plus the scenario's), and the keys spread
    over every partition."""
    (template,) = build(scenario).connections
    specs = []
    for n in range(servers):
        specs.append(replace(
            template, client=(f"10.2.{n // 250}.{1 + n % 250}", 50000 + n % 10000),
            server=(f"198.18.{n // 250}.{1 + n % 250}", 443), sni=f"host{n}.example.org",
            start=template.start + n * spacing))
    write_capture(path, (conversation(spec, 1, Timing().mss) for spec in specs), Timing())
    return path


# -- reading the topics back ------------------------------------------------------------------

class TopicReader:
    """Everything on ``topics`` (from the start), read in the background by a fresh group."""

    def __init__(self, broker: TansuBroker, topics: Sequence[str]) -> None:
        self.bus = KafkaBus(settings_for(broker.bootstrap))
        self.topics = tuple(topics)
        self.messages: list[Message] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicReader:
        async def read() -> None:
            async for message in self.bus.subscribe(self.topics, f"reader-{uuid.uuid4().hex}"):
                self.messages.append(message)

        self._task = asyncio.create_task(read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.bus.close()
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]

    def alert_ids(self) -> list[str]:
        return [AlertEvent.model_validate_json(m.value).event.id for m in self.on(ALERT_TOPIC)]

    async def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        await wait_until(what, check, timeout, lambda: f"{len(self.messages)} messages read")


async def wait_until(what: str, check: Callable[[], bool], timeout: float,
                     detail: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what} {detail()}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def mqtt_alert_ids(broker: MosquittoBroker, prefix: str) -> AsyncIterator[list[str]]:
    """The ``event.id`` of every alert published under ``prefix``, as they arrive."""
    ids: list[str] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"{prefix}/#", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                ids.append(AlertEvent.model_validate_json(message.payload).event.id)

        task = asyncio.create_task(collect())
        try:
            yield ids
        finally:
            task.cancel()
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise outcome


# -- consumer group state, as the broker describes it --------------------------------------

_PROCESSOR_SUMMARY = re.compile(
    r"certwatch processor: ([\d,]+) events, ([\d,]+) alerts, ([\d,]+) dead letters")
_SENSOR_SUMMARY = re.compile(r"certwatch sensor: ([\d,]+) events published, ([\d,]+) dropped")


def counts(pattern: re.Pattern[str], child: Child) -> tuple[int, ...]:
    found = pattern.search(child.err())
    assert found, f"no summary from {child.name}; stderr:\n{child.err()[-3000:]}"
    return tuple(int(group.replace(",", "")) for group in found.groups())


async def wait_for_group(broker: TansuBroker, group: str, members: int, timeout: float
                         ) -> None:
    """Until ``group`` is Stable with ``members`` members: every member was assigned its
    partitions, so no rebalance is pending when the stream starts. (Tansu 0.6 answers
    DescribeGroups with empty member assignments, so who owns what is not checked here; the
    processors' own counts show it.)"""
    admin = AIOKafkaAdminClient(**client_kwargs(settings_for(broker.bootstrap)))
    await admin.start()
    state: tuple[str, int] = ("", 0)
    try:
        deadline = time.monotonic() + timeout
        while state != ("Stable", members):
            assert time.monotonic() < deadline, f"group {group} never settled: {state}"
            await asyncio.sleep(0.2)
            (response,) = await admin.describe_consumer_groups([group])
            # DescribeGroups: (error_code, group_id, group_state, protocol_type, protocol,
            # members, ...)
            described = response.groups[0]
            state = (described[2], len(described[5]))
    finally:
        await admin.close()


# -- 1. end to end ----------------------------------------------------------------------------

@pytest.mark.timeout(90)
async def test_two_processors_publish_the_alerts_of_an_in_process_replay(
        tansu: TansuBroker, mqtt_broker: MosquittoBroker, children: Children, tmp_path: Path,
        unique: str) -> None:
    captures = [*ALERTING_CAPTURES,
                scenario_capture(tmp_path / "benchmark.pcap", "benchmark", connections=200,
                                 app_segments=1),
                scenario_capture(tmp_path / "export.pcap", "export")]
    expected = replay_alert_ids(children, captures)
    await create_topics(children, tansu)
    prefix = f"e2e-{unique}/certwatch/alerts"
    group = f"processors-{unique}"
    async with mqtt_alert_ids(mqtt_broker, prefix) as from_mqtt:
        processors = [children.start(
            f"processor{n}", "processor", *kafka_flags(tansu), "--group", group,
            "--mqtt", f"mqtt://127.0.0.1:{mqtt_broker.port}/{prefix}") for n in (1, 2)]
        await wait_for_group(tansu, group, 2, timeout=30)
        sensor = await children.run("sensor", "sensor", "--pcap", *map(str, captures),
                                    *kafka_flags(tansu), timeout=60)
        published, dropped = counts(_SENSOR_SUMMARY, sensor)
        assert published > 0 and dropped == 0
        async with TopicReader(tansu, [ALERT_TOPIC, HANDSHAKE_TOPIC]) as kafka:
            await kafka.wait_for("every expected alert on Kafka and MQTT",
                                 lambda: set(kafka.alert_ids()) >= expected
                                 and set(from_mqtt) >= expected, timeout=30)
            await asyncio.sleep(1.0)  # time for an alert that should not be there to arrive
            published_handshakes = len(kafka.on(HANDSHAKE_TOPIC))
            from_kafka = set(kafka.alert_ids())
        for processor in processors:
            assert await processor.terminate() == 0, processor.err()[-3000:]
    assert from_kafka == set(from_mqtt) == expected
    done = [counts(_PROCESSOR_SUMMARY, processor) for processor in processors]
    assert all(events > 0 for events, _, _ in done), done  # the group split the work
    assert sum(events for events, _, _ in done) == published_handshakes
    assert sum(alerts for _, alerts, _ in done) == len(expected)


# -- 2. faults --------------------------------------------------------------------------------

@pytest.mark.timeout(90)
async def test_sensor_rides_out_a_broker_restart(
        tansu: TansuBroker, children: Children, tmp_path: Path) -> None:
    # ~10 connections a minute for an hour (then a burst), replayed 450x: ~8 s of publishing.
    capture = scenario_capture(tmp_path / "steady.pcap", "steady-plus-burst", connections=10)
    await create_topics(children, tansu)
    sensor = children.start("sensor", "sensor", "--pcap", str(capture), "--speed", "450",
                            "--max-queued", "20", *kafka_flags(tansu))
    await asyncio.sleep(2.5)
    await asyncio.to_thread(tansu.stop)
    await asyncio.sleep(1.5)  # the sensor goes on: its queue fills, the oldest are dropped
    # Tansu (memory storage) comes back without topics and acknowledges, then loses, what
    # is published to them before they are created again; a real cluster keeps its topics.
    # The sensor is paused meanwhile, so what it publishes after the restart is kept.
    sensor.process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.to_thread(tansu.start)
        await create_topics(children, tansu, "topics-again")
    finally:
        sensor.process.send_signal(signal.SIGCONT)
    assert await sensor.wait(60) == 0, sensor.err()[-3000:]
    published, dropped = counts(_SENSOR_SUMMARY, sensor)
    assert published > 0 and dropped > 0
    assert "dropping the oldest" in sensor.err()  # said when the loss began, not only after
    last = max(e.timestamp for e in handshakes(run_sensor(read_frames(capture))))
    async with TopicReader(tansu, [HANDSHAKE_TOPIC, ANOMALY_TOPIC]) as kafka:
        # The restarted broker started empty: whatever is on it was published after the
        # restart, up to the capture's last handshake.
        def received() -> list[HandshakeEvent]:
            return [HandshakeEvent.model_validate_json(m.value)
                    for m in kafka.on(HANDSHAKE_TOPIC)]

        def reported() -> int:
            return sum(a.certwatch.anomaly.count for a in (
                AnomalyEvent.model_validate_json(m.value) for m in kafka.on(ANOMALY_TOPIC))
                if a.certwatch.anomaly.kind == "publish_dropped")

        await kafka.wait_for("the last handshake and the loss reports",
                             lambda: reported() == dropped
                             and any(e.timestamp == last for e in received()), timeout=20)


@pytest.mark.timeout(90)
async def test_a_processor_killed_mid_stream_loses_no_alert(
        tansu: TansuBroker, children: Children, tmp_path: Path, unique: str) -> None:
    # 600 servers, one alerting connection every 10 ms: paced as captured, the sensor
    # publishes for ~6 s, so the kill lands mid-stream however fast the processor is.
    capture = many_servers_capture(tmp_path / "many.pcap", 600, spacing=0.01)
    expected = replay_alert_ids(children, [capture])
    await create_topics(children, tansu)
    group = f"processors-{unique}"
    # A member that died is noticed after session_timeout_ms: short, so the test is too.
    quick = {"CERTWATCH_KAFKA_SESSION_TIMEOUT_MS": "3000",
             "CERTWATCH_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
    async with TopicReader(tansu, [ALERT_TOPIC]) as kafka:
        first = children.start("processor1", "processor", *kafka_flags(tansu),
                               "--group", group, env=quick)
        await wait_for_group(tansu, group, 1, timeout=30)
        sensor = children.start("sensor", "sensor", "--pcap", str(capture), "--speed", "1",
                                *kafka_flags(tansu))
        await kafka.wait_for("the first alerts", lambda: len(kafka.messages) >= 300, timeout=30)
        first.process.send_signal(signal.SIGKILL)
        assert await first.wait(10) == -signal.SIGKILL
        at_kill = set(kafka.alert_ids())
        assert sensor.process.poll() is None, "the stream ended before the kill"
        second = children.start("processor2", "processor", *kafka_flags(tansu), "--group",
                                group, env=quick)
        assert await sensor.wait(60) == 0, sensor.err()[-3000:]
        await kafka.wait_for("every alert of the replay",
                             lambda: set(kafka.alert_ids()) >= expected, timeout=60)
        await asyncio.sleep(1.0)  # time for an alert that should not be there to arrive
        ids = kafka.alert_ids()
    assert await second.terminate() == 0, second.err()[-3000:]
    assert 0 < len(at_kill) < len(expected)
    assert set(ids) == expected  # every alert, under its one id; repeats are harmless
    events, alerts, _ = counts(_PROCESSOR_SUMMARY, second)
    assert events > 0 and alerts > 0


@pytest.mark.timeout(60)
async def test_poison_messages_go_to_the_dead_letter_topic_and_the_stream_goes_on(
        tansu: TansuBroker, children: Children, unique: str) -> None:
    events = handshakes(run_sensor(read_frames(DATA / "zeek" / "tls-expired-cert.pcap")))
    valid = next(e for e in events if Processor(Policy(), DETECTORS).process(e))
    expected = {a.event.id for a in Processor(Policy(), DETECTORS).process(valid)}
    document = json.loads(encode(valid))
    document["certwatch"]["schema_version"] = SCHEMA_VERSION + 1
    garbage, future = b"\x16\x03\x01 not json at all \xff", json.dumps(document).encode()
    await create_topics(children, tansu)
    key = key_of(valid)  # one key: one partition, so the valid event comes after the poison
    async with KafkaBus(settings_for(tansu.bootstrap)) as bus:
        for value in (garbage, future, encode(valid)):
            await bus.publish(HANDSHAKE_TOPIC, key, value)
    processor = children.start("processor", "processor", *kafka_flags(tansu),
                               "--group", f"processors-{unique}")
    async with TopicReader(tansu, [DEAD_LETTER_TOPIC, ALERT_TOPIC]) as kafka:
        await kafka.wait_for("two dead letters and the valid event's alerts",
                             lambda: len(kafka.on(DEAD_LETTER_TOPIC)) >= 2
                             and set(kafka.alert_ids()) >= expected, timeout=40)
        await asyncio.sleep(0.5)
        dead, ids = kafka.on(DEAD_LETTER_TOPIC), set(kafka.alert_ids())
    assert await processor.terminate() == 0, processor.err()[-3000:]
    assert [m.value for m in dead] == [garbage, future]
    assert all(m.key == key for m in dead)
    reasons = [dict(m.headers)["reason"].decode() for m in dead]
    assert all(reasons), reasons
    assert "schema_version" in reasons[1]
    assert [dict(m.headers)["source"].decode() for m in dead] == [
        f"{HANDSHAKE_TOPIC}[{dead[0].partition}]@{offset}" for offset in (0, 1)]
    assert ids == expected
    assert counts(_PROCESSOR_SUMMARY, processor) == (1, len(expected), 2)


# -- 3. live capture --------------------------------------------------------------------------

def capturing(pid: int, interface: str) -> bool:
    """Whether process ``pid`` holds an AF_PACKET socket bound to every protocol on
    ``interface``: its capture is open, not merely being set up (a socket of protocol 0
    sees nothing)."""
    index = socket.if_nametoindex(interface)
    with open("/proc/net/packet") as table:  # sk RefCnt Type Proto Iface R Rmem User Inode
        inodes = {fields[8] for fields in map(str.split, table.readlines()[1:])
                  if int(fields[3], 16) == ETH_P_ALL and int(fields[4]) == index}
    try:
        links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except FileNotFoundError:  # the process is gone (or an fd closed under us)
        return False
    return any(f"socket:[{inode}]" in links for inode in inodes)


def serve_tls(listener: ssl.SSLSocket, connections: int) -> None:
    """Answer ``connections`` TLS clients: read their request, reply, close."""
    for _ in range(connections):
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.live
@pytest.mark.timeout(60)
async def test_live_capture_on_loopback_publishes_the_handshakes(
        tansu: TansuBroker, children: Children, tmp_path: Path, unique: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("live capture needs root (CAP_NET_RAW)")
    files = make_tls_files(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.cert, files.key)
    client_context = ssl.create_default_context(cafile=str(files.ca))
    client_context.check_hostname = False  # the certificate names 127.0.0.1, not the SNI
    sni = f"live-{unique}.certwatch.test"
    await create_topics(children, tansu)
    port = free_port()
    sensor = children.start("sensor", "sensor", "--interface", "lo", "--bpf", f"tcp port {port}",
                            "--allow-root", *kafka_flags(tansu))
    await wait_until("the sensor's capture socket", lambda: capturing(
        sensor.process.pid, "lo") or sensor.process.poll() is not None, timeout=20)
    assert sensor.process.poll() is None, sensor.err()[-3000:]
    listener = server_context.wrap_socket(
        socket.create_server(("127.0.0.1", port)), server_side=True)
    server = threading.Thread(target=serve_tls, args=(listener, 2), daemon=True)
    server.start()
    def talk() -> bytes:
        with client_context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                        server_hostname=sni) as conn:
            conn.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            return conn.recv(1024)

    try:
        for _ in range(2):
            assert (await asyncio.to_thread(talk)).startswith(b"HTTP/1.1 204")
        await asyncio.to_thread(server.join, 10)
    finally:
        listener.close()
    # Let the sensor read what the kernel queued: on SIGTERM it stops reading at once.
    await asyncio.sleep(1.0)
    assert await sensor.terminate() == 0, sensor.err()[-3000:]
    published, dropped = counts(_SENSOR_SUMMARY, sensor)
    async with TopicReader(tansu, [HANDSHAKE_TOPIC]) as kafka:
        def ours() -> list[HandshakeEvent]:
            return [e for e in (HandshakeEvent.model_validate_json(m.value)
                                for m in kafka.on(HANDSHAKE_TOPIC))
                    if e.tls.client.server_name == sni]
        await kafka.wait_for("both handshakes", lambda: len(ours()) >= 2, timeout=20)
        await asyncio.sleep(0.5)
        seen = ours()
    assert len(seen) == 2
    assert {e.destination.port for e in seen} == {port}
    assert len({e.source.port for e in seen}) == 2  # two connections, not one seen twice
    assert dropped == 0 and published >= 2

"""The service commands: ``certwatch sensor``, ``certwatch processor``, ``certwatch topics``."""

from __future__ import annotations

import argparse
import encodings.idna  # noqa: F401  (resolving broker names after dropping root needs it)
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certwatch.metrics import add_metrics_flags
from sensor.config import DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_FLOWS

if TYPE_CHECKING:
    from certwatch.bus.mqtt import MqttSettings
    from certwatch.metrics import Collector
    from sensor.capture import LiveCapture

# Start-up: the service commands need aiokafka, aiomqtt, pydantic-settings and
# prometheus_client, which `certwatch replay` never uses (~0.25 s and ~10 MB a run), and
# asyncio, which a replay without detectors does not need either. So this module imports
# them in the commands that use them, and the commands' Kafka flags (which
# need the settings module) are added to their parser only when that parser is used
# (:class:`LazyArgumentParser`).

log = logging.getLogger("certwatch")

MQTT_PASSWORD_ENV = "CERTWATCH_MQTT_PASSWORD"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
MAX_WORKERS = 64


class LazyArgumentParser(argparse.ArgumentParser):
    """An argument parser that adds its arguments the first time it parses or prints help.

    The parser class of ``certwatch``'s subcommands: building the whole command line then
    costs no import that only one subcommand needs. Without a ``populate`` callback it is a
    plain ``ArgumentParser``."""

    populate: Callable[[argparse.ArgumentParser], None] | None = None

    def _populated(self) -> None:
        populate, self.populate = self.populate, None
        if populate is not None:
            populate(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._populated()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._populated()
        return super().format_usage()

    def format_help(self) -> str:
        self._populated()
        return super().format_help()


def _later(parser: argparse.ArgumentParser,
           populate: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add arguments with ``populate`` when ``parser`` is first used (now if it is not lazy)."""
    if isinstance(parser, LazyArgumentParser):
        parser.populate = populate
    else:
        populate(parser)


def _add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    from certwatch.kafka_cli import add_kafka_flags

    add_kafka_flags(parser)


def _add_topics_create_flags(parser: argparse.ArgumentParser) -> None:
    from certwatch.topics_admin import DEFAULT_WAIT_S

    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--replication-factor", type=int, default=None)
    parser.add_argument("--retention-ms", type=int, default=None)
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                        help="retry while the brokers are starting, for at most this long "
                        "(0: one attempt; default: %(default)g)")
    _add_kafka_flags(parser)


def add_service_commands(commands: argparse._SubParsersAction[Any]) -> None:
    sp = commands.add_parser(
        "sensor", help="capture (interface or pcap) and publish events to Kafka",
        description="Never blocks capture on the broker: events wait in a bounded queue and "
        "the oldest are dropped (and counted) when the broker is away.")
    source = sp.add_mutually_exclusive_group(required=True)
    source.add_argument("--interface", "-i", metavar="IF", help="capture live (AF_PACKET)")
    source.add_argument("--pcap", nargs="+", metavar="FILE", help="publish capture files")
    sp.add_argument("--bpf", default="tcp", help="capture filter (default: %(default)s)")
    add_live_capture_flags(sp)
    sp.add_argument("--speed", type=float, default=None,
                    help="--pcap: pace by capture time (1.0 = as captured; default: as fast "
                    "as possible)")
    sp.add_argument("--sensor-name", default=None, help="observer.name (default: hostname)")
    sp.add_argument("--user", default=None,
                    help="drop to this user once the capture socket is open")
    sp.add_argument("--allow-root", action="store_true",
                    help="keep running as root (not recommended)")
    sp.add_argument("--max-queued", type=int, default=100_000,
                    help="events held while the broker is away (default: %(default)s)")
    sp.add_argument("--foxio", action="store_true", help="JA4S/JA4X (FoxIO License 1.1)")
    sp.add_argument("--max-flows", type=int, default=DEFAULT_MAX_FLOWS,
                    help="flows tracked at once, shared by the workers (default: %(default)s)")
    add_max_buffered_flag(sp)
    sp.add_argument("--workers", type=worker_count, default=1, metavar="N",
                    help="capture processes sharing the flows (default: 1; see README)")
    add_metrics_flags(sp)
    _later(sp, _add_kafka_flags)
    sp.set_defaults(handler=cmd_sensor)

    pp = commands.add_parser("processor", help="consume events, publish alerts (consumer group)")
    pp.add_argument("--group", default="certwatch", help="consumer group (default: %(default)s)")
    pp.add_argument("--policy", type=Path, default=None, help="policy YAML")
    pp.add_argument("--mqtt", default=None, metavar="URL",
                    help="also publish alerts to mqtt://[user@]host:1883/certwatch/alerts "
                    "(password from CERTWATCH_MQTT_PASSWORD)")
    add_metrics_flags(pp)
    _later(pp, _add_kafka_flags)
    pp.set_defaults(handler=cmd_processor)

    tp = commands.add_parser("topics", help="Kafka topics")
    topic_commands = tp.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    tc = topic_commands.add_parser("create", help="create certwatch's topics (idempotent)")
    _later(tc, _add_topics_create_flags)
    tc.set_defaults(handler=cmd_topics_create)


def add_max_buffered_flag(parser: argparse.ArgumentParser) -> None:
    """``--max-buffered-bytes``: :attr:`sensor.config.SensorConfig.max_buffered_bytes` (and
    ``--stats-interval``)."""
    parser.add_argument(
        "--max-buffered-bytes", type=int, default=DEFAULT_MAX_BUFFERED_BYTES, metavar="BYTES",
        help="handshake bytes buffered across all flows (partial records, out-of-order "
        "segments); beyond it the flow holding the most is dropped (default: %(default)s)")
    add_stats_interval_flag(parser)


def add_stats_interval_flag(parser: argparse.ArgumentParser) -> None:
    """``--stats-interval``: :attr:`sensor.config.SensorConfig.stats_interval`."""
    parser.add_argument(
        "--stats-interval", type=_seconds, default=60.0, metavar="SECONDS",
        help="length of the per-server traffic statistics intervals (certwatch.traffic.stats, "
        "input of the byte-rate spike rule); 0 turns them off (default: %(default)s)")


def worker_count(text: str) -> int:
    """``--workers``: 1..MAX_WORKERS (an argparse type)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_WORKERS}, not {count}")
    return count


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value == 0 or 1 <= value <= 86_400):
        raise argparse.ArgumentTypeError(f"{value:g} s: give 0 (off) or 1 to 86400")
    return value


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"certwatch: {message}", file=sys.stderr)
    return code


def cmd_sensor(args: argparse.Namespace, capture: LiveCapture | None = None) -> int:
    """``certwatch sensor``; ``capture``: a socket already opened (a ``--workers`` worker's)."""
    import asyncio

    from certwatch.bus.kafka import KafkaBus
    from certwatch.kafka_cli import kafka_settings
    from certwatch.metrics import KernelCollector, SensorCollector, start_metrics
    from certwatch.publisher import SensorPublisher
    from certwatch.replay import summary
    from certwatch.sensor_service import (
        capture_live,
        publish_captures,
        stop_on_signals,
        until_stopped,
    )
    from certwatch.settings import SettingsError
    from certwatch.workers_live import live_workers, pcap_workers, sensor_config
    from sensor.capture import open_live
    from sensor.errors import CaptureError
    from sensor.privileges import PrivilegeError, drop_privileges, refuse_root
    from sensor.sensor import Sensor

    try:
        settings = kafka_settings(args)
        if args.workers > 1:
            if args.pcap:
                return pcap_workers(args, settings)
            return live_workers(args, cmd_sensor)
        if capture is None and args.interface:
            capture = open_live(args.interface, **live_capture_options(args))
        if args.user:
            drop_privileges(args.user)
        if capture is not None:
            refuse_root(args.allow_root)
    except (SettingsError, CaptureError, PrivilegeError) as error:
        return _fail(str(error))
    config = sensor_config(args)
    sensor = Sensor(config)
    bus = KafkaBus(settings)

    async def run() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        # No bus.start() here: the broker may be down at start; the publisher's first
        # publish connects, and failures are retried while capture goes on.
        publisher = SensorPublisher(
            bus, max_queued=args.max_queued,
            drop_report=lambda n: sensor.report_drops(
                "publish_dropped", "events dropped while the broker was unreachable", n))
        publisher.start()

        def sensor_ready() -> tuple[bool, str]:
            if not publisher.broker_reachable:
                return False, "broker unreachable"
            return True, "capturing" if capture is not None else "replaying"

        collectors: list[Collector] = [SensorCollector(sensor, publisher)]
        if capture is not None:
            collectors.append(KernelCollector(capture))
        metrics = await start_metrics(args, collectors, sensor_ready)
        status = EXIT_OK
        try:
            if capture is not None:
                work = asyncio.create_task(capture_live(capture, sensor, publisher, stop))
                try:
                    await until_stopped(work, stop)
                except CaptureError as error:  # e.g. the interface went away
                    log.error("%s", error)
                    status = EXIT_FAILURE
            else:
                replay = asyncio.create_task(
                    publish_captures(args.pcap, sensor, publisher, speed=args.speed))
                if await until_stopped(replay, stop):
                    report = replay.result()
                    print(summary(report, sensor, title="certwatch sensor"), file=sys.stderr)
                    if report.failed:
                        return EXIT_BAD_INPUT
                else:
                    for event in sensor.finish():
                        publisher.offer(event)
        finally:
            await publisher.close()
            await bus.close()
            if capture is not None:
                capture.close()
            if metrics is not None:
                await metrics.close()
        print(f"certwatch sensor: {publisher.published:,} events published, "
              f"{publisher.dropped:,} dropped", file=sys.stderr)
        return status

    return asyncio.run(run())


def cmd_processor(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from certwatch.bus import BrokerUnavailable, BusConfigError, BusError
    from certwatch.bus.kafka import KafkaBus
    from certwatch.bus.mqtt import MqttAlertPublisher
    from certwatch.kafka_cli import kafka_settings
    from certwatch.metrics import ProcessorCollector, start_metrics
    from certwatch.processor_service import processor_service, run_processor
    from certwatch.reload import PolicyReloader
    from certwatch.sensor_service import stop_on_signals
    from certwatch.settings import SettingsError
    from processors.engine import Processor
    from processors.policy import Policy
    from processors.policy_file import PolicyError, load_policy
    from processors.registry import DETECTORS

    try:
        settings = kafka_settings(args)
        policy = load_policy(args.policy) if args.policy else Policy()
        mqtt_settings = mqtt_settings_of(args.mqtt) if args.mqtt else None
    except PolicyError as error:
        return _fail("; ".join(error.problems))
    except (SettingsError, ValueError) as error:
        return _fail(str(error))
    processor = Processor(policy, DETECTORS)
    bus = KafkaBus(settings)

    async def run() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        mqtt = MqttAlertPublisher(mqtt_settings) if mqtt_settings is not None else None
        try:
            await bus.start()
        except BusError as error:
            return _fail(f"cannot reach the broker: {error}", EXIT_FAILURE)
        if mqtt is not None:
            try:
                await mqtt.check_connection()
            except BusConfigError as error:  # credentials or TLS: waiting will not fix it
                await bus.close()
                return _fail(f"MQTT {mqtt.settings.redacted_url()}: {error}", EXIT_FAILURE)
            except BrokerUnavailable as error:  # it may come later: alerts wait in the queue
                log.warning("MQTT %s not reachable yet (%s); alerts are queued meanwhile",
                            mqtt.settings.redacted_url(), error)
            await mqtt.start()
        service = processor_service(bus, processor, group=args.group, mqtt=mqtt)

        def processor_ready() -> tuple[bool, str]:
            # The consuming side (group joined, fetches answered) and the publishing side.
            consuming = bus.consumer_status()
            if not consuming.ready:
                return False, consuming.reason
            return (True, "consuming") if bus.reachable else (False, "broker unreachable")

        metrics = await start_metrics(
            args, [ProcessorCollector(processor, lambda: service.dead_letters,
                                      bus.consumer_lag, busy=lambda: service.busy_seconds)],
            processor_ready)
        if args.policy is not None:
            reloader = PolicyReloader(args.policy, service, DETECTORS)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.reload)
        try:
            await run_processor(service, stop)
        except BusError as error:  # uncommitted events are consumed again on restart
            return _fail(f"processor stopped: {error}", EXIT_FAILURE)
        finally:
            if mqtt is not None:
                await mqtt.close()
            await bus.close()
            if metrics is not None:
                await metrics.close()
        print(f"certwatch processor: {processor.stats.events:,} events, "
              f"{sum(processor.stats.alerts.values()):,} alerts, "
              f"{service.dead_letters:,} dead letters", file=sys.stderr)
        return EXIT_OK

    return asyncio.run(run())


def mqtt_settings_of(url: str) -> MqttSettings:
    """The MQTT settings of ``--mqtt``; the password comes from ``CERTWATCH_MQTT_PASSWORD``
    when the URL has none (a password in a URL shows in process listings)."""
    from pydantic import SecretStr

    from certwatch.bus.mqtt import parse_mqtt_url

    settings = parse_mqtt_url(url)
    password = os.environ.get(MQTT_PASSWORD_ENV)
    if settings.password is None and password:
        settings = settings.model_copy(update={"password": SecretStr(password)})
    return settings


def cmd_topics_create(args: argparse.Namespace) -> int:
    import asyncio

    from certwatch.bus import BusError
    from certwatch.kafka_cli import kafka_settings
    from certwatch.settings import SettingsError
    from certwatch.topics_admin import create_topics_lines

    try:
        settings = kafka_settings(args)
    except SettingsError as error:
        return _fail(str(error))
    try:
        lines = asyncio.run(create_topics_lines(
            settings,
            partitions=args.partitions or settings.topic_partitions,
            replication=args.replication_factor or settings.topic_replication_factor,
            retention_ms=args.retention_ms or settings.topic_retention_ms,
            wait_s=max(0.0, args.wait),
        ))
    except BusError as error:
        return _fail(str(error), EXIT_FAILURE)
    for line in lines:
        print(line)
    return EXIT_OK


def add_live_capture_flags(parser: argparse.ArgumentParser) -> None:
    """The socket options of a live capture (``--interface``), shared by sensor and watch."""
    parser.add_argument("--buffer-mb", type=_megabytes, default=64, metavar="MB",
                        help="kernel receive buffer of the capture socket; raise it when "
                             "the summary reports kernel drops (default: %(default)s)")
    parser.add_argument("--no-promiscuous", dest="promiscuous", action="store_false",
                        help="only frames addressed to this host (a SPAN/tap port needs "
                             "promiscuous mode, the default)")


def _megabytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MB") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"{value} MB: give 1 to 4096")
    return value


def live_capture_options(args: argparse.Namespace) -> dict[str, Any]:
    """``open_live`` keyword arguments from the flags (a namespace without them: defaults)."""
    return {"bpf": args.bpf, "buffer_mb": getattr(args, "buffer_mb", 64),
            "promiscuous": getattr(args, "promiscuous", True)}

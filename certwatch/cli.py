"""The ``certwatch`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certwatch.cli_services import (
    LazyArgumentParser,
    add_max_buffered_flag,
    add_service_commands,
    worker_count,
)
from certwatch.logs import configure
from certwatch.metrics import add_metrics_flags
from sensor.config import DEFAULT_MAX_FLOWS, SensorConfig

if TYPE_CHECKING:
    from certwatch.bus.memory import MemoryBus
    from certwatch.output import JsonLinesWriter
    from certwatch.replay import ReplayReport
    from certwatch.services import ProcessorService
    from processors.engine import Processor
    from processors.policy import Policy
    from sensor.sensor import Sensor

# Start-up: every command imports what it uses in its handler, so that building the parser
# costs no import one command alone needs. `certwatch replay --no-alerts` (what the benchmark
# times, from spawn to exit) imports the sensor and the event writer, and none of the
# processors, the policy YAML loader or the bus (tests/cli/test_startup_imports.py).

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certwatch",
        description="Watch TLS handshakes and certificates on the network and flag what "
        "should not be there.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["auto", "json", "text"], default="auto",
                        help="auto: text on a terminal, JSON lines otherwise")
    # Subcommand parsers may add their arguments when used (the service commands' Kafka
    # flags need modules a replay never imports: see certwatch.cli_services).
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=LazyArgumentParser)

    rp = commands.add_parser(
        "replay", help="replay pcap/pcapng captures (also .gz) and print events",
        description="Run the sensor over captures, in capture order, using capture time.",
    )
    rp.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file, or -")
    rp.add_argument("--events", default="-", metavar="PATH",
                    help="where to write events as JSON lines (default: - for stdout)")
    rp.add_argument("--alerts", default="-", metavar="PATH",
                    help="where to write alerts as JSON lines (default: - for stdout)")
    rp.add_argument("--policy", type=Path, default=None,
                    help="policy YAML (default: system trust store, every rule on)")
    rp.add_argument("--no-alerts", action="store_true",
                    help="run the sensor alone, no detectors")
    rp.add_argument("--sensor-name", default=None, help="observer.name (default: hostname)")
    rp.add_argument("--foxio", action="store_true",
                    help="also compute JA4S and JA4X (FoxIO License 1.1, see README)")
    rp.add_argument("--no-chain-der", action="store_true",
                    help="leave certificate DER out of handshake events")
    rp.add_argument("--max-flows", type=int, default=DEFAULT_MAX_FLOWS,
                    help="flows tracked at once (default: %(default)s)")
    add_max_buffered_flag(rp)
    rp.add_argument("--speed", type=float, default=None,
                    help="pace by capture time (1.0 = as captured; default: as fast as "
                    "possible)")
    rp.add_argument("--workers", type=worker_count, default=1, metavar="N",
                    help="sensor processes sharing the flows (default: 1; see README)")
    add_metrics_flags(rp)
    rp.set_defaults(handler=cmd_replay)

    pp = commands.add_parser("policy", help="the policy file")
    policy_commands = pp.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    pc = policy_commands.add_parser("check", help="validate a policy and explain every problem")
    pc.add_argument("policy", type=Path)
    pc.set_defaults(handler=cmd_policy_check)

    cp = commands.add_parser("csr", help="certificate signing requests")
    csr_commands = cp.add_subparsers(dest="csr_command", required=True, metavar="ACTION")
    cc = csr_commands.add_parser(
        "check", help="apply the certificate rules to a CSR before it goes to a CA",
        description="One line per finding; exit 1 when any finding is an error, 2 when the "
        "file is not a CSR.")
    cc.add_argument("csr", type=Path, metavar="FILE.csr", help="PEM or DER")
    cc.add_argument("--key", type=Path, metavar="FILE.key",
                    help="private key that must match the CSR's public key")
    cc.add_argument("--key-password-env", metavar="VAR",
                    help="environment variable holding the key's password")
    cc.add_argument("--host", action="append", default=[], metavar="NAME",
                    help="a name the certificate must cover (repeat; *.example.com for a "
                    "wildcard)")
    cc.add_argument("--policy", type=Path, default=None,
                    help="take key and signature thresholds (and profile) from this policy")
    cc.set_defaults(handler=cmd_csr_check)

    add_service_commands(commands)
    # `certwatch watch`: listed here, its module (the live pipeline, ~440 lines to compile)
    # imported and its arguments added only when its parser is used (~5 ms of every other
    # command's start-up, replay's included).
    wp = commands.add_parser("watch", help=WATCH_HELP)
    assert isinstance(wp, LazyArgumentParser)
    wp.populate = _add_watch_arguments

    sp = commands.add_parser("schema", help="the event contract")
    schema_commands = sp.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    ex = schema_commands.add_parser("export", help="write the JSON Schema of every message")
    ex.add_argument("directory", type=Path)
    ex.set_defaults(handler=cmd_schema_export)
    return parser


#: ``certwatch watch``'s line in ``certwatch --help`` (``certwatch.watch.add_watch_command``
#: gives the same; tests/cli/test_startup_imports.py compares the two).
WATCH_HELP = "live alerts from an interface, in one process (no broker)"


class _ThisParser:
    """What ``add_watch_command`` registers its command with: instead of a new subparser, it
    is handed the one ``build_parser`` already listed (given its description)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        self._parser.description = kwargs.get("description")
        return self._parser


def _add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    from certwatch.watch import add_watch_command

    add_watch_command(_ThisParser(parser))  # type: ignore[arg-type]


def cmd_replay(args: argparse.Namespace) -> int:
    policy: Policy | None = None
    if args.policy is not None or not args.no_alerts:
        # A policy given with --no-alerts is still checked: a bad file is a bad command line.
        from processors.policy import Policy
        from processors.policy_file import PolicyError, load_policy

        try:
            policy = load_policy(args.policy) if args.policy else Policy()
        except PolicyError as error:
            for problem in error.problems:
                print(f"certwatch: {problem}", file=sys.stderr)
            return EXIT_BAD_INPUT
    config = SensorConfig(
        **({"name": args.sensor_name} if args.sensor_name else {}),
        max_flows=args.max_flows,
        max_buffered_bytes=args.max_buffered_bytes,
        stats_interval=args.stats_interval,
        foxio_fingerprints=args.foxio,
        include_chain_der=not args.no_chain_der,
    )
    if args.workers > 1:
        from certwatch.workers import cmd_replay_workers

        return cmd_replay_workers(args, policy, config)
    return _replay_one_process(args, policy, config)


def _replay_one_process(
    args: argparse.Namespace, policy: Policy | None, config: SensorConfig
) -> int:
    from contextlib import ExitStack

    from certwatch.output import JsonLinesWriter
    from certwatch.replay import summary
    from sensor.sensor import Sensor

    sensor = Sensor(config)
    with ExitStack() as stack:
        try:
            events = stack.enter_context(JsonLinesWriter(args.events))
            alerts = events if args.alerts == args.events else stack.enter_context(
                JsonLinesWriter(args.alerts))
        except OSError as error:
            print(f"certwatch: cannot write to {error.filename}: {error.strerror}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        if policy is None:  # --no-alerts
            processor = None
            report = _replay_events_only(args, sensor, events)
        else:
            import asyncio

            from processors.engine import Processor
            from processors.registry import DETECTORS

            processor = Processor(policy, DETECTORS)
            report = asyncio.run(_run_replay(args, sensor, processor, events, alerts))
    print(summary(report, sensor, processor.stats if processor else None), file=sys.stderr)
    return EXIT_BAD_INPUT if report.failed else EXIT_OK


def _replay_events_only(
    args: argparse.Namespace, sensor: Sensor, events: JsonLinesWriter
) -> ReplayReport:
    """The sensor alone: without pacing or a metrics server nothing needs an event loop, so
    none is made (``replay_sync``)."""
    from certwatch.progress import Progress

    if args.speed is None and args.metrics_port is None:
        from certwatch.replay import replay_sync

        return replay_sync(args.captures, sensor, events.write, Progress())
    import asyncio

    return asyncio.run(_run_replay(args, sensor, None, events, events))


async def _run_replay(
    args: argparse.Namespace,
    sensor: Sensor,
    processor: Processor | None,
    events: JsonLinesWriter,
    alerts: JsonLinesWriter,
) -> ReplayReport:
    """The whole pipeline in one process: sensor -> in-memory bus -> processors."""
    from certwatch.bus.memory import MemoryBus
    from certwatch.metrics import Collector, ProcessorCollector, SensorCollector, start_metrics
    from certwatch.progress import Progress
    from certwatch.replay import replay
    from certwatch.services import ProcessorService
    from schemas.alerts import AlertEvent
    from schemas.events import SensorEvent

    service: ProcessorService | None = None
    collectors: list[Collector] = [SensorCollector(sensor)]
    if processor is not None:
        collectors.append(ProcessorCollector(
            processor, lambda: service.dead_letters if service is not None else 0,
            busy=lambda: service.busy_seconds if service is not None else 0.0))
    metrics = await start_metrics(args, collectors, lambda: (True, "replaying"))
    try:
        if processor is None:
            async def write_only(event: SensorEvent) -> None:
                events.write(event)
            return await replay(args.captures, sensor, write_only, Progress(), speed=args.speed)
        bus = MemoryBus()

        async def write_alert(alert: AlertEvent) -> None:
            alerts.write(alert)

        service = ProcessorService(processor, bus, on_alert=write_alert)
        return await _replay_with_processors(args, sensor, bus, service, events)
    finally:
        if metrics is not None:
            await metrics.close()


async def _replay_with_processors(
    args: argparse.Namespace,
    sensor: Sensor,
    bus: MemoryBus,
    service: ProcessorService,
    events: JsonLinesWriter,
) -> ReplayReport:
    import asyncio

    from certwatch.progress import Progress
    from certwatch.replay import replay
    from schemas.events import SensorEvent
    from schemas.topics import key_of, topic_of

    consumer = asyncio.create_task(service.run(service.subscribe()))

    async def publish(event: SensorEvent) -> None:
        # The writer's JSON is the wire form (certwatch.codec.encode, byte for byte:
        # tests/cli/test_output_json.py), composed once for both.
        text = events.to_json(event)
        events.write_json(text)
        await bus.publish(topic_of(event), key_of(event), text.encode())

    try:
        report = await replay(args.captures, sensor, publish, Progress(), speed=args.speed)
    finally:
        await bus.close()
        await consumer
    return report


def cmd_policy_check(args: argparse.Namespace) -> int:
    from processors.policy_file import PolicyError, load_policy
    from processors.registry import DETECTOR_RULES

    try:
        policy = load_policy(args.policy)
    except PolicyError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    enabled = [rule for rule in sorted(DETECTOR_RULES) if policy.rules.enabled(rule)]
    print(f"{args.policy}: valid; profile {policy.profile or 'none'}; "
          f"{len(enabled)} rules enabled; {len(policy.pins)} pins")
    return EXIT_OK


def cmd_csr_check(args: argparse.Namespace) -> int:
    from processors.csr import CsrError, check_csr, exit_status, load_csr, load_private_key
    from processors.policy import Policy
    from processors.policy_file import PolicyError, load_policy
    from processors.profiles import resolve

    try:
        policy = load_policy(args.policy) if args.policy else Policy()
        thresholds = resolve(policy)
        csr = load_csr(_read(args.csr))
        key = None
        if args.key is not None:
            password = os.environ.get(args.key_password_env or "", "") or None
            key = load_private_key(_read(args.key), password.encode() if password else None)
        findings = check_csr(
            csr, hosts=args.host, key=key,
            min_rsa_bits=thresholds.min_rsa_bits, min_dsa_bits=thresholds.min_dsa_bits,
            min_ec_bits=thresholds.min_ec_bits, forbidden_hashes=thresholds.forbidden_hashes,
        )
    except PolicyError as error:
        for problem in error.problems:
            print(f"certwatch: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CsrError, OSError) as error:
        print(f"certwatch: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as error:  # a --host that is not a host name
        print(f"certwatch: --host: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for finding in findings:
        print(f"{finding.level}: {finding.rule}: {finding.message}")
    return exit_status(findings)


def _read(path: Path) -> bytes:
    from processors.csr import CsrError

    try:
        return path.read_bytes()
    except OSError as error:
        raise CsrError(f"{path}: {error.strerror}") from error


def cmd_schema_export(args: argparse.Namespace) -> int:
    from schemas.export import export_schemas

    for path in export_schemas(args.directory):
        print(path)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``certwatch`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from certwatch.output import JsonLinesWriter
from certwatch.progress import Progress
from certwatch.replay import replay, summary
from schemas.export import export_schemas
from sensor.config import DEFAULT_MAX_FLOWS, SensorConfig
from sensor.sensor import Sensor

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certwatch",
        description="Watch TLS handshakes and certificates on the network and flag what "
        "should not be there.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rp = commands.add_parser(
        "replay", help="replay pcap/pcapng captures (also .gz) and print events",
        description="Run the sensor over captures, in capture order, using capture time.",
    )
    rp.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file, or -")
    rp.add_argument("--events", default="-", metavar="PATH",
                    help="where to write events as JSON lines (default: - for stdout)")
    rp.add_argument("--sensor-name", default=None, help="observer.name (default: hostname)")
    rp.add_argument("--foxio", action="store_true",
                    help="also compute JA4S and JA4X (FoxIO License 1.1, see README)")
    rp.add_argument("--no-chain-der", action="store_true",
                    help="leave certificate DER out of handshake events")
    rp.add_argument("--max-flows", type=int, default=DEFAULT_MAX_FLOWS,
                    help="flows tracked at once (default: %(default)s)")
    rp.set_defaults(handler=cmd_replay)

    sp = commands.add_parser("schema", help="the event contract")
    schema_commands = sp.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    ex = schema_commands.add_parser("export", help="write the JSON Schema of every message")
    ex.add_argument("directory", type=Path)
    ex.set_defaults(handler=cmd_schema_export)
    return parser


def cmd_replay(args: argparse.Namespace) -> int:
    config = SensorConfig(
        **({"name": args.sensor_name} if args.sensor_name else {}),
        max_flows=args.max_flows,
        foxio_fingerprints=args.foxio,
        include_chain_der=not args.no_chain_der,
    )
    sensor = Sensor(config)
    try:
        writer = JsonLinesWriter(args.events)
    except OSError as error:
        print(f"certwatch: cannot write events to {args.events}: {error.strerror}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    with writer:
        report = replay(args.captures, sensor, writer.write, Progress())
    print(summary(report, sensor), file=sys.stderr)
    return EXIT_BAD_INPUT if report.failed else EXIT_OK


def cmd_schema_export(args: argparse.Namespace) -> int:
    for path in export_schemas(args.directory):
        print(path)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="certwatch: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

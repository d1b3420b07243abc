"""The Kafka flags every broker-facing command shares, and the settings they produce.

Precedence (one order everywhere): flags > ``CERTWATCH_KAFKA_*`` environment > the settings
file (``--settings`` or ``$CERTWATCH_SETTINGS``) > defaults. ``--bus`` is a flag like the
others (it sets ``bootstrap_servers`` and ``security_protocol``); it may be left out when the
environment or the settings file names the brokers, and a command given brokers by none of
them is refused rather than guessing ``localhost:9092``. Secrets (SASL and key passwords) are
not flags: a password on a command line is visible in process listings.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from certwatch.settings import (
    ENV_PREFIX,
    SETTINGS_FILE_ENV,
    KafkaSettings,
    SettingsError,
    load_settings,
    parse_bus_url,
)


def add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Kafka", "also from CERTWATCH_KAFKA_* variables or the settings file; passwords only "
        "from CERTWATCH_KAFKA_SASL_PASSWORD / CERTWATCH_KAFKA_SSL_PASSWORD or the file")
    group.add_argument("--bus", default=None, metavar="URL",
                       help="kafka://host:9092[,host2:9092] (kafka+ssl://, kafka+sasl://, "
                       "kafka+sasl_ssl:// set the security protocol); default: "
                       f"{ENV_PREFIX}BOOTSTRAP_SERVERS or the settings file")
    group.add_argument("--settings", type=Path, default=None, metavar="FILE",
                       help="YAML or TOML settings file with a 'kafka' section")
    group.add_argument("--client-id", dest="client_id")
    group.add_argument("--ssl-cafile", dest="ssl_cafile", type=Path)
    group.add_argument("--ssl-certfile", dest="ssl_certfile", type=Path)
    group.add_argument("--ssl-keyfile", dest="ssl_keyfile", type=Path)
    group.add_argument("--sasl-mechanism", dest="sasl_mechanism",
                       choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    group.add_argument("--sasl-username", dest="sasl_username")
    group.add_argument("--compression", dest="compression",
                       choices=["none", "gzip", "snappy", "lz4", "zstd"])
    group.add_argument("--acks", dest="acks", choices=["0", "1", "all"])
    group.add_argument("--no-idempotence", dest="enable_idempotence", action="store_const",
                       const=False, default=None,
                       help="brokers without idempotent producers (e.g. the Tansu test broker)")


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """Settings from the parsed flags (raises SettingsError with one line per problem)."""
    overrides: dict[str, Any] = dict(parse_bus_url(args.bus)) if args.bus else {}
    for name in ("client_id", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_mechanism",
                 "sasl_username", "compression", "enable_idempotence"):
        overrides[name] = getattr(args, name)
    if args.acks is not None:
        overrides["acks"] = int(args.acks) if args.acks.isdigit() else args.acks
    settings = load_settings(args.settings, overrides)
    if "bootstrap_servers" not in settings.model_fields_set:
        raise SettingsError(
            f"no Kafka broker named: give --bus kafka://host:9092, or set "
            f"{ENV_PREFIX}BOOTSTRAP_SERVERS, or bootstrap_servers in the 'kafka' section of "
            f"the settings file (--settings or {SETTINGS_FILE_ENV})")
    return settings

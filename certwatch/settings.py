"""Kafka settings: one model, four sources, one precedence.

Precedence, highest first::

    CLI flags  >  environment (CERTWATCH_KAFKA_*)  >  settings file  >  defaults

* **CLI flags** reach :func:`load_settings` as ``overrides`` (a ``--bus kafka://…`` URL goes
  through :func:`parse_bus_url` first; explicit flags win over the URL).
* **Environment**: ``CERTWATCH_KAFKA_<FIELD>``, nested fields with ``__``
  (``CERTWATCH_KAFKA_TOPICS__ALERTS=siem.alerts``); lists are comma separated
  (``CERTWATCH_KAFKA_BOOTSTRAP_SERVERS=k1:9092,k2:9092``).
* **Settings file**: YAML (``.yaml``/``.yml``) or TOML (``.toml``) named by ``--settings`` or
  ``CERTWATCH_SETTINGS``; its ``kafka`` section holds these fields (other top-level sections
  belong to other components and are ignored here).

Invalid settings raise :class:`SettingsError`, whose message is one line per bad field.
Passwords are ``SecretStr``: they never appear in ``repr``/``str``/logs or in error messages.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from aiokafka import codec
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from certwatch.bus import DEAD_LETTER_TOPIC
from schemas import topics

SETTINGS_FILE_ENV: Final = "CERTWATCH_SETTINGS"
ENV_PREFIX: Final = "CERTWATCH_KAFKA_"
_SECRET_FIELDS: Final = frozenset({"ssl_password", "sasl_password"})

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class SettingsError(ValueError):
    """The settings are unusable; ``str()`` is one line per problem, secrets never shown."""


class TopicNames(BaseModel):
    """Topic names (DESIGN.md "Topics and keys"); defaults come from ``schemas.topics``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    handshake: str = topics.HANDSHAKE_TOPIC
    certificate: str = topics.CERTIFICATE_TOPIC
    traffic_stats: str = topics.TRAFFIC_STATS_TOPIC
    anomaly: str = topics.ANOMALY_TOPIC
    alerts: str = topics.ALERT_TOPIC
    deadletter: str = DEAD_LETTER_TOPIC


# Set by load_settings() for the duration of one KafkaSettings(...) construction: the file's
# ``kafka`` section, fed to pydantic-settings as the source just above the defaults.
_file_values: ContextVar[Mapping[str, Any] | None] = ContextVar("_file_values", default=None)


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_file_values.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get() or {})


class KafkaSettings(BaseSettings):
    """Everything needed to talk to a Kafka cluster and to lay out certwatch's topics."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True,
        validate_default=True,
    )

    bootstrap_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost:9092"], min_length=1,
        description="host:port of one or more brokers (comma separated in the environment)")
    client_id: str = Field(default_factory=lambda: f"certwatch-{socket.gethostname()}")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: FilePath | None = Field(
        default=None, description="CA bundle that signs the brokers (default: system store)")
    ssl_certfile: FilePath | None = Field(default=None, description="client certificate (mTLS)")
    ssl_keyfile: FilePath | None = Field(default=None, description="client private key (mTLS)")
    ssl_password: SecretStr | None = Field(default=None, description="password of the key")
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # zstd by default: a batch's handshake events repeat the same chains' DER, so it shrinks
    # ~39x, taking the broker's and the network's share of each event with it (bench/README.md).
    compression: Compression = Field(default_factory=lambda: _default_compression())
    acks: Literal[0, 1, "all"] = "all"
    enable_idempotence: bool = Field(
        default=True,
        description="exactly one copy per send even across retries; needs acks=all. Brokers "
        "without idempotent producers (the Tansu test broker) need false")
    linger_ms: int = Field(default=5, ge=0, le=60_000)
    request_timeout_ms: int = Field(
        default=30_000, ge=100, le=600_000,
        description="also the longest a publish waits before failing with BrokerUnavailable")
    max_batch_size: int = Field(
        default=262_144, ge=1024, le=16 * 1024 * 1024,
        description="bytes per producer batch (per partition). A handshake event is ~8 KB: "
        "Kafka's 64 KiB holds eight; 256 KiB cost the sensor's publisher the least CPU per "
        "event in bench/README.md's measurement (1-4 MiB gained nothing)")
    session_timeout_ms: int = Field(
        default=10_000, ge=1000, le=300_000,
        description="a consumer silent this long leaves its group; its partitions move on")
    heartbeat_interval_ms: int = Field(default=3000, ge=100, le=100_000)
    fetch_max_wait_ms: int = Field(
        default=100, ge=10, le=30_000,
        description="longest a consumer's fetch may wait on the broker for data (Kafka's "
        "fetch.max.wait.ms; Kafka's default is 500). A consumer sends one fetch at a time to "
        "each broker: while some of its partitions still hold records being processed, it "
        "asks for the others alone, and when those are quiet (the traffic statistics topic) "
        "that fetch holds up the busy partitions this long. Tansu also answers a fetch that "
        "found nothing only at its next look, half this time later, even when data came "
        "meanwhile. With 500 both left the processors of bench.kafka_e2e idle for 0.25-0.5 s "
        "with thousands of events waiting (tests/integration/test_kafka_fetch_wait.py)")
    topics: TopicNames = Field(default_factory=TopicNames)
    topic_partitions: int = Field(
        default=6, ge=1, description="`topics create`: partitions per topic (processors scale "
        "out up to this many instances)")
    topic_replication_factor: int = Field(default=3, ge=1, le=32)
    topic_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, ge=-1, description="`topics create`: retention of the "
        "event topics (-1 = forever); the certificate topic is compacted instead")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs are the CLI flags; no dotenv or secrets directory (one place per source).
        return init_settings, env_settings, _FileSource(settings_cls)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_from_text(cls, value: object) -> object:
        # The environment and flags deliver "0"/"1"; the Literal wants the numbers.
        return int(value) if isinstance(value, str) and value in ("0", "1") else value

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, servers: list[str]) -> list[str]:
        for server in servers:
            _check_host_port(server)
        return servers

    @field_validator("compression")
    @classmethod
    def _check_codec(cls, name: Compression) -> Compression:
        if name not in available_compressions():
            raise ValueError(f"{name} compression needs the 'cramjam' package, which is not "
                             f"installed; available here: {', '.join(available_compressions())}")
        return name

    @model_validator(mode="after")
    def _check_consistency(self) -> KafkaSettings:
        problems = list(self._consistency_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _consistency_problems(self) -> Iterator[str]:
        uses_tls = self.security_protocol in ("SSL", "SASL_SSL")
        uses_sasl = self.security_protocol.startswith("SASL_")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            if getattr(self, name) is not None and not uses_tls:
                yield (f"{name} is set but security_protocol is {self.security_protocol} "
                       "(use SSL or SASL_SSL)")
        if uses_sasl and (self.sasl_username is None or self.sasl_password is None):
            yield f"security_protocol {self.security_protocol} needs sasl_username and " \
                  "sasl_password"
        if not uses_sasl and self.sasl_username is not None:
            yield (f"sasl_username is set but security_protocol is {self.security_protocol} "
                   "(use SASL_PLAINTEXT or SASL_SSL)")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            yield (f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                   f"session_timeout_ms ({self.session_timeout_ms})")
        if self.enable_idempotence and self.acks != "all":
            yield f"enable_idempotence needs acks=all (got acks={self.acks}); " \
                  "set enable_idempotence=false to use weaker acks"

    def describe(self) -> list[str]:
        """Printable ``name = value`` lines; secrets show as ``**********`` when set."""
        lines = []
        for name, value in self.model_dump(exclude={"topics"}).items():
            shown = "**********" if name in _SECRET_FIELDS and value is not None else value
            if isinstance(shown, list):
                shown = ",".join(map(str, shown))
            lines.append(f"{name} = {shown}")
        lines.extend(f"topics.{role} = {topic}" for role, topic in self.topics)
        return lines


def _default_compression() -> Compression:
    # cramjam comes with aiokafka[zstd] (pyproject); a hand-made install without it still runs.
    return "zstd" if codec.has_zstd() else "none"


def available_compressions() -> tuple[Compression, ...]:
    """The codecs aiokafka can use with the libraries installed here (gzip always)."""
    optional: tuple[tuple[Compression, bool], ...] = (
        ("snappy", codec.has_snappy()), ("lz4", codec.has_lz4()), ("zstd", codec.has_zstd()))
    return ("none", "gzip", *(name for name, present in optional if present))


def _check_host_port(server: str) -> None:
    host, sep, port = server.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # RFC 3986 §3.2.2: an IPv6 literal is bracketed before ":port"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{server!r} is not host:port (IPv6 as [addr]:port)")


_SCHEMES: Final[Mapping[str, SecurityProtocol]] = {
    "kafka": "PLAINTEXT",
    "kafka+ssl": "SSL",
    "kafka+sasl": "SASL_PLAINTEXT",
    "kafka+sasl_ssl": "SASL_SSL",
}


def parse_bus_url(url: str) -> dict[str, Any]:
    """Settings overrides from a ``--bus`` URL.

    ``kafka://h1:9092,h2:9092`` → bootstrap servers (port 9092 when omitted);
    ``kafka+ssl://``, ``kafka+sasl://`` and ``kafka+sasl_ssl://`` also set the security
    protocol. Credentials, paths and query strings are refused: a password in a URL ends up
    in process listings and shell history, so it belongs in the environment or the file.

    :raises SettingsError: not a Kafka URL, or not of that shape.
    """
    scheme, sep, rest = url.partition("://")
    protocol = _SCHEMES.get(scheme.lower())
    if not sep or protocol is None:
        raise SettingsError(f"bus: {url!r} is not a Kafka URL (schemes: {', '.join(_SCHEMES)})")
    if "@" in rest:
        raise SettingsError("bus: credentials do not belong in the URL; set "
                            f"{ENV_PREFIX}SASL_USERNAME/{ENV_PREFIX}SASL_PASSWORD instead")
    rest = rest.rstrip("/")
    if any(char in rest for char in "/?#"):
        raise SettingsError(f"bus: {url!r}: only host:port[,host:port...] may follow "
                            f"{scheme}://")
    servers = [_with_default_port(part.strip()) for part in rest.split(",") if part.strip()]
    if not servers:
        raise SettingsError(f"bus: {url!r} names no broker")
    return {"bootstrap_servers": servers, "security_protocol": protocol}


def _with_default_port(server: str) -> str:
    if server.endswith("]") or ":" not in server:
        return f"{server}:9092"
    return server


def read_settings_file(path: Path) -> dict[str, Any]:
    """The ``kafka`` section of a YAML or TOML settings file (empty when absent).

    :raises SettingsError: unreadable, unparsable, unknown extension, or not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError(f"settings file {path}: {error.strerror}") from error
    try:
        if path.suffix.lower() == ".toml":
            document: object = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            document = yaml.safe_load(text)
        else:
            raise SettingsError(f"settings file {path}: use .yaml, .yml or .toml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SettingsError(f"settings file {path}: {first_line}") from error
    document = {} if document is None else document
    section = document.get("kafka", {}) if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise SettingsError(f"settings file {path}: expected a mapping with a 'kafka' section")
    return section


def load_settings(
    settings_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> KafkaSettings:
    """The effective Kafka settings (precedence in the module docstring).

    ``settings_file`` defaults to ``$CERTWATCH_SETTINGS``; ``overrides`` are CLI flag values by
    field name (``None`` values mean "flag not given" and are dropped).

    :raises SettingsError: one line per invalid field.
    """
    path = settings_file if settings_file is not None else os.environ.get(SETTINGS_FILE_ENV)
    file_values = read_settings_file(Path(path)) if path else {}
    flags = {name: value for name, value in (overrides or {}).items() if value is not None}
    token = _file_values.set(file_values)
    try:
        return KafkaSettings(**flags)
    except ValidationError as error:
        raise SettingsError(format_errors(error)) from None
    finally:
        _file_values.reset(token)


def format_errors(error: ValidationError) -> str:
    """One line per problem: ``kafka.<field>: <message> (got <input>)``; secret inputs and
    whole-model inputs are never echoed."""
    lines: list[str] = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if not location:  # cross-field checks: one line each, never the model's input
            lines.extend(f"kafka: {part}" for part in message.splitlines())
            continue
        line = f"kafka.{location}: {message}"
        shown = problem["loc"] and problem["loc"][0] not in _SECRET_FIELDS
        if shown and isinstance(problem["input"], str | int | float | bool):
            line += f" (got {str(problem['input'])[:80]!r})"
        lines.append(line)
    return "\n".join(lines)

"""``certwatch topics create``: lay out certwatch's topics on a Kafka cluster.

Idempotent: a topic that already exists is reported as found and left as it is (its
partitions and configs are not changed; altering a live topic is an operator's decision).

It runs first in a deployment, often while the brokers are still starting (compose, a
Kubernetes Job), so a broker that does not answer yet is retried with backoff for a bounded
time (``wait_s``) before giving up with one error naming the brokers and the last reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import (
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import KafkaError

from certwatch.bus import BrokerUnavailable, BusError
from certwatch.bus.kafka import TopicNotFound, client_kwargs, translate
from certwatch.settings import KafkaSettings

_UNKNOWN_TOPIC = 3  # Kafka protocol error code UNKNOWN_TOPIC_OR_PARTITION
_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code TOPIC_ALREADY_EXISTS
_BACKOFF_INITIAL_S: Final = 0.5
_BACKOFF_MAX_S: Final = 5.0
DEFAULT_WAIT_S: Final = 60.0

log = logging.getLogger("certwatch.topics")


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    """What happened to one topic."""

    role: str
    name: str
    status: Literal["created", "exists"]
    configs: tuple[tuple[str, str], ...]

    def line(self) -> str:
        """One printable line, e.g. ``created  certwatch.alerts  (retention.ms=604800000)``."""
        configs = ", ".join(f"{key}={value}" for key, value in self.configs)
        suffix = f"  ({configs})" if configs and self.status == "created" else ""
        return f"{self.status:<8} {self.name}{suffix}"


def topic_configs(role: str, retention_ms: int) -> dict[str, str]:
    """Per-topic configs: the certificate topic is the compacted certificate inventory (one
    record per fingerprint kept forever); every other topic is a stream with a retention."""
    if role == "certificate":
        return {"cleanup.policy": "compact"}
    return {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}


async def create_topics(
    settings: KafkaSettings,
    *,
    partitions: int | None = None,
    replication: int | None = None,
    retention_ms: int | None = None,
) -> list[TopicOutcome]:
    """Create the topics of ``settings.topics`` (the five event topics and the dead letter).

    Arguments left ``None`` come from the settings' ``topic_*`` fields.

    :raises BusError: the cluster refused (e.g. replication above its broker count) or is
        unreachable.
    """
    partitions = settings.topic_partitions if partitions is None else partitions
    replication = settings.topic_replication_factor if replication is None else replication
    retention_ms = settings.topic_retention_ms if retention_ms is None else retention_ms
    wanted = [(role, name, topic_configs(role, retention_ms)) for role, name in settings.topics]
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication, topic_configs=configs)
             for _, name, configs in wanted])
    except KafkaError as error:
        raise translate(error, "creating topics") from error
    finally:
        await admin.close()
    errors = {topic: (code, message) for topic, code, message in _topic_errors(response)}
    outcomes = []
    for role, name, configs in wanted:
        code, message = errors.get(name, (0, None))
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise BusError(f"creating topic {name}: error {code}: {message}")
        status: Literal["created", "exists"] = "created" if code == 0 else "exists"
        outcomes.append(TopicOutcome(role, name, status, tuple(sorted(configs.items()))))
    return outcomes


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the cluster describes it."""

    name: str
    partitions: int
    configs: dict[str, str]


async def describe_topics(settings: KafkaSettings, names: list[str]) -> list[TopicInfo]:
    """Partitions and configs of existing topics (configs the broker reports explicitly).

    :raises TopicNotFound: one of ``names`` does not exist; :raises BusError: otherwise.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
        described = await admin.describe_topics(names)
        config_responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    except KafkaError as error:
        raise translate(error, "describing topics") from error
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in config_responses:
        for resource in response.resources:
            configs[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
    infos = []
    for topic in described:
        if topic["error_code"] == _UNKNOWN_TOPIC:
            raise TopicNotFound(f"topic {topic['topic']} does not exist")
        infos.append(TopicInfo(topic["topic"], len(topic["partitions"]),
                               configs.get(topic["topic"], {})))
    return infos


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    # CreateTopicsResponse v1+ carries (topic, error_code, error_message) per topic.
    return [(str(entry[0]), int(entry[1]), entry[2] if len(entry) > 2 else None)
            for entry in response.topic_errors]


async def create_topics_waiting(
    settings: KafkaSettings, *, wait_s: float = DEFAULT_WAIT_S, **layout: int | None
) -> list[TopicOutcome]:
    """:func:`create_topics`, retried with exponential backoff (0.5 s doubling up to 5 s)
    while the failure is retriable (no broker answers yet, no leader yet), for at most
    ``wait_s`` seconds in all.

    :raises BrokerUnavailable: still failing at the deadline; the message names the brokers,
        the time waited, the attempts and the last reason.
    :raises BusError: a failure no retry can fix (refused configuration, access denied).
    """
    deadline = time.monotonic() + wait_s
    delay = _BACKOFF_INITIAL_S
    attempts = 0
    while True:
        attempts += 1
        try:
            return await create_topics(settings, **layout)
        except BusError as error:
            remaining = deadline - time.monotonic()
            if not error.retriable or remaining <= 0:
                if not error.retriable or attempts == 1:
                    raise
                raise BrokerUnavailable(
                    f"no usable broker at {','.join(settings.bootstrap_servers)} after "
                    f"{wait_s:g} s ({attempts} attempts); last error: {error}") from error
            if attempts == 1:
                log.warning("brokers %s not ready (%s); retrying for up to %g s",
                            ",".join(settings.bootstrap_servers), error, wait_s)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _BACKOFF_MAX_S)


async def create_topics_lines(
    settings: KafkaSettings, *, wait_s: float = DEFAULT_WAIT_S, **layout: int | None
) -> list[str]:
    """:func:`create_topics_waiting` as printable lines, for the CLI."""
    outcomes = await create_topics_waiting(settings, wait_s=wait_s, **layout)
    created = sum(outcome.status == "created" for outcome in outcomes)
    lines = [outcome.line() for outcome in outcomes]
    lines.append(f"{created} created, {len(outcomes) - created} already existed")
    return lines

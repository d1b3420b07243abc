"""The Kafka transport: the :class:`~certwatch.bus.Bus` protocol over aiokafka.

Only this module (and ``certwatch.topics_admin``) sees aiokafka; everything aiokafka raises
leaves as one of our own errors::

    BusError                  retriable = False   anything else the broker or client refused
    ├── BrokerUnavailable     retriable = True    no broker answered in request_timeout_ms
    ├── TopicNotFound         retriable = True    unknown topic/partition (may be created yet)
    ├── AccessDenied          retriable = False   authentication or authorisation failed
    ├── MessageRejected       retriable = False   this message can never be accepted (size…)
    └── BusConfigurationError retriable = False   our settings cannot work with this broker

Delivery is at-least-once: a publish returns once the broker acknowledged it (per ``acks``);
consumers never auto-commit, the service commits after processing. A publish that fails
(e.g. timed out while the broker was away) may still have been written, so a retry can
duplicate; alert identities make duplicates harmless downstream.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from certwatch.bus import BrokerUnavailable, BusConfigError, BusError, Message
from certwatch.settings import KafkaSettings

log = logging.getLogger("certwatch.bus.kafka")

Headers = tuple[tuple[str, bytes], ...]
Outgoing = tuple[str, str, bytes, Headers]
"""One message to publish: (topic, key, value, headers)."""

_MAX_PARTITION_FETCH_BYTES: Final = 16 * 1024 * 1024
_FETCH_MAX_BYTES: Final = 64 * 1024 * 1024
_POLL_MS: Final = 200  # how often a subscription looks at whether the bus was closed
_MAX_RECORDS: Final = 2000  # records handed out per fetch: bounds what one poll holds
# The producer's largest request (aiokafka's and Kafka's default): also the largest record.
_MAX_REQUEST_BYTES: Final = 1024 * 1024
# A JoinGroup request legitimately waits on the broker until every member rejoins (Kafka also
# delays the first join by group.initial.rebalance.delay.ms, 3 s); aiokafka applies the plain
# request timeout to it, so a consumer never gets less than Kafka's own client default.
_CONSUMER_MIN_REQUEST_TIMEOUT_MS: Final = 40_000


class TopicNotFound(BusError):
    retriable = True


class AccessDenied(BusError):
    retriable = False


class MessageRejected(BusError):
    retriable = False


BusConfigurationError = BusConfigError
__all__ = ["BrokerUnavailable", "BusConfigurationError", "BusError", "KafkaBus", "Message"]


_UNAVAILABLE: Final = (
    kafka_errors.KafkaConnectionError, kafka_errors.NodeNotReadyError,
    kafka_errors.KafkaTimeoutError, kafka_errors.RequestTimedOutError,
    kafka_errors.NoBrokersAvailable, kafka_errors.KafkaUnavailableError,
    kafka_errors.LeaderNotAvailableError, kafka_errors.NotLeaderForPartitionError,
    kafka_errors.BrokerNotAvailableError, kafka_errors.GroupCoordinatorNotAvailableError,
    kafka_errors.NotEnoughReplicasError, kafka_errors.NotEnoughReplicasAfterAppendError,
)
_DENIED: Final = (
    kafka_errors.AuthenticationFailedError, kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed, kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
)
_REJECTED: Final = (
    kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError, kafka_errors.RecordListTooLargeError,
)


def translate(error: BaseException, doing: str) -> BusError:
    """Our error for an aiokafka (or timeout) error raised while ``doing`` something."""
    kind: type[BusError] = BusError
    if isinstance(error, (TimeoutError, *_UNAVAILABLE)):
        kind = BrokerUnavailable
    elif isinstance(error, kafka_errors.UnknownTopicOrPartitionError):
        kind = TopicNotFound
    elif isinstance(error, _DENIED):
        kind = AccessDenied
    elif isinstance(error, _REJECTED):
        kind = MessageRejected
    detail = str(error) or type(error).__name__
    result = kind(f"{doing}: {detail}")
    if kind is BusError:
        result.retriable = bool(getattr(error, "retriable", False))
    return result


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of SSL/SASL_SSL: verifies the broker against ``ssl_cafile`` (else the
    system store) and its name; presents the client certificate when one is set."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context = ssl.create_default_context(
            cafile=None if settings.ssl_cafile is None else str(settings.ssl_cafile))
        if settings.ssl_certfile is not None:
            password = settings.ssl_password.get_secret_value() if settings.ssl_password else None
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile, password)
    except (ssl.SSLError, OSError) as error:
        raise BusConfigurationError(f"TLS settings: {error}") from error
    return context


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection keyword arguments shared by aiokafka's producer, consumer and admin."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "ssl_context": ssl_context(settings),
    }
    if settings.security_protocol.startswith("SASL_"):
        assert settings.sasl_password is not None  # KafkaSettings checks it for SASL_*
        kwargs |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    return kwargs


class KeyHashPartitioner:
    """aiokafka's default partitioner (the Java client's: murmur2 of the key, modulo the
    partition count) with the key's hash memoised: it is pure Python, ~5 µs a message, and
    message keys (server names) repeat. Same partition for every key as the default; each
    memo holds at most ``max_keys`` keys and is emptied when full (counted in ``resets``)."""

    def __init__(self, max_keys: int = 65_536) -> None:
        self.max_keys = max_keys
        self.resets = 0
        self._hashes: dict[bytes, int] = {}
        self._text_hashes: dict[str, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            chosen: int = DefaultPartitioner()(key, all_partitions, available)
            return chosen
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.max_keys:
                self._hashes.clear()
                self.resets += 1
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]

    def partition_of(self, key: str, partitions: Sequence[int]) -> int:
        """The partition of ``key`` (its UTF-8 bytes hashed, as ``__call__`` does) among
        ``partitions``, sorted by id as the Java client orders them."""
        hashed = self._text_hashes.get(key)
        if hashed is None:
            if len(self._text_hashes) >= self.max_keys:
                self._text_hashes.clear()
                self.resets += 1
            hashed = self._text_hashes[key] = murmur2(key.encode()) & 0x7FFFFFFF
        return partitions[hashed % len(partitions)]


def producer_kwargs(settings: KafkaSettings,
                    partitioner: KeyHashPartitioner | None = None) -> dict[str, Any]:
    """Keyword arguments of ``AIOKafkaProducer``."""
    return client_kwargs(settings) | {
        "partitioner": KeyHashPartitioner() if partitioner is None else partitioner,
        "acks": settings.acks,
        "enable_idempotence": settings.enable_idempotence,
        "compression_type": None if settings.compression == "none" else settings.compression,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_size,
        "max_request_size": _MAX_REQUEST_BYTES,
    }


def consumer_kwargs(settings: KafkaSettings, group: str) -> dict[str, Any]:
    """Keyword arguments of ``AIOKafkaConsumer`` for a member of ``group``."""
    kwargs = client_kwargs(settings)
    kwargs["request_timeout_ms"] = max(kwargs["request_timeout_ms"],
                                       _CONSUMER_MIN_REQUEST_TIMEOUT_MS)
    return kwargs | {
        "group_id": group, "enable_auto_commit": False, "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        # Handshake events carry their certificate chain (several KB each): Kafka's
        # 1 MiB per-partition fetch would cap a poll at a few hundred events.
        "max_partition_fetch_bytes": _MAX_PARTITION_FETCH_BYTES,
        "fetch_max_bytes": _FETCH_MAX_BYTES,
    }


class _Member(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """One subscription's consumer and what it knows of its group membership.

    aiokafka calls the two hooks around every rebalance, so ``joined`` is "this member
    holds a generation's assignment" (possibly empty: more members than partitions).
    ``next_offset`` is, per partition, the first offset not yet processed (committed + 1,
    or the first one fetched since the assignment): consumer lag is the partition's
    high-water mark minus it, i.e. what the broker holds that the service has not done.
    """

    def __init__(self, group: str, consumer: Any) -> None:
        self.group = group
        self.consumer = consumer
        self.joined = False
        self.next_offset: dict[TopicPartition, int] = {}

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.joined = False
        for partition in revoked:
            self.next_offset.pop(partition, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined = True

    def fetched(self, batches: dict[Any, list[Any]]) -> None:
        """Note what a ``getmany`` handed out (call before the batch is processed)."""
        for partition, records in batches.items():
            if records:
                first = records[0].offset
                self.next_offset[partition] = min(self.next_offset.get(partition, first), first)
        for partition in self.consumer.assignment():
            if partition not in self.next_offset and partition not in batches:
                # A fetch answered and nothing was handed out: caught up, as far as we know.
                highwater = self.consumer.highwater(partition)
                if highwater is not None:
                    self.next_offset[partition] = highwater

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition with a known high-water mark: messages not yet done."""
        lags = {}
        for partition in self.consumer.assignment():
            highwater = self.consumer.highwater(partition)
            done = self.next_offset.get(partition)
            if highwater is not None and done is not None:
                # A broker that lost its log (restarted empty) has a lower mark: not negative.
                lags[(partition.topic, partition.partition)] = max(0, highwater - done)
        return lags

    def last_fetch(self) -> float | None:
        """Wall-clock seconds of the newest fetch response for any assigned partition."""
        stamps = [self.consumer.last_poll_timestamp(partition)
                  for partition in self.consumer.assignment()]
        known = [stamp for stamp in stamps if stamp is not None]
        return max(known) / 1000 if known else None


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    """Whether the consuming side works, for ``/readyz``: ``ready`` and why (or why not)."""

    ready: bool
    reason: str


def _to_message(record: ConsumerRecord[Any, Any]) -> Message:
    # Per consumed record (a processor's hot path): no generator for the usual no headers.
    key, value, headers = record.key, record.value, record.headers
    return Message(record.topic, "" if key is None else bytes(key).decode("utf-8", "replace"),
                   b"" if value is None else bytes(value), record.partition, record.offset,
                   tuple((name, b"" if data is None else bytes(data)) for name, data in headers)
                   if headers else ())


class KafkaBus:
    """A :class:`~certwatch.bus.Bus` on a Kafka cluster.

    Publishing starts the producer on first use (or call :meth:`start` to fail fast). Each
    :meth:`subscribe` is one member of its consumer group; on one bus, every subscription of
    a topic must use the same group, so :meth:`commit` knows which member a message is from.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._timeout = settings.request_timeout_ms / 1000
        self._producer: Any = None
        self._partitioner = KeyHashPartitioner()
        self._start_lock = asyncio.Lock()
        self._group_of_topic: dict[str, str] = {}
        self._consumers: list[_Member] = []
        self._unavailable = False
        self._closed = False

    async def __aenter__(self) -> KafkaBus:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect the producer (idempotent).

        :raises BrokerUnavailable: no broker answered; :raises BusConfigurationError: e.g.
            the broker refuses idempotent producers.
        """
        async with self._start_lock:
            if self._closed:
                raise BusError("the bus is closed")
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(**producer_kwargs(self.settings, self._partitioner))
            try:
                await producer.start()
            except kafka_errors.KafkaError as error:
                await producer.stop()
                raise self._start_error(error) from error
            self._producer = producer
            log.info("connected to kafka %s as %s", ",".join(self.settings.bootstrap_servers),
                     self.settings.client_id)

    def _start_error(self, error: BaseException) -> BusError:
        idempotence_refused = isinstance(
            error, kafka_errors.UnknownError | kafka_errors.UnsupportedVersionError)
        if self.settings.enable_idempotence and idempotence_refused:
            return BusConfigurationError(
                f"the broker refused an idempotent producer ({type(error).__name__}); brokers "
                "without idempotence support (e.g. Tansu) need "
                "CERTWATCH_KAFKA_ENABLE_IDEMPOTENCE=false")
        return translate(error, f"connecting to {','.join(self.settings.bootstrap_servers)}")

    async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        """Return once the broker acknowledged the message.

        :raises BrokerUnavailable: no acknowledgement within ``request_timeout_ms``.
        """
        await self.publish_batch(((topic, key, value, headers),))

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        """Send every message, then wait for all acknowledgements (the throughput path).

        Each message goes to the partition aiokafka's default partitioner would choose for
        its key (murmur2, as the Java client), so a key keeps its partition and its order.

        :raises MessageRejected: a message is larger than a request may be (nothing sent).
        :raises BusError: the first failure, after every send has finished; the others may
            have been written (at-least-once: resending the batch can duplicate).
        """
        if not messages:
            return  # a processor's batch that raised no alert
        await self.start()
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                sent = await self._send_batches(messages, deadline)
            async with asyncio.timeout(self._timeout):
                results = await asyncio.gather(*[future for future, _ in sent],
                                               return_exceptions=True)
        except (TimeoutError, kafka_errors.KafkaError) as error:
            raise self._publish_failed(error, len(messages)) from error
        failures = [(result, count) for result, (_, count) in zip(results, sent, strict=True)
                    if isinstance(result, BaseException)]
        if failures:
            raise self._publish_failed(failures[0][0], len(messages),
                                       sum(count for _, count in failures))
        if self._unavailable:
            self._unavailable = False
            log.info("kafka broker reachable again; publishing resumed")

    async def _send_batches(self, messages: Sequence[Outgoing], deadline: asyncio.Timeout
                            ) -> list[tuple[asyncio.Future[Any], int]]:
        """Hands ``messages`` to the producer as one record batch per partition (more when a
        batch fills up): (its delivery future, its record count) for each.

        aiokafka's ``send()`` costs a coroutine, a partitioner call and a future per message
        (about 20 µs of a ~8 KB event); appending to a ``BatchBuilder`` is one C call. The
        batch is closed before it is handed over, so that no ``send()`` appends to it and
        the sender does not linger on it.
        """
        producer = self._producer
        loop = asyncio.get_running_loop()
        sent = []
        for (topic, partition), group in (await self._by_partition(messages)).items():
            builder = producer.create_batch()
            for _, key, value, headers in group:
                encoded = key.encode()
                if builder.append(key=encoded, value=value, timestamp=None,
                                  headers=list(headers)) is None:
                    # Full: send it, start the next (a new batch takes any first record).
                    sent.append(await self._send_batch(builder, topic, partition))
                    # Each batch handed over is progress: a stalled broker still fails the
                    # publish within about request_timeout_ms, a busy one does not.
                    deadline.reschedule(loop.time() + self._timeout)
                    builder = producer.create_batch()
                    builder.append(key=encoded, value=value, timestamp=None,
                                   headers=list(headers))
            sent.append(await self._send_batch(builder, topic, partition))
            deadline.reschedule(loop.time() + self._timeout)
        return sent

    async def _by_partition(self, messages: Sequence[Outgoing]
                            ) -> dict[tuple[str, int], list[Outgoing]]:
        """``messages`` by (topic, partition), in their order, each message's size checked.

        :raises MessageRejected: a message is larger than a request may be."""
        partitions_of: dict[str, list[int]] = {}
        by_partition: dict[tuple[str, int], list[Outgoing]] = {}
        for message in messages:
            topic, key, value, headers = message
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = partitions_of[topic] = sorted(
                    await self._producer.partitions_for(topic))
            # A UTF-8 character is at most 4 bytes: only large messages need the exact size.
            if headers or len(value) + 4 * len(key) > _MAX_REQUEST_BYTES // 2:
                self._check_size(key, value, headers)
            target = (topic, self._partitioner.partition_of(key, partitions))
            group = by_partition.get(target)
            if group is None:
                by_partition[target] = [message]
            else:
                group.append(message)
        return by_partition

    async def _send_batch(self, builder: Any, topic: str, partition: int
                          ) -> tuple[asyncio.Future[Any], int]:
        builder.close()
        future = await self._producer.send_batch(builder, topic, partition=partition)
        return future, builder.record_count()

    @staticmethod
    def _check_size(key: str, value: bytes, headers: Headers) -> None:
        """What ``send()`` checks: a record larger than a request may be is refused here,
        before anything of its batch is sent (the broker would refuse the whole batch)."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
            key.encode(), value, list(headers))
        if size > _MAX_REQUEST_BYTES:
            raise MessageRejected(f"a message of {size} bytes is larger than a producer "
                                  f"request may be ({_MAX_REQUEST_BYTES})")

    @property
    def reachable(self) -> bool:
        """False from a publish that found the broker unavailable until one succeeds."""
        return not self._unavailable

    def _publish_failed(self, error: BaseException, total: int, failed: int = 0) -> BusError:
        what = f"{failed} of {total} messages" if failed else f"publishing {total} message(s)"
        result = translate(error, f"{what} not acknowledged within "
                                  f"{self.settings.request_timeout_ms} ms")
        if isinstance(result, BrokerUnavailable) and not self._unavailable:
            self._unavailable = True  # said once per outage, not once per message
            log.warning("kafka broker unavailable (%s); publishes fail until it is back",
                        result)
        return result

    def subscribe(self, topics: Sequence[str], group: str) -> AsyncIterator[Message]:
        """Messages of ``topics`` for ``group`` from the earliest uncommitted offset, until
        the bus is closed. The consumer connects on the first iteration."""
        return self._messages(self.subscribe_batches(topics, group))

    def subscribe_batches(
        self, topics: Sequence[str], group: str
    ) -> AsyncIterator[list[Message]]:
        """The same messages, as the batches the broker hands out (at most 2000): a consumer
        that publishes and commits once per batch saves a round trip per message."""
        for topic in topics:
            known = self._group_of_topic.setdefault(topic, group)
            if known != group:
                raise ValueError(f"{topic} is already consumed by group {known!r} on this bus; "
                                 "use one KafkaBus per consumer group")
        return self._consume(tuple(topics), group)

    @staticmethod
    async def _messages(batches: AsyncIterator[list[Message]]) -> AsyncIterator[Message]:
        async for batch in batches:
            for message in batch:
                yield message

    async def _consume(
        self, topics: tuple[str, ...], group: str
    ) -> AsyncIterator[list[Message]]:
        consumer = AIOKafkaConsumer(**consumer_kwargs(self.settings, group))
        member = _Member(group, consumer)
        consumer.subscribe(list(topics), listener=member)
        self._consumers.append(member)
        try:
            try:
                await consumer.start()
            except kafka_errors.KafkaError as error:
                raise translate(error, f"subscribing to {','.join(topics)}") from error
            while not self._closed:
                try:
                    batches = await consumer.getmany(timeout_ms=_POLL_MS,
                                                     max_records=_MAX_RECORDS)
                except kafka_errors.ConsumerStoppedError:
                    return  # close() stopped it under us
                except kafka_errors.KafkaError as error:
                    raise translate(error, f"consuming {','.join(topics)}") from error
                member.fetched(batches)
                batch = [_to_message(record) for records in batches.values()
                         for record in records]
                if batch:
                    yield batch
        finally:
            self._consumers.remove(member)
            await consumer.stop()

    async def commit(self, message: Message) -> None:
        """Commit ``message.offset + 1`` for its partition in its topic's group.

        A partition that moved to another member meanwhile (a rebalance) is not committed:
        the new owner re-reads from the last commit, which at-least-once allows.
        """
        partition = TopicPartition(message.topic, message.partition)
        group = self._group_of_topic.get(message.topic)
        for member in self._consumers:
            consumer = member.consumer
            if member.group == group and partition in consumer.assignment():
                try:
                    # aiokafka retries a commit while the coordinator is unreachable, without
                    # end: bound it like a publish.
                    async with asyncio.timeout(self._timeout):
                        await consumer.commit({partition: message.offset + 1})
                except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as error:
                    log.warning("commit of %s[%d]@%d skipped, the group rebalanced: %s",
                                message.topic, message.partition, message.offset, error)
                except (TimeoutError, kafka_errors.KafkaError) as error:
                    raise translate(error, f"committing {message.topic}[{message.partition}]"
                                           f"@{message.offset}") from error
                else:
                    member.next_offset[partition] = message.offset + 1
                return
        log.debug("%s[%d] is no longer assigned here; commit of offset %d skipped",
                  message.topic, message.partition, message.offset)

    async def commit_batch(self, messages: Sequence[Message]) -> None:
        """:meth:`commit` for the last message of each partition in ``messages``, in one
        request per consumer (a fetched batch spans several partitions; one commit round
        trip per partition was a large share of a processor's time per batch)."""
        last: dict[TopicPartition, Message] = {}
        for message in messages:
            last[TopicPartition(message.topic, message.partition)] = message
        for member in self._consumers:
            consumer = member.consumer
            assigned = consumer.assignment()
            mine = {partition: message for partition, message in last.items()
                    if partition in assigned
                    and self._group_of_topic.get(partition.topic) == member.group}
            if not mine:
                continue
            for partition in mine:
                del last[partition]
            offsets = {partition: message.offset + 1 for partition, message in mine.items()}
            try:
                async with asyncio.timeout(self._timeout):
                    await consumer.commit(offsets)
            except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as error:
                log.warning("commit of %d partition(s) skipped, the group rebalanced: %s",
                            len(offsets), error)
            except (TimeoutError, kafka_errors.KafkaError) as error:
                raise translate(error, f"committing {len(offsets)} partition(s)") from error
            else:
                member.next_offset.update(offsets)
        for partition, message in last.items():
            log.debug("%s[%d] is no longer assigned here; commit of offset %d skipped",
                      partition.topic, partition.partition, message.offset)

    def assignments(self) -> list[frozenset[tuple[str, int]]]:
        """The (topic, partition) pairs each running subscription owns right now."""
        return [frozenset((tp.topic, tp.partition) for tp in member.consumer.assignment())
                for member in self._consumers]

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition) this bus consumes: messages on the broker (its last known
        high-water mark) that the service has not yet processed and committed. Updated by
        every fetch and every commit; partitions not fetched yet since their assignment are
        absent."""
        lags: dict[tuple[str, int], int] = {}
        for member in self._consumers:
            lags |= member.lag()
        return lags

    def consumer_status(self, now: float | None = None) -> ConsumerStatus:
        """Ready when every subscription has joined its group and, if it owns partitions,
        a fetch was answered within ``session_timeout_ms`` (the time after which the broker
        itself would count the member gone). Fetches are answered at least every
        ``fetch_max_wait_ms`` (0.1 s by default) even with nothing new, so silence means the
        broker is away, not that the topic is quiet."""
        if not self._consumers:
            return ConsumerStatus(False, "not consuming yet")
        now = time.time() if now is None else now
        window = self.settings.session_timeout_ms / 1000
        for member in self._consumers:
            if not member.joined:
                return ConsumerStatus(False, f"joining consumer group {member.group}")
            if not member.consumer.assignment():
                continue  # a standby member: more members than partitions
            last = member.last_fetch()
            if last is None:
                return ConsumerStatus(False, "joined, waiting for the first fetch")
            if now - last > window:
                return ConsumerStatus(False, f"no fetch answered for {now - last:.0f} s: "
                                             "broker unreachable")
        return ConsumerStatus(True, "consuming")

    async def close(self) -> None:
        """Flush and stop the producer, stop every consumer; subscriptions then end."""
        self._closed = True
        for member in list(self._consumers):
            await member.consumer.stop()
        async with self._start_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

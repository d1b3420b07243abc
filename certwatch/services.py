"""Long-running services that connect the sensor and the processors to a bus."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pydantic import ValidationError

from certwatch.bus import DEAD_LETTER_TOPIC, Bus, Message
from certwatch.codec import HandshakeDecoder, encode
from processors.engine import Processor
from schemas.alerts import AlertEvent
from schemas.events import TrafficStatsEvent
from schemas.topics import ALERT_TOPIC, HANDSHAKE_TOPIC, TRAFFIC_STATS_TOPIC

CONSUMED_TOPICS = (HANDSHAKE_TOPIC, TRAFFIC_STATS_TOPIC)
"""What the processors read: handshakes, and traffic statistics (byte-rate spikes)."""

log = logging.getLogger("certwatch.processor")


class ProcessorService:
    """Consumes handshake and traffic-statistics events, publishes the alerts they raise,
    then commits.

    At-least-once: a message is committed only after every alert it caused has been
    handed to the bus, so a crash re-delivers it, and the re-delivered event yields alerts
    with the same ids (processors.suppression). A message that is not a handshake event of a
    schema version we know (or, on the statistics topic, not a statistics event)
    goes to the dead-letter topic with the reason, and the stream
    goes on.
    """

    def __init__(
        self,
        processor: Processor,
        bus: Bus,
        *,
        group: str = "certwatch",
        on_alert: Callable[[AlertEvent], Awaitable[None]] | None = None,
    ) -> None:
        self.processor = processor
        self.bus = bus
        self.group = group
        self.on_alert = on_alert
        self.dead_letters = 0
        # Time spent decoding and judging events (not waiting for the broker): its rate is
        # how busy the processor is, and divided by the events it is the cost of one.
        self.busy_seconds = 0.0
        # Its own template table (and statistics): see certwatch.codec.
        self.decoder = HandshakeDecoder()

    def subscribe(self) -> AsyncIterator[Message]:
        """The subscription :meth:`run` consumes; take it before anything is published when
        the bus keeps no history (the in-memory bus)."""
        return self.bus.subscribe(list(CONSUMED_TOPICS), self.group)

    async def run(self, messages: AsyncIterator[Message] | None = None) -> None:
        subscribe_batches = getattr(self.bus, "subscribe_batches", None)
        if messages is None and subscribe_batches is not None:
            batches: AsyncIterator[list[Message]] = subscribe_batches(
                list(CONSUMED_TOPICS), self.group)
            async for batch in batches:
                await self.handle_batch(batch)
            return
        async for message in messages or self.subscribe():
            await self.handle(message)

    async def handle_batch(self, batch: list[Message]) -> None:
        """A fetched batch: every event processed, all their alerts (and dead letters)
        published and acknowledged together, then the last offset of each partition
        committed. A crash before the commit re-delivers the whole batch, whose alerts
        come back with the same ids."""
        outgoing: list[tuple[str, str, bytes, tuple[tuple[str, bytes], ...]]] = []
        alerts: list[AlertEvent] = []
        last_of_partition: dict[tuple[str, int], Message] = {}
        started = time.perf_counter()
        # The per-event loop: a handshake is decoded and judged without _judge's call and
        # attribute lookups (what is left per event is the decoder and the detectors).
        decode = self.decoder.decode
        process = self.processor.process
        for message in batch:
            topic = message.topic
            last_of_partition[(topic, message.partition)] = message
            try:
                if topic == HANDSHAKE_TOPIC:
                    raised = process(decode(message.value))
                else:
                    raised = self._judge(message)
            except ValidationError as error:
                outgoing.append(self._dead_letter_message(message, error))
                continue
            if raised:
                for alert in raised:
                    alerts.append(alert)
                    outgoing.append((ALERT_TOPIC, alert.event.id, encode(alert), ()))
        self.busy_seconds += time.perf_counter() - started
        publish_batch = getattr(self.bus, "publish_batch", None)
        if publish_batch is not None:
            await publish_batch(outgoing)
        else:
            for topic, key, value, headers in outgoing:
                await self.bus.publish(topic, key, value, headers)
        if self.on_alert is not None:
            for alert in alerts:
                await self.on_alert(alert)
        commit_batch = getattr(self.bus, "commit_batch", None)
        if commit_batch is not None:
            await commit_batch(list(last_of_partition.values()))
        else:
            for message in last_of_partition.values():
                await self.bus.commit(message)

    async def handle(self, message: Message) -> None:
        started = time.perf_counter()
        try:
            alerts = self._judge(message)
        except ValidationError as error:
            self.busy_seconds += time.perf_counter() - started
            await self._dead_letter(message, error)
        else:
            self.busy_seconds += time.perf_counter() - started
            # All of one event's alerts in flight at once: a publish returns only once the
            # broker acknowledged it (after the producer's linger), so one at a time would
            # cost a round trip per alert.
            await asyncio.gather(*(self.bus.publish(ALERT_TOPIC, alert.event.id, encode(alert))
                                   for alert in alerts))
            if self.on_alert is not None:
                for alert in alerts:
                    await self.on_alert(alert)
        await self.bus.commit(message)

    def _judge(self, message: Message) -> list[AlertEvent]:
        """Decode ``message`` by its topic and run the processor over it (ValidationError
        when it is not an event of that topic)."""
        if message.topic == TRAFFIC_STATS_TOPIC:
            stats = TrafficStatsEvent.model_validate_json(message.value)
            return self.processor.process_stats(stats)
        return self.processor.process(self.decoder.decode(message.value))

    async def _dead_letter(self, message: Message, error: ValidationError) -> None:
        topic, key, value, headers = self._dead_letter_message(message, error)
        await self.bus.publish(topic, key, value, headers)

    def _dead_letter_message(
        self, message: Message, error: ValidationError
    ) -> tuple[str, str, bytes, tuple[tuple[str, bytes], ...]]:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        if not self.dead_letters:
            log.warning("undecodable message on %s[%d]@%d sent to %s: %s (further ones are "
                        "counted)", message.topic, message.partition, message.offset,
                        DEAD_LETTER_TOPIC, problems)
        self.dead_letters += 1
        headers = (
            ("reason", problems.encode()[:1000]),
            ("source", f"{message.topic}[{message.partition}]@{message.offset}".encode()),
        )
        return DEAD_LETTER_TOPIC, message.key, message.value, headers

"""Between the sensor and the broker: a bounded queue that never blocks capture.

The capture loop hands events over with :meth:`SensorPublisher.offer`, a plain function
call that never waits. A background task drains the queue to the bus in batches. When the
broker is away the queue fills up to its bound, then the oldest events are dropped and
counted; the loss is logged once, and once the broker is back an anomaly event says how
many events were lost. On shutdown :meth:`close` flushes what is held, within a deadline.

Encoding happens in :meth:`~SensorPublisher.offer`, on the capture loop: the bytes are those
of ``certwatch.codec.encode``, composed by ``certwatch.output.JsonLinesWriter.to_json``, which
keeps the JSON text of the parts the sensor's event builder shares between events (the TLS
block, the chain with its DER, hello summaries) instead of serialising them again each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

from certwatch.bus import Bus, BusError
from certwatch.output import JsonLinesWriter
from schemas.events import SensorEvent
from schemas.topics import key_of, topic_of

log = logging.getLogger("certwatch.publisher")

Outgoing = tuple[str, str, bytes, tuple[tuple[str, bytes], ...]]


class SensorPublisher:
    """Publishes sensor events to a bus without ever making the caller wait."""

    def __init__(
        self,
        bus: Bus,
        *,
        max_queued: int = 100_000,
        batch_size: int = 500,
        max_backoff: float = 5.0,
        drop_report: Callable[[int], SensorEvent] | None = None,
    ) -> None:
        self.bus = bus
        self.max_queued = max_queued
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self.drop_report = drop_report
        self.published = 0
        self.dropped = 0
        self.failures = 0
        self._unreported_drops = 0
        self._queue: deque[Outgoing] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._broker_lost = False
        self._dropping = False  # dropped events since publishing last went through
        self._report: Outgoing | None = None  # the loss report waiting at the queue's head
        self._task: asyncio.Task[None] | None = None
        # Only its composer is used (``to_json``: the text of ``encode``, with the shared
        # parts' text kept by identity, bounded); "-" opens nothing, and nothing is written.
        self._json = JsonLinesWriter("-")

    @property
    def broker_reachable(self) -> bool:
        """False while publishes fail or the queue overflows (from the first failure or
        drop to the next successful publish)."""
        return not (self._broker_lost or self._dropping)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="sensor-publisher")

    def offer(self, event: SensorEvent) -> None:
        """Queue an event for the broker; drop the oldest one if the queue is full."""
        self._queue.append((topic_of(event), key_of(event), self.encode(event), ()))
        self._trim()
        self._wakeup.set()

    def encode(self, event: SensorEvent) -> bytes:
        """The bytes published for ``event``: exactly ``certwatch.codec.encode(event)``."""
        return self._json.to_json(event).encode()

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (within ``timeout`` seconds), then stop. What could not be
        delivered by then is counted as dropped."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                # The batch it was publishing goes back to the queue as it stops: counted below.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        # Whatever is still queued now will never be sent: the deadline passed, or the
        # broker refused the batch for good (a configuration error, e.g. a broker without
        # idempotent producers). Either way it is a loss the summary must show.
        lost = len(self._queue)
        if lost:
            self._queue.clear()
            self.dropped += lost
            log.error("shutting down without the broker: %d events not delivered", lost)

    def _trim(self) -> None:
        # The loss report is never the one dropped: its count was taken out of
        # ``_unreported_drops``, so dropping it would lose the count (and count the report
        # as one lost event). It sits at the head; the oldest events behind it go instead.
        report = self._queue.popleft() if self._queue and self._queue[0] is self._report else None
        while self._queue and len(self._queue) + (report is not None) > self.max_queued:
            self._queue.popleft()
            self.dropped += 1
            self._unreported_drops += 1
            if not self._dropping:
                # Said at the first loss: a publish can wait a whole request timeout on an
                # unreachable broker before it fails, and events are lost meanwhile.
                self._dropping = True
                log.warning("the broker is not keeping up: queue of %d events full, dropping "
                            "the oldest", self.max_queued)
        if report is not None:
            self._queue.appendleft(report)

    async def _drain(self) -> None:
        backoff = 0.1
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            try:
                await self._publish(batch)
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))  # close's deadline: counted as lost
                raise
            except BusError as error:
                self._requeue(batch, error)
                if not error.retriable and self._closing:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            self.published += len(batch)
            if any(item is self._report for item in batch):
                self._report = None
            if self._broker_lost or self._dropping:
                log.warning("%s; %d events were dropped meanwhile",
                            "broker reachable again" if self._broker_lost else "publishing again",
                            self._unreported_drops)
                self._broker_lost = self._dropping = False
            if self._unreported_drops and self.drop_report is not None:
                report = self.drop_report(self._unreported_drops)
                self._unreported_drops = 0
                self._report = (topic_of(report), key_of(report), self.encode(report), ())
                self._queue.appendleft(self._report)

    async def _publish(self, batch: Sequence[Outgoing]) -> None:
        publish_batch = getattr(self.bus, "publish_batch", None)
        if publish_batch is not None:
            await publish_batch(batch)
            return
        for topic, key, value, headers in batch:
            await self.bus.publish(topic, key, value, headers)

    def _requeue(self, batch: list[Outgoing], error: BusError) -> None:
        self.failures += 1
        if not self._broker_lost:
            self._broker_lost = True
            log.warning("cannot publish to the broker (%s); holding up to %d events, then "
                        "dropping the oldest", error, self.max_queued)
        self._queue.extendleft(reversed(batch))
        self._trim()

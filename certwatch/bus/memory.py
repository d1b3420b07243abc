"""The in-process bus: per-subscriber bounded queues, the embedded default of ``replay``.

Bounded so a fast producer waits for a slow consumer instead of growing without limit; in a
replay that is exactly right (capture time, not wall time, drives every rule). A live sensor
does not use this bus for its broker path (it must never block on a consumer).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence

from certwatch.bus import Message

_CLOSED = None


class MemoryBus:
    """Every subscriber of a topic sees every message of it (one group per subscriber)."""

    def __init__(self, max_queued: int = 10_000) -> None:
        self.max_queued = max_queued
        self._subscribers: list[tuple[frozenset[str], asyncio.Queue[Message | None]]] = []
        self._offsets: Counter[str] = Counter()
        self.published: Counter[str] = Counter()
        self.committed: dict[str, int] = {}
        self.closed = False

    async def publish(
        self, topic: str, key: str, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        self.published[topic] += 1
        message = Message(topic, key, value, 0, offset, headers)
        for topics, queue in self._subscribers:
            if topic in topics and not self.closed:
                await queue.put(message)

    def subscribe(self, topics: Sequence[str], group: str) -> AsyncIterator[Message]:
        queue: asyncio.Queue[Message | None] = asyncio.Queue(self.max_queued)
        self._subscribers.append((frozenset(topics), queue))
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[Message | None]) -> AsyncIterator[Message]:
        while True:
            message = await queue.get()
            if message is _CLOSED:
                return
            yield message

    async def commit(self, message: Message) -> None:
        self.committed[message.topic] = message.offset

    async def close(self) -> None:
        """End of input: every subscription ends once it has drained what was published
        before. Publishing stays possible (a processor still emitting the alerts of the
        last events); it reaches only subscriptions that are still open."""
        if self.closed:
            return
        self.closed = True
        for _, queue in self._subscribers:
            await queue.put(_CLOSED)

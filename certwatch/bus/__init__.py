"""The bus: how sensor events reach processors and alerts reach the SIEM.

One protocol, several transports: ``memory`` (in-process, the embedded default and the twin
every unit test uses), Kafka and MQTT. The sensor and the processors never see a transport;
only ``certwatch`` wires them to one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

DEAD_LETTER_TOPIC = "certwatch.deadletter"
"""Messages a processor could not decode, with the reason in a header."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message as consumed: where it came from and its raw bytes."""

    topic: str
    key: str
    value: bytes
    partition: int = 0
    offset: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


class Bus(Protocol):
    async def publish(
        self, topic: str, key: str, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        """Hand a message to the transport (may wait for room; never drops silently)."""
        ...

    def subscribe(self, topics: Sequence[str], group: str) -> AsyncIterator[Message]:
        """Messages of ``topics`` for consumer group ``group``, until the bus is closed."""
        ...

    async def commit(self, message: Message) -> None:
        """Everything up to and including ``message`` is processed (at-least-once)."""
        ...

    async def close(self) -> None:
        """No more messages will be published; subscribers end once they have drained."""
        ...

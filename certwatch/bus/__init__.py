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


class BusError(Exception):
    """A transport failed. ``retriable`` says whether trying again later can succeed.

        BusError
         ├── BrokerUnavailable   the broker cannot be reached now (retriable)
         └── BusConfigError      the settings cannot work (bad credentials, TLS...) (not)

    Transports translate their library's exceptions into these; services see only these.
    """

    retriable: bool = False


class BrokerUnavailable(BusError):
    retriable = True


class BusConfigError(BusError):
    retriable = False
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

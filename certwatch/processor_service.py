"""``certwatch processor``: a member of the consumer group that turns events into alerts.

Alerts go to the alert topic of the same bus and, optionally, to MQTT for light fan-out.
At-least-once: offsets are committed only after the alerts an event caused were
acknowledged (see :class:`certwatch.services.ProcessorService`).
"""

from __future__ import annotations

import asyncio
import logging

from certwatch.bus import Bus
from certwatch.bus.mqtt import MqttAlertPublisher
from certwatch.sensor_service import until_stopped
from certwatch.services import ProcessorService
from processors.engine import Processor

log = logging.getLogger("certwatch.processor")


def processor_service(
    bus: Bus, processor: Processor, *, group: str, mqtt: MqttAlertPublisher | None
) -> ProcessorService:
    """The consumer-group member: alerts to the bus's alert topic and, optionally, MQTT."""
    return ProcessorService(processor, bus, group=group,
                            on_alert=mqtt.publish_alert if mqtt is not None else None)


async def run_processor(service: ProcessorService, stop: asyncio.Event) -> ProcessorService:
    """Consume until ``stop`` is set (or the bus ends), then shut down cleanly."""
    processor = service.processor
    work = asyncio.create_task(service.run(), name="processor")
    await until_stopped(work, stop)
    stats = processor.stats
    log.info("processor stopped: %d events, %d alerts, %d dead letters", stats.events,
             sum(stats.alerts.values()), service.dead_letters)
    return service

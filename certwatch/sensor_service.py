"""``certwatch sensor``: a capture (live interface or pcap) published to a bus.

Capture and publishing are decoupled by :class:`certwatch.publisher.SensorPublisher`: the
capture loop never waits for the broker. On SIGTERM/SIGINT the loop stops, open handshakes
are reported, and what the publisher holds is flushed before exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence

from certwatch.progress import Progress
from certwatch.publisher import SensorPublisher
from certwatch.replay import ReplayReport, collector_tuned, replay
from schemas.events import SensorEvent
from sensor.capture import LiveCapture
from sensor.sensor import Sensor

log = logging.getLogger("certwatch.sensor")

LIVE_BATCH = 1024  # frames read per wake-up before events are handed on
TICK = 1.0  # seconds between idle-flow sweeps on a quiet link


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT end the capture loop cleanly (the publisher then flushes)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def publish_captures(
    paths: Sequence[str], sensor: Sensor, publisher: SensorPublisher, *, speed: float | None
) -> ReplayReport:
    """Replay capture files into the publisher, as fast as possible or paced."""

    async def offer(event: SensorEvent) -> None:
        publisher.offer(event)

    return await replay(paths, sensor, offer, Progress(), speed=speed)


async def until_stopped(work: asyncio.Task[ReplayReport] | asyncio.Task[None],
                        stop: asyncio.Event) -> bool:
    """Wait for ``work`` to finish or ``stop`` to be set (then cancel the work). True when
    the work ran to its end; when it ended by raising, that exception is raised here (a
    service that failed must not look like one that was asked to stop)."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if work in done:
        work.result()
        return True
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return False


async def capture_live(
    capture: LiveCapture, sensor: Sensor, publisher: SensorPublisher, stop: asyncio.Event
) -> None:
    """Read the interface until ``stop`` is set, handing every event to the publisher.

    The loop runs with the garbage collector tuned as for a replay
    (:func:`certwatch.replay.collector_tuned`): otherwise every collection of the older
    generations walks the sensor's long-lived flow table again (10-30% of a replay's CPU)."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(capture.fileno(), readable.set)
    try:
        with collector_tuned():
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(readable.wait(), TICK)
                readable.clear()
                for timestamp, linktype, data in capture.read_available(LIVE_BATCH):
                    sensor.process(timestamp, linktype, data)
                sensor.advance(time.time())
                for event in sensor.drain():
                    publisher.offer(event)
    finally:
        loop.remove_reader(capture.fileno())
    for event in sensor.finish():
        publisher.offer(event)
    received, dropped = capture.stats()
    log.info("capture stopped: %d packets received by the kernel, %d dropped by it",
             received, dropped)

"""``certwatch watch``: live alerts from one interface, in one process, with no broker.

The sensor reads the interface (AF_PACKET, :func:`sensor.capture.open_live`) and the
processors run in the same process behind the in-memory bus, as in ``certwatch replay``;
each alert is written as a JSON line and flushed the moment it is raised, so a pipe or a
``tail -f`` sees it at once.

Capture never waits for the processors. The capture loop hands handshake events to a
:class:`certwatch.publisher.SensorPublisher` (a plain call that never blocks); its own task
moves them onto the bus, whose bounded subscription feeds the processors. When the
processors fall behind, the subscription fills, then the publisher's queue behind it, and
then the publisher drops its oldest events and counts them (an anomaly event and the
summary say how many). Frames can still be lost in the kernel when the whole process
cannot keep up: the kernel counts those and the summary reports them.

Imports: this module is imported on every ``certwatch`` start to register the command, so
it imports only the standard library at the top; the pipeline is imported when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from pydantic import BaseModel

    from certwatch.metrics import Collector
    from certwatch.publisher import SensorPublisher
    from certwatch.replay import ReplayReport
    from certwatch.services import ProcessorService
    from processors.engine import Processor
    from schemas.alerts import AlertEvent
    from schemas.events import SensorEvent
    from sensor.capture import LiveCapture
    from sensor.sensor import Sensor

log = logging.getLogger("certwatch.watch")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

LIVE_BATCH = 1024
"""Frames read per wake-up before the event loop runs the processors' side again."""
TICK = 1.0
"""Seconds between idle-flow sweeps on a quiet link (and the longest a stop can wait)."""
FINAL_DRAIN_FRAMES = 65_536
"""After a stop, frames the kernel already holds are still read, up to this many: a busy
link never runs dry, so without a bound a stop could wait forever."""
DEFAULT_MAX_QUEUED = 100_000
"""Handshake events held for the processors before the oldest are dropped (and counted)."""


def add_watch_command(commands: argparse._SubParsersAction[Any]) -> None:
    """Register ``certwatch watch`` (cheap: the pipeline is imported only when it runs)."""
    from certwatch.cli_services import add_live_capture_flags, add_stats_interval_flag
    from certwatch.metrics import add_metrics_flags
    from sensor.config import DEFAULT_MAX_FLOWS

    wp = commands.add_parser(
        "watch", help="live alerts from an interface, in one process (no broker)",
        description="Capture on an interface and run the detectors in the same process; "
        "alerts are printed as JSON lines as they happen. SIGINT/SIGTERM (or --duration) "
        "end it with a summary. Capture never waits for the detectors: when they fall "
        "behind, the oldest events are dropped and counted.")
    wp.add_argument("--interface", "-i", required=True, metavar="IF",
                    help="interface to capture on (AF_PACKET)")
    wp.add_argument("--bpf", default="tcp", help="capture filter (default: %(default)s)")
    add_live_capture_flags(wp)
    add_stats_interval_flag(wp)
    wp.add_argument("--policy", type=Path, default=None,
                    help="policy YAML (default: system trust store, every rule on)")
    wp.add_argument("--alerts", default="-", metavar="PATH",
                    help="where to write alerts as JSON lines (default: - for stdout)")
    wp.add_argument("--events", default=None, metavar="PATH",
                    help="also write every sensor event as JSON lines (- for stdout)")
    wp.add_argument("--no-alerts", action="store_true",
                    help="run the sensor alone, no detectors")
    wp.add_argument("--sensor-name", default=None, help="observer.name (default: hostname)")
    wp.add_argument("--user", default=None,
                    help="drop to this user once the capture socket is open")
    wp.add_argument("--allow-root", action="store_true",
                    help="keep running as root (not recommended)")
    wp.add_argument("--duration", type=_seconds, default=None, metavar="SECONDS",
                    help="stop after this long (default: until SIGINT/SIGTERM)")
    wp.add_argument("--max-queued", type=int, default=DEFAULT_MAX_QUEUED,
                    help="events held for the detectors (default: %(default)s)")
    wp.add_argument("--max-flows", type=int, default=DEFAULT_MAX_FLOWS,
                    help="flows tracked at once (default: %(default)s)")
    wp.add_argument("--foxio", action="store_true", help="JA4S/JA4X (FoxIO License 1.1)")
    add_metrics_flags(wp)
    wp.set_defaults(handler=cmd_watch)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"certwatch: {message}", file=sys.stderr)
    return code


def cmd_watch(args: argparse.Namespace) -> int:
    """``certwatch watch``: 0 when stopped by a signal or ``--duration``, 1 when the capture
    failed (the interface went away), 2 for bad arguments, policy or output path."""
    # Everything the run needs is imported before privileges are dropped: afterwards the
    # interpreter's modules may not be readable (see sensor.privileges).
    _preload(args)
    from certwatch.cli_services import live_capture_options
    from certwatch.replay import summary
    from processors.engine import Processor
    from processors.policy import Policy
    from processors.policy_file import PolicyError, load_policy
    from processors.registry import DETECTORS
    from sensor.capture import open_live
    from sensor.config import SensorConfig
    from sensor.errors import CaptureError
    from sensor.privileges import PrivilegeError, drop_privileges, refuse_root
    from sensor.sensor import Sensor

    try:
        policy = load_policy(args.policy) if args.policy else Policy()
    except PolicyError as error:
        return _fail("; ".join(error.problems))
    config = SensorConfig(**({"name": args.sensor_name} if args.sensor_name else {}),
                          foxio_fingerprints=args.foxio, max_flows=args.max_flows,
                          stats_interval=args.stats_interval)
    sensor = Sensor(config)
    processor = None if args.no_alerts else Processor(policy, DETECTORS)
    try:
        capture = open_live(args.interface, **live_capture_options(args))
    except (CaptureError, ValueError) as error:
        return _fail(str(error))
    with ExitStack() as stack:
        stack.callback(capture.close)
        try:
            if args.user:
                drop_privileges(args.user)
            refuse_root(args.allow_root)
            events, alerts = _open_outputs(args, stack)
        except PrivilegeError as error:
            return _fail(str(error))
        except OSError as error:
            return _fail(f"cannot write to {error.filename}: {error.strerror}")
        import asyncio

        outcome = asyncio.run(_watch(args, capture, sensor, processor, events, alerts))
        capture.close()
    print(summary(outcome.report, sensor, processor.stats if processor else None,
                  title=f"certwatch watch {args.interface}"), file=sys.stderr)
    received, dropped = capture.stats()
    print(f"  kernel         {received:,} frames passed the filter; {dropped:,} dropped by "
          f"the kernel (socket buffer full)\n"
          f"  queue          {outcome.queue_dropped:,} events dropped while the detectors "
          f"were behind", file=sys.stderr)
    return outcome.status


_RUN_MODULES = (
    "encodings.idna",  # resolving names after the drop needs it (see certwatch.cli_services)
    "certwatch.bus.memory", "certwatch.metrics", "certwatch.output", "certwatch.publisher",
    "certwatch.replay", "certwatch.services", "schemas.events",
)


def _preload(args: argparse.Namespace) -> None:
    """Import what the run imports lazily (and prometheus_client when /metrics is served)."""
    modules = _RUN_MODULES + (("prometheus_client", "prometheus_client.core")
                              if args.metrics_port is not None else ())
    for name in modules:
        importlib.import_module(name)


def _open_outputs(
    args: argparse.Namespace, stack: ExitStack
) -> tuple[LineWriter | None, LineWriter | None]:
    """The events writer (``--events``, else None) and the alerts writer (None with
    ``--no-alerts``); one writer when both name the same path."""
    events = (stack.enter_context(LineWriter(args.events))
              if args.events is not None else None)
    if args.no_alerts:
        return events, None
    if events is not None and args.alerts == args.events:
        return events, events
    return events, stack.enter_context(LineWriter(args.alerts))


class LineWriter:
    """JSON lines on ``path`` (``-``: stdout), flushed one by one: a person, or a SIEM agent
    reading a pipe, waits for each alert, and stdout to a pipe is otherwise block-buffered.
    The text is :class:`certwatch.output.JsonLinesWriter`'s (the same documents as
    ``certwatch replay``); its fragment cache is reused, its stream is not."""

    def __init__(self, path: str) -> None:
        from certwatch.output import JsonLinesWriter

        self._json = JsonLinesWriter("-")  # used to serialise only: it never writes here
        self._owned = path != "-"
        self._stream: IO[str] = (
            open(path, "w", encoding="utf-8") if self._owned else sys.stdout)  # noqa: SIM115
        self.written = 0

    def write(self, model: BaseModel) -> None:
        self._stream.write(self._json.to_json(model) + "\n")
        self._stream.flush()
        self.written += 1

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(slots=True)
class WatchOutcome:
    """What :func:`_watch` hands back for the summary and the exit status."""

    report: ReplayReport
    queue_dropped: int
    status: int


async def _watch(
    args: argparse.Namespace,
    capture: LiveCapture,
    sensor: Sensor,
    processor: Processor | None,
    events: LineWriter | None,
    alerts: LineWriter | None,
) -> WatchOutcome:
    import asyncio

    from certwatch.metrics import (
        KernelCollector,
        ProcessorCollector,
        SensorCollector,
        start_metrics,
    )
    from certwatch.replay import ReplayReport
    from sensor.errors import CaptureError

    loop = asyncio.get_running_loop()
    pipeline = AlertPipeline(processor, alerts, sensor, events, max_queued=args.max_queued)
    live = LiveLoop(capture, sensor, pipeline.offer)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, live.stop)
    if args.duration is not None:
        loop.call_later(args.duration, live.stop)
    collectors: list[Collector] = [SensorCollector(sensor, pipeline.publisher),
                                KernelCollector(capture)]
    if processor is not None and pipeline.service is not None:
        service = pipeline.service
        collectors.append(ProcessorCollector(processor, lambda: service.dead_letters,
                                             busy=lambda: service.busy_seconds))
    metrics = await start_metrics(args, collectors, lambda: (True, "capturing"))
    pipeline.start()
    log.info("watching %s (filter %r); %s", capture.interface, capture.bpf,
             "no detectors" if processor is None else f"alerts to {args.alerts}")
    started, status = time.perf_counter(), EXIT_OK
    try:
        await live.run()
    except CaptureError as error:  # e.g. the interface went away
        print(f"certwatch: {error}", file=sys.stderr)
        status = EXIT_FAILURE
    finally:
        await pipeline.close()
        if metrics is not None:
            await metrics.close()
    report = ReplayReport(captures=1, events=live.events,
                          seconds=time.perf_counter() - started)
    return WatchOutcome(report, pipeline.dropped, status)


class AlertPipeline:
    """Handshake events in, without ever making the caller wait; alerts out, written and
    flushed one by one. With no processor (``--no-alerts``) events are only written."""

    def __init__(
        self,
        processor: Processor | None,
        alerts: LineWriter | None,
        sensor: Sensor,
        events: LineWriter | None,
        *,
        max_queued: int,
    ) -> None:
        from certwatch.bus.memory import MemoryBus
        from certwatch.publisher import SensorPublisher
        from certwatch.services import ProcessorService
        from schemas.events import HandshakeEvent, TrafficStatsEvent

        self._judged = (HandshakeEvent, TrafficStatsEvent)
        self._sensor, self._events, self._alerts = sensor, events, alerts
        self.bus = MemoryBus()
        self.service: ProcessorService | None = None
        self.publisher: SensorPublisher | None = None
        self._consumer: asyncio.Task[None] | None = None
        if processor is not None:
            self.service = ProcessorService(processor, self.bus, on_alert=self._write_alert)
            self.publisher = SensorPublisher(self.bus, max_queued=max_queued,
                                             drop_report=self._drop_report)

    @property
    def dropped(self) -> int:
        return self.publisher.dropped if self.publisher is not None else 0

    def start(self) -> None:
        if self.service is not None and self.publisher is not None:
            # Subscribed before anything is published: the in-memory bus keeps no history.
            import asyncio

            messages = self.service.subscribe()
            self._consumer = asyncio.create_task(self.service.run(messages), name="processors")
            self.publisher.start()

    def offer(self, event: SensorEvent) -> None:
        """Write ``event`` (``--events``) and queue it for the processors when they use it:
        they read handshake and traffic-statistics events only, so nothing else is encoded
        for them."""
        if self._events is not None:
            self._events.write(event)
        if self.publisher is not None and isinstance(event, self._judged):
            self.publisher.offer(event)

    async def close(self) -> None:
        """Hand the processors what is queued (the publisher's deadline bounds the wait),
        end their subscription, and wait until they have written the last alert."""
        if self.publisher is not None:
            await self.publisher.close()
        await self.bus.close()
        if self._consumer is not None:
            await self._consumer

    async def _write_alert(self, alert: AlertEvent) -> None:
        if self._alerts is not None:
            self._alerts.write(alert)

    def _drop_report(self, count: int) -> SensorEvent:
        event = self._sensor.report_drops(
            "publish_dropped", "events dropped while the detectors were behind", count)
        if self._events is not None:
            self._events.write(event)
        return event


class LiveLoop:
    """Reads the capture socket when it is readable, feeds the sensor, hands events on.

    One wake-up reads at most :data:`LIVE_BATCH` frames, then gives the event loop back so
    the processors' task runs between batches. :meth:`stop` (a signal handler) ends the loop
    at its next wake-up; frames the kernel already holds are still read (at most
    :data:`FINAL_DRAIN_FRAMES`), then unfinished handshakes are reported."""

    def __init__(self, capture: LiveCapture, sensor: Sensor,
                 emit: Callable[[SensorEvent], None]) -> None:
        import asyncio

        self.capture, self.sensor, self.emit = capture, sensor, emit
        self.events = 0
        self._stopping = False
        self._wake = asyncio.Event()
        self._tick_handle: asyncio.TimerHandle | None = None

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        import asyncio

        from certwatch.replay import collector_tuned

        loop = asyncio.get_running_loop()
        fd = self.capture.fileno()
        loop.add_reader(fd, self._wake.set)
        self._tick_handle = loop.call_later(TICK, self._tick)
        try:
            # The collector tuned as for a replay: its older generations would otherwise walk
            # the long-lived flow table again and again (see certwatch.replay).
            with collector_tuned():
                while not self._stopping:
                    await self._wake.wait()
                    self._wake.clear()
                    self._pump(LIVE_BATCH)
                drained = 0
                while drained < FINAL_DRAIN_FRAMES and (read := self._pump(LIVE_BATCH)):
                    drained += read
        finally:
            if self._tick_handle is not None:
                self._tick_handle.cancel()
            loop.remove_reader(fd)
        self._hand_on(self.sensor.finish())

    def _tick(self) -> None:
        # A quiet link still needs the clock to move: idle flows expire and their
        # unfinished handshakes are reported (Sensor.advance, at the next wake-up).
        import asyncio

        self._wake.set()
        self._tick_handle = asyncio.get_running_loop().call_later(TICK, self._tick)

    def _pump(self, limit: int) -> int:
        frames = self.capture.read_available(limit)
        process = self.sensor.process
        for timestamp, linktype, data in frames:
            process(timestamp, linktype, data)
        self.sensor.advance(time.time())
        if self.sensor.queue:
            self._hand_on(self.sensor.drain())
        return len(frames)

    def _hand_on(self, events: list[SensorEvent]) -> None:
        emit = self.emit
        for event in events:
            emit(event)
        self.events += len(events)

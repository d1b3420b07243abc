"""``certwatch sensor --workers N``: N capture processes supervised by the parent.

Live (``--interface``): the parent opens N AF_PACKET sockets in one PACKET_FANOUT hash
group (the kernel's flow hash is symmetric, so each connection reaches one socket whole),
drops privileges, refuses root as the single sensor does, then forks one worker per
socket. Each worker is a whole ``certwatch sensor`` (``cli_services.cmd_sensor`` on its
socket): its own sensor with 1/N of ``--max-flows``, its own publisher with its own
drop-oldest queue of ``--max-queued`` events (so capture never waits on the broker), and
``--metrics-port`` + its index as its metrics port. Anomaly rate limits and certificate
announcements are per worker: a certificate seen by two workers is announced twice under
the same key on the certificate topic.

Supervision: SIGTERM or SIGINT to the parent is passed to every worker, which flushes its
publisher and exits; the parent waits (then SIGKILLs after :data:`STOP_GRACE` s) and exits 0.
A worker that dies otherwise is logged and restarted on the same socket, which the parent
keeps open (frames hashed to it meanwhile wait in its buffer, or are counted as kernel
drops); more than :data:`MAX_RESTARTS` deaths within :data:`RESTART_WINDOW` s stop the
sensor with status 1, since a worker that keeps dying will not be fixed by restarting it.

Files (``--pcap``): as ``certwatch replay --workers`` (``certwatch.workers``), the merged
events going to one publisher in the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from certwatch.bus import Bus
from certwatch.bus.kafka import KafkaBus
from certwatch.metrics import SensorCollector, start_metrics
from certwatch.progress import Progress
from certwatch.publisher import SensorPublisher
from certwatch.replay import summary
from certwatch.sensor_service import stop_on_signals
from certwatch.settings import KafkaSettings
from certwatch.workers import Merger, WorkerError, replay_workers, workers_refuse
from schemas.events import SensorEvent
from sensor.capture import LiveCapture, open_live
from sensor.config import DEFAULT_MAX_BUFFERED_BYTES, SensorConfig

log = logging.getLogger("certwatch.workers")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_GRACE = 15.0
POLL = 0.5  # seconds between looks at the stop flag while workers run

StartWorker = Callable[[int], BaseProcess]


class Supervisor:
    """Starts ``count`` workers with ``start(index)``, restarts the ones that die, stops
    them all on SIGTERM/SIGINT. :meth:`run` returns the exit status (see module doc)."""

    def __init__(self, start: StartWorker, count: int, *, max_restarts: int = MAX_RESTARTS,
                 window: float = RESTART_WINDOW, grace: float = STOP_GRACE) -> None:
        self.start, self.count = start, count
        self.max_restarts, self.window, self.grace = max_restarts, window, grace
        self.restarts = 0
        self._deaths: deque[float] = deque()
        self._stopping = False

    def stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        self._stopping = True

    def run(self) -> int:
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        workers = [self.start(index) for index in range(self.count)]
        status = EXIT_OK
        try:
            while not self._stopping:
                wait([w.sentinel for w in workers], timeout=POLL)
                for index, worker in enumerate(workers):
                    if self._stopping or worker.is_alive():
                        continue
                    worker.join()
                    if not self._may_restart(index, worker):
                        self._stopping, status = True, EXIT_FAILURE
                        break
                    workers[index] = self.start(index)
                    self.restarts += 1
        finally:
            self._stop_all(workers)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return status

    def _may_restart(self, index: int, worker: BaseProcess) -> bool:
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > self.window:
            self._deaths.popleft()
        code = worker.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else \
            f"exit status {code}"
        if len(self._deaths) > self.max_restarts:
            log.error("worker %d (pid %s) died (%s); %d deaths within %.0f s: stopping",
                      index, worker.pid, how, len(self._deaths), self.window)
            return False
        log.error("worker %d (pid %s) died (%s); restarting it", index, worker.pid, how)
        return True

    def _stop_all(self, workers: list[BaseProcess]) -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: the worker flushes its publisher
        deadline = time.monotonic() + self.grace
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.error("worker (pid %s) did not stop within %.0f s: killing it",
                          worker.pid, self.grace)
                worker.kill()
                worker.join()


def live_workers(args: argparse.Namespace,
                 run_one: Callable[[argparse.Namespace, LiveCapture], int]) -> int:
    """``certwatch sensor --interface IF --workers N``; ``run_one(args, capture)`` is the
    single sensor (``cmd_sensor``) run by each worker. Raises what opening the sockets,
    dropping privileges or refusing root raise (CaptureError, PrivilegeError)."""
    from certwatch.cli_services import live_capture_options
    from sensor.privileges import drop_privileges, refuse_root

    group = os.getpid() & 0xFFFF  # one fanout group per sensor instance on this host
    captures: list[LiveCapture] = []
    try:
        for _ in range(args.workers):
            captures.append(open_live(args.interface, **live_capture_options(args),
                                      fanout_group=group))
        if args.user:
            drop_privileges(args.user)
        refuse_root(args.allow_root)
        context = multiprocessing.get_context("fork")

        def start(index: int) -> BaseProcess:
            worker_args = worker_namespace(args, index)
            process = context.Process(target=_live_worker, name=f"certwatch-sensor-{index}",
                                      args=(run_one, worker_args, captures[index]))
            process.start()
            return process

        return Supervisor(start, args.workers).run()
    finally:
        for capture in captures:
            capture.close()


def worker_namespace(args: argparse.Namespace, index: int) -> argparse.Namespace:
    """Worker ``index``'s options: 1/N of the flow table and of the buffer budget, its own
    metrics port, privileges already dropped by the parent, its index (``worker_index``) for
    the ids of the traffic statistics it reports."""
    worker = argparse.Namespace(**vars(args))
    worker.workers = 1
    worker.worker_index = index
    worker.user = None
    worker.max_flows = max(1, args.max_flows // args.workers)
    worker.max_buffered_bytes = max(
        1, getattr(args, "max_buffered_bytes", DEFAULT_MAX_BUFFERED_BYTES) // args.workers)
    if args.metrics_port:  # 0 (any free port) stays 0
        worker.metrics_port = args.metrics_port + index
    return worker


def sensor_config(args: argparse.Namespace) -> SensorConfig:
    """The sensor's settings from ``certwatch sensor``'s options, or from a worker's
    (:func:`worker_namespace`)."""
    return SensorConfig(**({"name": args.sensor_name} if args.sensor_name else {}),
                        foxio_fingerprints=args.foxio, max_flows=args.max_flows,
                        max_buffered_bytes=getattr(args, "max_buffered_bytes",
                                                   DEFAULT_MAX_BUFFERED_BYTES),
                        stats_interval=getattr(args, "stats_interval", 60.0),
                        worker=getattr(args, "worker_index", None))


def _live_worker(run_one: Callable[[argparse.Namespace, LiveCapture], int],
                 args: argparse.Namespace, capture: LiveCapture) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):  # not the parent's supervisor handler
        signal.signal(signum, signal.SIG_DFL)
    sys.exit(run_one(args, capture))


# -- ``certwatch sensor --pcap FILE --workers N`` -------------------------------------------


class EncodedPublisher(SensorPublisher):
    """A publisher that also takes events already encoded (a worker's JSON text)."""

    def offer_encoded(self, topic: str, key: str, value: bytes) -> None:
        """:meth:`SensorPublisher.offer` for an encoded event: never waits, drops the
        oldest when full."""
        self._queue.append((topic, key, value, ()))
        self._trim()
        self._wakeup.set()


def pcap_workers(args: argparse.Namespace, settings: KafkaSettings) -> int:
    """``certwatch sensor --pcap FILE... --workers N``: merged events to one publisher."""
    problem = workers_refuse(args.pcap, args.speed)
    if problem:
        print(f"certwatch: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return asyncio.run(_publish_pcaps(args, sensor_config(args), KafkaBus(settings)))


async def _publish_pcaps(args: argparse.Namespace, config: SensorConfig, bus: Bus) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    merger: Merger | None = None

    def drop_report(count: int) -> SensorEvent:
        assert merger is not None
        return merger.sensor.report_drops(
            "publish_dropped", "events dropped while the broker was unreachable", count)

    publisher = EncodedPublisher(bus, max_queued=args.max_queued, drop_report=drop_report)

    async def emit(topic: str, key: str, text: str) -> None:
        publisher.offer_encoded(topic, key, text.encode())

    merger = Merger(config, args.workers, emit)
    publisher.start()
    metrics = await start_metrics(
        args, [SensorCollector(merger.sensor, publisher)],
        lambda: (publisher.broker_reachable, "replaying" if publisher.broker_reachable
                 else "broker unreachable"))
    work = asyncio.create_task(replay_workers(args.pcap, config, args.workers, emit,
                                              Progress(), merger))
    stopper = asyncio.create_task(stop.wait())
    status = EXIT_OK
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            report, sensor = work.result()
            print(summary(report, sensor, title="certwatch sensor"), file=sys.stderr)
            status = EXIT_BAD_INPUT if report.failed else EXIT_OK
        else:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    except WorkerError as error:
        log.error("%s", error)
        status = EXIT_FAILURE
    finally:
        stopper.cancel()
        await publisher.close()
        await bus.close()
        if metrics is not None:
            await metrics.close()
    print(f"certwatch sensor: {publisher.published:,} events published, "
          f"{publisher.dropped:,} dropped", file=sys.stderr)
    return status

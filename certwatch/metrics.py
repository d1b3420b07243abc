"""``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` for the sensor and the processor.

Nothing is counted twice: the collectors read the counters the sensor, the publisher and the
processor already keep, at scrape time, so the per-packet path pays nothing for metrics.
The HTTP server is a few lines of asyncio on the service's own loop (opt-in port).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    # asyncio too: `certwatch replay` imports this module for its summary counters only.
    import asyncio

    # prometheus_client is imported where metrics are made or served, not with this module:
    # `certwatch replay` without --metrics-port never needs it (start-up time and memory).
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

    from certwatch.publisher import SensorPublisher
    from processors.engine import Processor
    from sensor.capture import LiveCapture
    from sensor.sensor import Sensor

log = logging.getLogger("certwatch.metrics")

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, reason): e.g. broker reachable and capture running."""
ConsumerLag = Callable[[], Mapping[tuple[str, int], int]]
"""Returns messages not yet processed per (topic, partition) (``KafkaBus.consumer_lag``)."""


class Collector(Protocol):
    """What a Prometheus registry asks of a collector (``prometheus_client``'s own
    ``Collector`` is an ABC whose import would cost every command its start-up)."""

    def collect(self) -> Iterator[Metric]: ...


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(f"certwatch_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"certwatch_{name}", doc, value=value)


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(f"certwatch_{name}", doc, labels=[label])
    for key, count in sorted(values.items()):
        family.add_metric([key], count)
    return family


class SensorCollector:
    """The sensor's counters (and its publisher's, when it publishes to a broker)."""

    def __init__(self, sensor: Sensor, publisher: SensorPublisher | None = None) -> None:
        self.sensor = sensor
        self.publisher = publisher

    def collect(self) -> Iterator[Metric]:
        stats, flows = self.sensor.stats, self.sensor.flows
        yield _counter("packets", "Frames read from the capture", stats.packets)
        yield _counter("bytes", "Bytes of the frames read from the capture", stats.bytes)
        yield _counter("non_tcp_packets", "Frames that were not TCP over IP", stats.not_tcp)
        yield _gauge("flows_active", "Flows in the flow table", len(flows))
        yield _counter("flows", "Flows created", flows.created)
        yield _counter("flows_evicted", "Flows evicted because the table was full",
                       flows.evicted)
        yield _counter("flows_expired", "Flows forgotten after their idle timeout",
                       flows.expired)
        yield _labelled("handshakes", "TLS handshakes reported, by negotiated version",
                        "version", dict(stats.handshakes))
        yield _counter("handshakes_established", "Handshakes that completed", stats.established)
        yield _counter("certificates", "Certificates announced (first seen)", stats.certificates)
        yield _labelled("anomalies", "Sensor anomalies by kind", "kind",
                        dict(self.sensor.anomalies.totals))
        if self.publisher is not None:
            yield _gauge("publish_queue_depth", "Events waiting for the broker",
                         self.publisher.queued)
            yield _counter("events_published", "Events acknowledged by the broker",
                           self.publisher.published)
            yield _counter("events_dropped", "Events dropped while the broker was away",
                           self.publisher.dropped)


class ProcessorCollector:
    """The processor's counters, and its consumer lag when it consumes from Kafka."""

    def __init__(self, processor: Processor, dead_letters: Callable[[], int],
                 lag: ConsumerLag | None = None, *,
                 busy: Callable[[], float] | None = None) -> None:
        self.processor = processor
        self.dead_letters = dead_letters
        self.lag = lag
        self.busy = busy

    def collect(self) -> Iterator[Metric]:
        stats = self.processor.stats
        yield _counter("events_processed", "Handshake events run through the detectors",
                       stats.events)
        yield _labelled("alerts", "Alerts published, by rule", "rule", dict(stats.alerts))
        yield _counter("alerts_suppressed", "Repeated findings suppressed", stats.suppressed)
        yield _counter("dead_letters", "Messages sent to the dead-letter topic",
                       self.dead_letters())
        yield _labelled("detector_errors", "Detector failures, by detector", "detector",
                        dict(stats.detector_errors))
        if self.busy is not None:
            yield _counter("processing_seconds", "Time spent decoding and judging events "
                           "(rate: how busy the processor is; per event: its cost)",
                           self.busy())
        if self.lag is not None:
            from prometheus_client.core import GaugeMetricFamily

            # Labels are the topic and partition only: nothing from settings or messages.
            family = GaugeMetricFamily(
                "certwatch_processor_consumer_lag", "Messages on the broker not yet processed "
                "and committed by this processor (high-water mark minus next offset)",
                labels=["topic", "partition"])
            for (topic, partition), lag in sorted(self.lag().items()):
                family.add_metric([topic, str(partition)], lag)
            yield family


class KernelCollector:
    """``certwatch_capture_kernel_{received,dropped}``: the socket's counts at scrape time
    (frames the kernel dropped never reach the sensor, so only the kernel can say)."""

    def __init__(self, capture: LiveCapture) -> None:
        self.capture = capture

    def collect(self) -> Iterator[Metric]:
        received, dropped = self.capture.stats()
        yield _counter("capture_kernel_received", "Frames that passed the capture filter",
                       received)
        yield _counter("capture_kernel_dropped", "Frames the kernel dropped: socket buffer "
                       "full", dropped)


class MetricsServer:
    """``GET /metrics``, ``/healthz`` (the process answers) and ``/readyz`` (ready says so)."""

    def __init__(self, registry: CollectorRegistry, readiness: Readiness) -> None:
        self.registry = registry
        self.readiness = readiness
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0)."""
        import asyncio

        self._server = await asyncio.start_server(self._handle, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = request.split(b" ", 2)[1].decode("ascii", "replace") if b" " in request else ""
            status, content_type, body = self._respond(path)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass  # a client that went away or sent garbage gets nothing more
        finally:
            writer.close()

    def _respond(self, path: str) -> tuple[str, str, bytes]:
        route = path.split("?", 1)[0]
        if route == "/metrics":
            from prometheus_client import generate_latest

            return "200 OK", "text/plain; version=0.0.4", generate_latest(self.registry)
        if route == "/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if route == "/readyz":
            ready, reason = self.readiness()
            return ("200 OK" if ready else "503 Service Unavailable", "text/plain",
                    f"{reason}\n".encode())
        return "404 Not Found", "text/plain", b"not found\n"


def registry_of(*collectors: Collector) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector as PrometheusCollector

    registry = CollectorRegistry()
    for collector in collectors:
        # The registry only calls ``collect`` (and ``describe`` when there is one): ours are
        # collectors by shape, not by inheritance from the ABC.
        registry.register(cast(PrometheusCollector, collector))
    return registry


def add_metrics_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve /metrics, /healthz and /readyz on this port (0: any free "
                        "port, logged); off by default")
    parser.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDRESS",
                        help="address to serve them on (default: %(default)s)")


async def start_metrics(
    args: argparse.Namespace, collectors: Sequence[Collector], readiness: Readiness
) -> MetricsServer | None:
    """Start the metrics server when ``--metrics-port`` was given."""
    if args.metrics_port is None:
        return None
    server = MetricsServer(registry_of(*collectors), readiness)
    await server.start(args.metrics_host, args.metrics_port)
    return server

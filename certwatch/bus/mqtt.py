"""MQTT fan-out of alerts: every alert also goes to ``<prefix>/<rule.name>`` on a broker.

Kafka stays the system of record; MQTT is the side channel dashboards, phones and home-lab
automations subscribe to (``certwatch/alerts/#``, or one rule: ``certwatch/alerts/cert.expired``).
So this publisher must never hold the processor back: :meth:`MqttAlertPublisher.offer` is a
plain call that never waits, and a background task drains a bounded queue to the broker with
QoS 1 (MQTT 3.1.1 §4.3.2: at-least-once; a PUBLISH whose PUBACK was lost with the connection
is sent again after reconnecting, so a subscriber may see a duplicate ``event.id``).

When the broker is away the queue keeps the newest ``max_queued`` alerts; beyond that the
oldest are dropped and counted in ``dropped``. Reconnection backs off exponentially up to a
cap. The loss of the broker is logged once, and its return once.

This is the only module that imports aiomqtt; its exceptions are translated into
``certwatch.bus.BusError`` (``BrokerUnavailable`` / ``BusConfigError``) before anyone sees them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from certwatch.bus import BrokerUnavailable, BusConfigError, BusError
from certwatch.codec import encode
from schemas.alerts import AlertEvent

log = logging.getLogger("certwatch.mqtt")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}  # IANA registrations for MQTT / MQTT over TLS
DEFAULT_TOPIC_PREFIX = "certwatch/alerts"
_QUERY_KEYS = frozenset({"client_id", "ca_file", "qos", "keepalive"})
# CONNACK codes that no retry will fix without a configuration change (MQTT 5 §3.2.2.2; paho
# maps the 3.1.1 return codes 4 and 5 onto 134 and 135).
_REFUSED_FOR_GOOD = {
    133: "check client_id in the MQTT URL",
    134: "check the username and password in the MQTT URL",
    135: "check the username and password in the MQTT URL, and the broker's ACL",
    138: "this client is banned by the broker",
    140: "the broker wants another authentication method",
}
_WILDCARDS = str.maketrans({"+": "_", "#": "_", "\x00": "_"})


class MqttSettings(BaseModel):
    """Where alerts go. Built by :func:`parse_mqtt_url`; ``repr`` never shows the password."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(ge=1, le=65535)
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = Field(default=None, description="CA bundle (default: system store)")
    client_id: str | None = Field(default=None, description="default: random per connection")
    qos: int = Field(default=1, ge=0, le=2, description="1: at-least-once (MQTT §4.3.2)")
    keepalive: int = Field(default=60, ge=5, le=65535)

    def redacted_url(self) -> str:
        """The URL for logs: scheme, user, host, port and prefix, never the password."""
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}/{self.topic_prefix}"


def parse_mqtt_url(url: str) -> MqttSettings:
    """``mqtt[s]://[user[:password]@]host[:port][/topic/prefix][?client_id=&ca_file=&qos=&
    keepalive=]`` → settings. ``mqtts`` means TLS; ports default to 1883 / 8883; the prefix
    defaults to ``certwatch/alerts``. User and password are percent-decoded.

    Raises ``BusConfigError`` naming the problem for anything that cannot work.
    """
    parts = urlsplit(url)
    if "#" in url:  # a URL fragment to urlsplit, but surely meant as an MQTT wildcard
        raise BusConfigError("MQTT topic prefix may not hold +, # or empty levels: it is where "
                             "alerts are published, not a subscription filter")
    if parts.scheme not in DEFAULT_PORTS:
        raise BusConfigError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme!r}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as error:
        raise BusConfigError(f"MQTT URL has a bad port: {error}") from error
    if not parts.hostname:
        raise BusConfigError("MQTT URL has no host (mqtt://host:1883/topic/prefix)")
    if parts.password is not None and not parts.username:
        raise BusConfigError("MQTT URL has a password but no username")
    options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    unknown = sorted(set(options) - _QUERY_KEYS)
    if unknown:
        raise BusConfigError(f"MQTT URL: unknown option(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(_QUERY_KEYS))})")
    if "ca_file" in options and parts.scheme != "mqtts":
        raise BusConfigError("MQTT URL: ca_file only makes sense with mqtts://")
    try:
        return MqttSettings(
            host=parts.hostname, port=port, topic_prefix=_topic_prefix(parts.path),
            username=unquote(parts.username) if parts.username else None,
            password=SecretStr(unquote(parts.password)) if parts.password is not None else None,
            tls=parts.scheme == "mqtts", **options,   # pydantic coerces the strings
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise BusConfigError(f"MQTT URL: {problems}") from error


def _topic_prefix(path: str) -> str:
    # MQTT 3.1.1 §4.7.3: a topic name is non-empty and holds no wildcard; empty levels are
    # legal but always a typo here ("certwatch//alerts").
    prefix = unquote(path).strip("/") or DEFAULT_TOPIC_PREFIX
    if any(c in prefix for c in "+#\x00") or "//" in prefix:
        raise BusConfigError(f"MQTT topic prefix {prefix!r} may not hold +, # or empty levels")
    return prefix


def translate(error: aiomqtt.MqttError) -> BusError:
    """aiomqtt's error as ours: a CONNACK refusal of the credentials, identifier or
    authorisation, or a broker certificate that does not verify, is ``BusConfigError``
    (retrying cannot fix it); anything else ``BrokerUnavailable``."""
    code = getattr(error, "rc", None)
    value = getattr(code, "value", code)
    if isinstance(value, int) and value in _REFUSED_FOR_GOOD:
        return BusConfigError(f"broker refused the connection: {error} "
                              f"({_REFUSED_FOR_GOOD[value]})")
    text = str(error) or type(error).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        # aiomqtt flattens the ssl error into its message; a certificate that does not verify
        # against ca_file is a setting to fix, not an outage to wait out.
        return BusConfigError(f"TLS: the broker's certificate does not verify: {text} "
                              "(check ca_file in the MQTT URL)")
    return BrokerUnavailable(text)


Outgoing = tuple[str, bytes]  # (topic, payload)


class MqttAlertPublisher:
    """Publishes alerts to MQTT from a bounded queue; never blocks or fails its caller.

    Counters: ``published`` (PUBACKed), ``dropped`` (oldest discarded at the bound, or still
    queued at :meth:`close`), ``reconnects`` (connections made after the first one).
    ``queued`` is what waits now; ``last_error`` the last reason the broker was unusable.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        max_queued: int = 10_000,
        max_inflight: int = 20,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        if max_queued < 1 or max_inflight < 1:
            raise ValueError("max_queued and max_inflight must be at least 1")
        self.settings = settings
        self.max_queued = max_queued
        self.max_inflight = max_inflight
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.published = 0
        self.dropped = 0
        self.reconnects = 0
        self.connected = False
        self.last_error: BusError | None = None
        self._queue: deque[Outgoing] = deque()
        self._inflight = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._tls: ssl.SSLContext | None = None
        self._ever_connected = False
        self._down_since: float | None = None
        self._dropped_at_loss = 0
        self._closed = False

    @property
    def queued(self) -> int:
        """Alerts not yet acknowledged by the broker (waiting or in flight)."""
        return len(self._queue) + self._inflight

    @property
    def running(self) -> bool:
        """The background task is alive (started, not closed, not crashed)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the background connection; returns at once, whether the broker is there or
        not. A TLS setting that cannot work (unreadable ``ca_file``) raises
        ``BusConfigError`` here rather than on every reconnection."""
        if self._task is not None:
            return
        self._tls_context()
        self._task = asyncio.create_task(self._run(), name="mqtt-alert-publisher")
        self._task.add_done_callback(_report_crash)

    def offer(self, alert: AlertEvent) -> None:
        """Queue ``alert`` for ``<prefix>/<rule.name>``; drop (and count) the oldest queued
        alert if the queue is full. Never waits. A ``+``/``#`` in a rule name becomes ``_``
        (MQTT §4.7.3 forbids wildcards in topic names)."""
        if self._closed:
            raise RuntimeError("MqttAlertPublisher is closed")
        topic = f"{self.settings.topic_prefix}/{alert.rule.name.translate(_WILDCARDS)}"
        self._queue.append((topic, encode(alert)))
        self._trim()
        self._idle.clear()
        self._wakeup.set()

    async def publish_alert(self, alert: AlertEvent) -> None:
        """:meth:`offer` for async callers; returns as soon as the alert is queued."""
        self.offer(alert)

    async def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been acknowledged; False if ``timeout`` ran out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds, then disconnect and stop the
        background task. Alerts still undelivered are counted in ``dropped`` and logged."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and self.queued:
            await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            # wait() rather than await: a crash was already logged by _report_crash, and
            # close() must not raise it; our own cancellation still propagates.
            await asyncio.wait({self._task})
        if self._queue:
            log.error("MQTT %s: closing with %d alerts undelivered",
                      self.settings.redacted_url(), len(self._queue))
            self.dropped += len(self._queue)
            self._queue.clear()
        self._idle.set()

    async def check_connection(self) -> None:
        """Connect once and disconnect: raises ``BusConfigError`` (credentials, TLS) or
        ``BrokerUnavailable`` with the reason, for a CLI that wants to fail fast at startup."""
        try:
            async with self._client():
                pass
        except aiomqtt.MqttError as error:
            raise translate(error) from error

    # -- the background task -------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.settings.tls and self._tls is None:
            ca_file = self.settings.ca_file
            try:
                self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as error:
                raise BusConfigError(f"MQTT TLS: cannot load CA file: {error}") from error
        return self._tls

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host, s.port, username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            identifier=s.client_id, keepalive=s.keepalive, timeout=self.timeout,
            tls_context=self._tls_context(), max_inflight_messages=self.max_inflight,
        )

    async def _run(self) -> None:
        delay = self.backoff_initial
        while True:
            try:
                async with self._client() as client:
                    self._on_connected()
                    delay = self.backoff_initial
                    await self._serve(client)
            except aiomqtt.MqttError as error:
                if self._closed:
                    return  # the disconnect of close() failed: nothing left to do
                failure = translate(error)
                self._on_lost(failure)
                if isinstance(failure, BusConfigError):
                    delay = self.backoff_max  # hammering a broker that refuses us helps no one
            # Jitter so that a fleet of processors does not reconnect in lockstep.
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.backoff_max)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Drain the queue until the connection drops (raises ``aiomqtt.MqttError``)."""
        watcher = asyncio.create_task(_until_disconnected(client))
        drainer = asyncio.create_task(self._drain(client))
        try:
            done, _ = await asyncio.wait({watcher, drainer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, drainer):
                task.cancel()
            await asyncio.gather(watcher, drainer, return_exceptions=True)
        for task in done:
            task.result()  # the error that ended the session

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            count = min(self.max_inflight, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._inflight = count
            sends = [asyncio.create_task(client.publish(topic, payload, qos=self.settings.qos))
                     for topic, payload in batch]
            try:
                await asyncio.wait(sends)
            finally:
                error = await self._settle(batch, sends)
            if error is not None:
                raise error

    async def _settle(
        self, batch: list[Outgoing], sends: list[asyncio.Task[None]]
    ) -> BaseException | None:
        """Count what was acknowledged; put the rest back at the head, in order."""
        for task in sends:
            task.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
        failed = [item for item, task in zip(batch, sends, strict=True)
                  if task.cancelled() or task.exception() is not None]
        self.published += len(batch) - len(failed)
        self._inflight = 0
        self._queue.extendleft(reversed(failed))
        self._trim()
        errors = [e for task in sends if not task.cancelled() and (e := task.exception())]
        return errors[0] if errors else None

    def _trim(self) -> None:
        while len(self._queue) > self.max_queued:
            self._queue.popleft()
            self.dropped += 1

    def _on_connected(self) -> None:
        self.connected = True
        if self._ever_connected:
            self.reconnects += 1
        if self._down_since is not None:
            log.warning("MQTT %s is back after %.1f s; %d alerts queued, %d dropped meanwhile",
                        self.settings.redacted_url(), time.monotonic() - self._down_since,
                        self.queued, self.dropped - self._dropped_at_loss)
        elif not self._ever_connected:
            log.info("MQTT %s connected", self.settings.redacted_url())
        self._ever_connected = True
        self._down_since = None

    def _on_lost(self, failure: BusError) -> None:
        self.connected = False
        self.last_error = failure
        if self._down_since is not None:
            log.debug("MQTT %s still unusable: %s", self.settings.redacted_url(), failure)
            return
        self._down_since = time.monotonic()
        self._dropped_at_loss = self.dropped
        level = logging.ERROR if isinstance(failure, BusConfigError) else logging.WARNING
        log.log(level, "MQTT %s unusable: %s; keeping the newest %d alerts and retrying "
                "(backoff up to %.1f s)", self.settings.redacted_url(), failure,
                self.max_queued, self.backoff_max)


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Returns never; raises ``aiomqtt.MqttError`` once the connection is gone. We subscribe
    to nothing, so the message iterator is aiomqtt's only public disconnection signal."""
    async for message in client.messages:
        log.debug("unexpected MQTT message on %s ignored", message.topic)


def _report_crash(task: asyncio.Task[None]) -> None:
    # A bug in the drain loop must not turn into alerts silently piling up then dropping.
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("MQTT alert publisher stopped: %r; alerts are no longer published", error,
                  exc_info=error)

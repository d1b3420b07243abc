"""The sensor's tunables, with the defaults a tap host should start from."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

DEFAULT_MAX_FLOWS = 262_144
#: The default of :attr:`SensorConfig.max_buffered_bytes`: 64 MiB. A legitimate handshake
#: buffers at most a partial record or a partial Certificate message at a time (typically
#: 1-20 KB), so this holds ~3,000-60,000 flows mid-handshake with a partial message each,
#: and bounds what an attacker filling every flow's buffers can hold (otherwise max_flows x
#: ~1 MiB: 256 KiB out of order and a 256 KiB partial message, per direction).
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """Bounds and switches of one sensor instance.

    Every table and buffer the sensor keeps is bounded by one of these numbers; reaching a
    bound is reported as an anomaly event, never as silent growth.
    """

    name: str = field(default_factory=socket.gethostname)
    max_flows: int = DEFAULT_MAX_FLOWS
    """Flows tracked at once; beyond it the oldest flow is evicted (``flow_table_full``)."""
    max_buffered_per_direction: int = 256 * 1024
    """Out-of-order bytes held per direction while reassembling a handshake."""
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    """Handshake bytes buffered across all flows: out-of-order segments (while detecting
    and while reassembling) and partial TLS records and handshake messages. Beyond it the
    flows holding the most are dropped, largest first, down to 7/8 of the budget, each
    counted as a ``buffer_budget_exceeded`` anomaly (its handshake is reported as far as it
    went, ended by ``buffer_budget``)."""
    detect_segments: int = 8
    """Payload segments looked at for a TLS hello before a flow is deemed not TLS. More than
    one so that TLS after STARTTLS (SMTP, IMAP, POP3, XMPP, LDAP) is found by content."""
    handshake_timeout: float = 60.0
    """Seconds of capture time without a packet before an unfinished handshake is closed."""
    idle_timeout: float = 300.0
    """Seconds of capture time without a packet before a counted flow is forgotten."""
    closed_linger: float = 10.0
    """Seconds a flow closed by FIN/RST is kept so that late segments don't open a new one."""
    certificate_cache_size: int = 10_000
    """Parsed certificates kept (by DER SHA-256); a repeated chain costs a lookup."""
    certificate_event_ttl: float = 86_400.0
    """A certificate is announced again on the certificate topic after this many seconds."""
    anomaly_report_interval: float = 60.0
    """At most one anomaly event per kind per interval of capture time; the rest are counted
    and the count rides on the next event of that kind."""
    foxio_fingerprints: bool = False
    """Compute JA4S and JA4X, which are under the FoxIO License 1.1 (see README)."""
    include_chain_der: bool = True
    """Carry each certificate's DER (base64) in handshake events so detectors need no join."""
    stats_interval: float = 60.0
    """Seconds of capture time per ``certwatch.traffic.stats`` interval (aligned on the Unix
    epoch, so sensors and workers agree on the boundaries); 0 turns the statistics off."""
    worker: int | None = None
    """This sensor's index among the processes sharing one live capture (``--workers``), None
    when it is alone. Each worker counts its own flows, so two workers report the same server
    endpoint for the same interval: the index goes into those ``certwatch.traffic.stats``
    events' ids so that a store keyed by ``event.id`` keeps both parts (they add up)."""
    max_stats_endpoints: int = 10_000
    """Server endpoints reported per interval; the counts of any more are summed into one
    ``traffic_endpoints_limit`` anomaly of the interval."""

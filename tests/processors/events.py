"""Build :class:`~schemas.events.HandshakeEvent` objects for detector tests, without a capture.

::

    from tests.processors.events import handshake_event
    event = handshake_event([leaf.der, intermediate.der], sni="www.example.com",
                            time=datetime(2024, 5, 1, tzinfo=UTC))

The certificates are described exactly as the sensor describes them: each DER goes through
``sensor.x509.describe_certificate`` and the sensor's own ``EventBuilder`` turns the
description into ``tls.server.{hash,x509,...}`` and ``certwatch.tls.server_chain`` entries;
``tls.server.certificate_chain`` carries the base64 DER. So a detector sees the same fields
it would see from a live sensor, and a change of the sensor's mapping shows up here.

Everything else is a plausible TLS 1.2 handshake (ECDHE-RSA-AES128-GCM-SHA256 on x25519,
client 192.0.2.10:50000 -> server 198.51.100.20:443, established). Override any of it with
the keyword arguments, or pass ``update`` (a dict of *Python attribute* paths such as
``{"tls.version": "1.0"}``) for anything else. ``tls13=True`` gives a TLS 1.3 event whose
certificate is encrypted: no chain at all, as the sensor emits it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.events import HandshakeEvent
from sensor.build import EventBuilder
from sensor.config import SensorConfig
from sensor.x509 import describe_certificate

DEFAULT_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_BUILDER = EventBuilder(SensorConfig(name="test-sensor"))


def chain_fields(chain: Sequence[bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(``tls.server`` fields, ``certwatch.tls.server_chain`` entries) for a DER chain,
    as JSON-ready dicts (by alias), described the way the sensor does."""
    infos = [describe_certificate(der) for der in chain]
    entries = [_BUILDER._chain_entry(info, {}).model_dump(by_alias=True, mode="json")
               for info in infos]
    server: dict[str, Any] = {
        "certificate_chain": [base64.b64encode(der).decode("ascii") for der in chain]}
    if infos:
        leaf = infos[0]
        x509 = _BUILDER._x509(leaf)
        server.update(
            hash={"sha256": leaf.sha256, "sha1": leaf.sha1},
            x509=x509.model_dump(by_alias=True, mode="json") if x509 else None,
            subject=leaf.subject, issuer=leaf.issuer,
            not_before=leaf.not_before.isoformat() if leaf.not_before else None,
            not_after=leaf.not_after.isoformat() if leaf.not_after else None,
        )
    return server, entries


def handshake_event(
    chain: Sequence[bytes] = (),
    *,
    sni: str | None = None,
    time: datetime = DEFAULT_TIME,
    server_ip: str = "198.51.100.20",
    server_port: int = 443,
    client_ip: str = "192.0.2.10",
    client_port: int = 50000,
    version: str = "1.2",
    tls13: bool = False,
    update: Mapping[str, Any] | None = None,
) -> HandshakeEvent:
    """A handshake event presenting ``chain`` (DER, leaf first) at ``time``.

    ``tls13=True`` ignores ``chain`` and marks the certificate as encrypted (TLS 1.3).
    ``update`` sets further attributes by dotted Python attribute path after the model is
    built (``{"tls.server.certificate_chain": []}`` drops the DER, for instance)."""
    if tls13:
        chain, version = (), "1.3"
    server, entries = chain_fields(chain)
    document: dict[str, Any] = {
        "@timestamp": time.isoformat(),
        "event": {"id": f"test-{client_port}-{time.timestamp()}", "kind": "event",
                  "category": ["network"], "type": ["connection", "protocol"],
                  "dataset": "certwatch.tls.handshake", "outcome": "success"},
        "observer": {"name": "test-sensor"},
        "source": {"ip": client_ip, "port": client_port},
        "destination": {"ip": server_ip, "port": server_port},
        "network": {"type": "ipv6" if ":" in server_ip else "ipv4"},
        "tls": {"version": version, "version_protocol": "tls",
                "cipher": "TLS_AES_128_GCM_SHA256" if tls13
                else "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "curve": "x25519", "established": True,
                "client": {"server_name": sni}, "server": server},
        "certwatch": {"tls": {"server_chain": entries, "certificate_encrypted": tls13,
                              "ended_by": "established"}},
    }
    event = HandshakeEvent.model_validate(document)
    for path, value in (update or {}).items():
        event = _set(event, path.split("."), value)
    return event


def _set(model: Any, path: list[str], value: Any) -> Any:
    """A copy of the frozen ``model`` with the attribute at ``path`` replaced."""
    head, rest = path[0], path[1:]
    new = value if not rest else _set(getattr(model, head), rest, value)
    return model.model_copy(update={head: new})

"""The JSON-lines writer reuses the text of shared event parts; the lines must still be
exactly pydantic's serialisation of each whole event."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from certwatch.output import JsonLinesWriter
from schemas.base import Model
from schemas.events import HandshakeEvent, SensorEvent
from sensor.capture import open_capture
from sensor.config import SensorConfig
from sensor.sensor import Sensor
from tests.support import captures, handshakes, read_frames, run_sensor

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURES = ["zeek/client-certificate.pcap", "ja4/tls-alpn-h2.pcap", "ndpi/steam.pcapng",
            "ndpi/tls_invalid_reads.pcap"]


def _events(path: Path, foxio: bool) -> list[Model]:
    sensor = Sensor(SensorConfig(name="test", foxio_fingerprints=foxio))
    events: list[Model] = []
    with open_capture(str(path)) as reader:
        for timestamp, linktype, data in reader:
            sensor.process(timestamp, linktype, data)
            events += sensor.drain()
    return events + sensor.finish()


@pytest.mark.parametrize("foxio", [False, True])
def test_lines_equal_pydantic_serialisation_over_repeated_parts(tmp_path: Path,
                                                                foxio: bool) -> None:
    paths = [DATA / name for name in CAPTURES]
    # Every capture twice through one writer: the second pass is served from its table.
    events = [event for path in paths + paths for event in _events(path, foxio)]
    assert any(event.__class__.__name__ == "HandshakeEvent" for event in events)
    out = tmp_path / "events.jsonl"
    with JsonLinesWriter(str(out)) as writer:
        for event in events:
            writer.write(event)
    expected = [event.model_dump_json(by_alias=True, exclude_none=True) for event in events]
    assert out.read_text(encoding="utf-8").splitlines() == expected


def _write_twice(events: list[SensorEvent], path: Path) -> list[str]:
    """Each event written twice through one writer: the second time from its table."""
    with JsonLinesWriter(str(path)) as writer:
        for event in events + events:
            writer.write(event)
    # Not splitlines(): a name may hold U+2028, which JSON leaves as it is.
    return path.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_capture_is_written_as_pydantic_writes_it(capture: Path, tmp_path: Path) -> None:
    """The composed lines (shared parts from the table, the rest in one serializer call)
    are pydantic's text of the validated events, on every capture, with JA4 on."""
    events = run_sensor(read_frames(capture), SensorConfig(name="test", foxio_fingerprints=True))
    expected = [event.model_dump_json(by_alias=True, exclude_none=True) for event in events]
    assert _write_twice(events, tmp_path / "events.jsonl") == expected + expected


def _odd(event: HandshakeEvent) -> HandshakeEvent:
    """``event`` with values that need escaping, look like the writer's splice points, or
    are absent or unusual (validated, so it is an event a producer could make)."""
    data = event.model_dump(by_alias=True)
    trap = 'x","source":{"ip":"1","certwatch":{"tls":{\\ é \u2028 \x01'
    data["@timestamp"] = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    data["event"].update(id=trap, dataset=trap, end=None, duration=None, severity=7)
    data["source"]["ip"] = "2001:db8::1"
    data["network"]["vlan"] = {"id": "100"}
    detail = data["certwatch"]["tls"]
    detail.update(parse_error=trap, client_hello=None, key_exchange=None,
                  alerts=[{"sender": "server", "level": "fatal", "description": trap}],
                  timing={"client_hello_to_server_hello": None})
    data["tls"]["client"]["server_name"] = trap
    return HandshakeEvent.model_validate(data)


def test_odd_values_are_written_as_pydantic_writes_them(tmp_path: Path) -> None:
    events = handshakes(run_sensor(read_frames(DATA / "zeek" / "client-certificate.pcap")))
    odd = [_odd(event) for event in events]
    assert odd and odd[0].certwatch.tls.parse_error is not None
    naive = odd[0].model_copy(update={"timestamp": datetime(2024, 5, 1, 12, 0)})
    mixed = [*events, *odd, naive]
    expected = [event.model_dump_json(by_alias=True, exclude_none=True) for event in mixed]
    assert _write_twice(mixed, tmp_path / "events.jsonl") == expected + expected

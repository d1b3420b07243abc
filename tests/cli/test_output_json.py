"""The JSON-lines writer reuses the text of shared event parts; the lines must still be
exactly pydantic's serialisation of each whole event."""

from __future__ import annotations

from pathlib import Path

import pytest

from certwatch.output import JsonLinesWriter
from schemas.base import Model
from sensor.capture import open_capture
from sensor.config import SensorConfig
from sensor.sensor import Sensor

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

"""The same conversation cut into different TCP segments, reordered or duplicated, must give
the same events: records span segments, messages span records, captures cut mid-way."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from schemas.events import SensorEvent
from tests.support import DATA, Frame, handshakes, read_frames, resegment, run_sensor

CASES = [
    DATA / "zeek" / "tls1.2.pcap",  # TLS 1.2, three-certificate chain over several segments
    DATA / "zeek" / "client-certificate.pcap",  # client and server chains
    DATA / "ja4" / "latest.pcapng",  # TLS 1.2 and 1.3 mixed
    DATA / "zeek" / "ssl-v2.pcap",  # SSLv2-format ClientHello
]


def essence(events: list[SensorEvent]) -> list[str]:
    """What a user reads in a handshake event, minus fields that depend on packet counts."""
    out = []
    for event in handshakes(events):
        doc = event.model_dump(mode="json", by_alias=True, exclude_none=True)
        doc["certwatch"].pop("flow")
        doc["certwatch"]["tls"].pop("timing")
        doc["event"].pop("duration", None)
        doc["event"].pop("end", None)
        out.append(repr(sorted(doc.items())))
    return sorted(out)


@pytest.mark.parametrize("capture", CASES, ids=lambda p: p.name)
@pytest.mark.parametrize("size", [1, 7, 100, 1460])
def test_every_segmentation_gives_the_same_handshakes(capture: Path, size: int) -> None:
    frames = read_frames(capture)
    whole = essence(run_sensor(frames))
    assert whole, "the capture holds at least one handshake"
    assert essence(run_sensor(resegment(frames, size))) == whole


@pytest.mark.parametrize("seed", range(5))
def test_reordered_and_duplicated_segments_give_the_same_handshakes(seed: int) -> None:
    frames = read_frames(DATA / "zeek" / "tls1.2.pcap")
    whole = essence(run_sensor(frames))
    pieces = resegment(frames, 50)
    rng = random.Random(seed)
    shuffled: list[Frame] = []
    for frame in pieces:
        shuffled.append(frame)
        if rng.random() < 0.2:
            shuffled.append(frame)  # retransmission
    # Swap neighbours, as a capture of a reordering network shows; keep the first frames
    # (the SYNs) in place so roles are learnt the same way.
    for i in range(4, len(shuffled) - 1):
        if rng.random() < 0.3:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    assert essence(run_sensor(shuffled)) == whole


def test_a_capture_cut_at_any_packet_never_breaks_the_sensor() -> None:
    frames = read_frames(DATA / "zeek" / "client-certificate.pcap")
    for cut in range(len(frames) + 1):
        events = run_sensor(frames[:cut])
        for event in handshakes(events):
            assert event.tls.established is False or cut > len(frames) // 2

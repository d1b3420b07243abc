"""A replay tunes the cyclic garbage collector for its duration only, and still collects."""

from __future__ import annotations

import asyncio
import gc
import weakref

from certwatch.replay import REPLAY_GC_THRESHOLDS, collector_tuned, replay
from schemas.events import SensorEvent
from sensor.config import SensorConfig
from sensor.sensor import Sensor
from tests.support import captures, handshakes


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector can free it


def test_replay_restores_the_collector_and_sees_the_same_events() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    seen: list[tuple[int, ...]] = []
    events: list[SensorEvent] = []

    async def emit(event: SensorEvent) -> None:
        seen.append(gc.get_threshold())
        events.append(event)

    capture = str(captures("tls1.2.pcap")[0])
    asyncio.run(replay([capture], Sensor(SensorConfig(name="t")), emit))
    assert seen and all(t == REPLAY_GC_THRESHOLDS for t in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    assert len(handshakes(events)) == 1


def test_cycles_made_while_tuned_are_still_collected() -> None:
    with collector_tuned():
        node = _Node()
        ref = weakref.ref(node)
        del node
        gc.collect()
        assert ref() is None

"""Events built without validation (sensor.fastmodel) are the events validation builds.

The event builder makes its per-event models with ``fastmodel.make``, which skips pydantic's
validation. These tests build the events of every capture in tests/data both ways and
compare them as a consumer would see them: equal models, the same fields set, the same
JSON, and every value of the same Python type (an ``int`` where validation would have made
a ``bool`` serialises differently).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from schemas.base import Endpoint, EventFields, Network, Vlan
from schemas.events import SensorEvent
from schemas.tls import Tls
from sensor import fastmodel
from sensor.config import SensorConfig
from tests.support import Frame, captures, handshakes, read_frames, run_sensor


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of everything inside a model, depth first."""
    yield path, value
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def assert_same(fast: SensorEvent, checked: SensorEvent) -> None:
    assert fast == checked
    assert fast.model_dump_json(by_alias=True) == checked.model_dump_json(by_alias=True)
    for (path, a), (_, b) in zip(_walk(fast), _walk(checked), strict=True):
        assert type(a) is type(b), path
        if isinstance(a, BaseModel):
            assert a.model_fields_set == b.model_fields_set, path
            assert list(a.__dict__) == list(b.__dict__), path


def events_both_ways(frames: list[Frame], monkeypatch: pytest.MonkeyPatch,
                     config: SensorConfig | None = None
                     ) -> tuple[list[SensorEvent], list[SensorEvent]]:
    monkeypatch.setattr(fastmodel, "CHECKED", False)
    fast = run_sensor(frames, config)
    monkeypatch.setattr(fastmodel, "CHECKED", True)
    checked = run_sensor(frames, config)
    return fast, checked


def _with_vlans(frames: list[Frame], tags: tuple[int, ...]) -> list[Frame]:
    """Ethernet frames with 802.1Q tags (QinQ when two) inserted after the MAC addresses."""
    tagged = []
    for ts, linktype, data in frames:
        if linktype == 1:
            head = b"".join((0x88A8 if i == 0 and len(tags) > 1 else 0x8100).to_bytes(2, "big")
                            + tag.to_bytes(2, "big") for i, tag in enumerate(tags))
            data = data[:12] + head + data[12:]
        tagged.append((ts, linktype, data))
    return tagged


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("foxio", [False, True], ids=["plain", "foxio"])
def test_every_capture_builds_the_same_events(
    capture: Path, foxio: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SensorConfig(name="test-sensor", foxio_fingerprints=foxio)
    fast, checked = events_both_ways(read_frames(capture), monkeypatch, config)
    assert len(fast) == len(checked)
    for a, b in zip(fast, checked, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("tags", [(100,), (100, 200)], ids=["vlan", "qinq"])
def test_vlan_tagged_handshakes_build_the_same_events(
    tags: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = _with_vlans(read_frames(captures("tls1.2.pcap")[0]), tags)
    fast, checked = events_both_ways(frames, monkeypatch)
    hs = handshakes(fast)
    assert hs and hs[0].network.vlan == Vlan(id=str(tags[0]))
    for a, b in zip(fast, checked, strict=True):
        assert_same(a, b)


def test_defaults_are_fresh_and_required_fields_kept() -> None:
    """A default made by a factory is not shared between instances (as with validation)."""
    one, two = fastmodel.make(Tls), fastmodel.make(Tls)
    assert one.client == two.client and one.client.supported_ciphers is not \
        two.client.supported_ciphers
    assert fastmodel.make(Network, type="ipv4") == Network(type="ipv4")
    fields = fastmodel.make(EventFields, id="x", kind="event", category=[], type=[], dataset="d")
    assert fields.model_fields_set == {"id", "kind", "category", "type", "dataset"}
    assert fields.module == "certwatch" and fields.outcome is None


def test_checked_mode_rejects_what_validation_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastmodel, "CHECKED", True)
    with pytest.raises(ValueError):
        fastmodel.make(Endpoint, ip="192.0.2.1", port=70000)


def test_maker_builds_what_validation_builds() -> None:
    """``maker``'s constructors (the builder's per-event models) give the validated model:
    equal, same fields set, fields in declaration order, a fresh default per instance."""
    endpoint = fastmodel.maker(Endpoint, "ip", "port")
    assert endpoint("2001:db8::1", 443) == Endpoint(ip="2001:db8::1", port=443)
    fields = fastmodel.maker(EventFields, "dataset", "id", "kind", "category", "type")
    made = fields("d", "x", "event", ["network"], ["info"])
    checked = EventFields(id="x", kind="event", category=["network"], type=["info"], dataset="d")
    assert made == checked
    assert made.model_fields_set == checked.model_fields_set
    assert list(made.__dict__) == list(checked.__dict__)
    assert made.model_dump_json() == checked.model_dump_json()
    tls = fastmodel.maker(Tls, "established")
    one, two = tls(True), tls(True)
    assert one == two == Tls(established=True)
    assert one.client.supported_ciphers is not two.client.supported_ciphers


def test_maker_checks_names_and_follows_checked_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="port_number"):
        fastmodel.maker(Endpoint, "ip", "port_number")
    with pytest.raises(TypeError):
        fastmodel.maker(Endpoint, "ip", "ip")
    endpoint = fastmodel.maker(Endpoint, "ip", "port")
    assert endpoint("192.0.2.1", 70000).port == 70000  # unchecked: the caller's guarantee
    monkeypatch.setattr(fastmodel, "CHECKED", True)  # read at each call, not when made
    with pytest.raises(ValueError):
        endpoint("192.0.2.1", 70000)

"""The consumer side's fast paths change how fast events are judged, never what is judged.

* ``certwatch.codec.HandshakeDecoder`` (templates of validated events) gives exactly what
  ``HandshakeEvent.model_validate_json`` gives, on every handshake event the sensor writes
  for the captures of tests/data and a generated benchmark capture, and on mutated documents
  (duplicate keys, reordered or injected members, whitespace, junk): the same model, or the
  same ``ValidationError``.
* ``ProcessorService`` decoding through it raises the same alerts as the in-process
  processor fed the sensor's events.
* ``KeyHashPartitioner`` puts every key on the partition aiokafka's default partitioner
  picks (the key → partition mapping is what keeps a server on one processor).
"""

from __future__ import annotations

import asyncio
import tempfile
from functools import cache
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from certwatch.bus import Message
from certwatch.bus.kafka import KeyHashPartitioner
from certwatch.bus.memory import MemoryBus
from certwatch.codec import HandshakeDecoder, encode
from certwatch.services import ProcessorService
from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.events import HandshakeEvent
from schemas.topics import ALERT_TOPIC, HANDSHAKE_TOPIC
from tests.support import captures, handshakes, read_frames, run_sensor
from tools.tlsgen.scenarios import Options, build


@cache
def _benchmark() -> tuple[bytes, ...]:
    """The handshake events of a 60-connection benchmark scenario (many events share a
    server and a client), as the sensor publishes them."""
    scenario = build("benchmark", Options(connections=60, app_segments=1, concurrency=8))
    with tempfile.TemporaryDirectory() as directory:
        capture = Path(directory) / "benchmark.pcap"
        scenario.write(capture)
        return tuple(encode(event) for event in handshakes(run_sensor(read_frames(capture))))


@cache
def _wire() -> tuple[bytes, ...]:
    """Every handshake event of tests/data, then those of :func:`_benchmark`."""
    return tuple(encode(event) for capture in captures()
                 for event in handshakes(run_sensor(read_frames(capture)))) + _benchmark()


def _fields_set(model: BaseModel) -> object:
    """``model_fields_set`` of the model and of every model inside it (what
    ``exclude_unset`` would see), as one comparable value."""
    nested: dict[str, object] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            nested[name] = _fields_set(value)
        elif isinstance(value, list):
            nested[name] = [_fields_set(item) if isinstance(item, BaseModel) else item
                            for item in value]
    return sorted(model.model_fields_set), nested


def _outcome(decode: object, value: bytes) -> object:
    """What decoding ``value`` gives: the model's JSON and fields set, or the errors."""
    assert callable(decode)
    try:
        event = decode(value)
    except ValidationError as error:
        return ("error", error.errors(include_url=False))
    assert isinstance(event, HandshakeEvent)
    return ("event", event, encode(event), _fields_set(event))


def test_every_sensor_event_decodes_as_full_validation_does() -> None:
    wire = _wire()
    assert len(wire) > 80
    decoder = HandshakeDecoder()
    for _ in range(2):  # the second pass decodes every event from a known template
        for value in wire:
            full = _outcome(HandshakeEvent.model_validate_json, value)
            assert _outcome(decoder.decode, value) == full
            assert encode(decoder.decode(value)) == value  # what the processor re-publishes
    assert decoder.stats.full == 0, "a sensor event did not take the template path"
    # The benchmark scenario repeats its servers and clients: templates are reused.
    fresh = HandshakeDecoder()
    for value in _benchmark():
        fresh.decode(value)
    assert fresh.stats.hits >= len(_benchmark()) // 3 and fresh.stats.misses > 0


def test_bounds_empty_the_template_table_and_change_nothing() -> None:
    wire = _wire()
    decoder = HandshakeDecoder(max_entries=3, max_bytes=64 * 1024)
    for value in wire:
        assert decoder.decode(value) == HandshakeEvent.model_validate_json(value)
    assert decoder.stats.resets > 0
    assert len(decoder) <= 3
    with pytest.raises(ValueError, match="at least 1"):
        HandshakeDecoder(max_entries=0)


_TLS12 = next(value for value in _wire() if b'"server_chain":[{' in value)

# Hand-made mutations of a real TLS 1.2 event: each either changes nothing a full
# validation cares about, or makes it fail; the decoder must agree either way.
_CRAFTED = {
    "duplicate source at the end": _TLS12[:-1] + b',"source":{"ip":"203.0.113.9","port":1}}',
    "duplicate source, later one wins": _TLS12.replace(
        b',"network":', b',"source":{"ip":"203.0.113.9","port":1},"network":', 1),
    "duplicate hole in certwatch.tls": _TLS12.replace(
        b',"record_versions":', b',"timing":{"client_hello_to_server_hello":5},'
        b'"record_versions":', 1),
    "extra key injected in a hole": _TLS12.replace(b',"ecs":', b',"x":1,"ecs":', 1),
    "value spliced across holes": _TLS12.replace(b',"observer":', b'},"observer":', 1),
    "whitespace around a key": _TLS12.replace(b'"source":', b'"source" : ', 1),
    "timestamp as a number": _TLS12.replace(
        _TLS12[_TLS12.index(b'"@timestamp":') + 13:_TLS12.index(b',"ecs":')], b"1714564800", 1),
    "negative port": _TLS12.replace(b'"source":{"ip":', b'"source":{"port":-1,"ip":', 1),
    "unknown schema version": _TLS12.replace(b'"schema_version":1', b'"schema_version":2', 1),
    "members reordered": b'{"certwatch"' + _TLS12[
        _TLS12.index(b',"certwatch":') + 12:-1] + b"," + _TLS12[1:_TLS12.index(
            b',"certwatch":')] + b"}",
    "flow not last": _TLS12.replace(b"}}}", b'},"flow":{}}}', 1),
    # The trailing holes are found from the end: a later duplicate must not be taken for
    # the one the template knows, nor a key inside another hole.
    "second timing after record_versions": _TLS12.replace(
        b',"ended_by":', b',"timing":{"client_hello_to_server_hello":7},"ended_by":', 1),
    "flow key inside timing": _TLS12.replace(b'"timing":{', b'"timing":{"flow":{},', 1),
    "timing key inside flow": _TLS12.replace(b'"flow":{', b'"flow":{"timing":{},', 1),
    "flow counters before timing": _TLS12.replace(
        b'"timing":{', b'"flow":{"packets":1},"timing":{', 1),
    "truncated": _TLS12[:-3],
    "not JSON": b"\xff" + _TLS12,
}


@pytest.mark.parametrize("name", sorted(_CRAFTED))
def test_crafted_documents_decode_as_full_validation_does(name: str) -> None:
    value = _CRAFTED[name]
    assert value != _TLS12
    decoder = HandshakeDecoder()
    decoder.decode(_TLS12)  # its template is known: the crafted one must not borrow it
    expected = _outcome(HandshakeEvent.model_validate_json, value)
    assert _outcome(decoder.decode, value) == expected
    assert _outcome(decoder.decode, value) == expected  # and again, from any template


@pytest.mark.parametrize("tail", [b" ", b"\n", b"\t\r\n"])
def test_a_cut_document_with_trailing_space_fails_as_full_validation_does(tail: bytes) -> None:
    # A line cut short (a dump truncated mid-event) still ends in its newline: the errors
    # must quote the input as given, as full validation's do.
    decoder = HandshakeDecoder()
    for base in _wire()[:20]:
        decoder.decode(base)
        value = base[: len(base) * 9 // 10] + tail
        assert _outcome(decoder.decode, value) == _outcome(HandshakeEvent.model_validate_json,
                                                           value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_spliced_and_mutated_documents_decode_as_full_validation_does(
        data: st.DataObject) -> None:
    wire = _wire()
    base = data.draw(st.sampled_from(wire))
    start = data.draw(st.integers(0, len(base)))
    end = data.draw(st.integers(start, min(len(base), start + 200)))
    insert = data.draw(st.one_of(
        st.binary(max_size=8),
        st.sampled_from([b'"event":', b'"source":', b'"flow":', b'"timing":', b',"ecs":',
                         b'"@timestamp":', b"}}", b'{"ip":"1.2.3.4","port":1}', b",", b" "]),
        st.builds(lambda other, a, n: other[a:a + n], st.sampled_from(wire),
                  st.integers(0, 5000), st.integers(0, 300))))
    value = base[:start] + insert + base[end:]
    decoder = HandshakeDecoder()
    decoder.decode(base)
    assert _outcome(decoder.decode, value) == _outcome(HandshakeEvent.model_validate_json,
                                                       value)


def _variants(base: bytes, count: int) -> list[bytes]:
    """``count`` documents that differ from ``base`` only in the last characters of the
    ServerHello's JA3S string, past the part of a document its template's shape looks at:
    the same shape, other templates, every one valid."""
    start = base.index(b'"ja3s_string":"') + 15
    end = base.index(b'"', start)
    assert end - start >= 4 and start - base.index(b',"destination":') > 512
    return [base[:end - 3] + b"%03d" % n + base[end:] for n in range(count)]


def test_templates_of_one_shape_are_compared_whole_and_bounded() -> None:
    variants = _variants(_TLS12, 11)
    decoder = HandshakeDecoder()
    for value in variants:
        event = decoder.decode(value)
        assert event == HandshakeEvent.model_validate_json(value)
        assert encode(event) == value  # not another variant's server hello
    # 11 templates of one shape: each learned once, the three oldest evicted for the last.
    assert (decoder.stats.misses, decoder.stats.evicted, len(decoder)) == (11, 3, 8)
    for value in variants[3:]:
        assert encode(decoder.decode(value)) == value
    assert (decoder.stats.hits, decoder.stats.misses, decoder.stats.full) == (8, 11, 0)
    assert encode(decoder.decode(variants[0])) == variants[0]  # evicted: learned again
    assert decoder.stats.misses == 12


def test_decoded_events_are_independent_of_their_template() -> None:
    decoder = HandshakeDecoder()
    first = _TLS12
    start = first.index(b'"source":') + 9
    second = first[:start] + b'{"ip":"198.51.100.7","port":1}' + first[
        first.index(b',"destination":'):]
    one = decoder.decode(first)
    other = decoder.decode(second)
    assert decoder.stats.hits == 1
    assert one.source != other.source
    assert one == HandshakeEvent.model_validate_json(first)
    assert one.certwatch.tls.server_chain is other.certwatch.tls.server_chain  # shared
    copied = one.model_copy(update={"source": other.source})
    assert copied.source == other.source and one == HandshakeEvent.model_validate_json(first)


def test_the_service_raises_the_alerts_of_the_in_process_processor() -> None:
    wire = _wire()
    reference = Processor(Policy(), DETECTORS)
    expected = [encode(alert) for value in wire
                for alert in reference.process(HandshakeEvent.model_validate_json(value))]
    assert expected

    async def run() -> list[bytes]:
        bus = MemoryBus()
        alerts = bus.subscribe([ALERT_TOPIC], "reader")
        service = ProcessorService(Processor(Policy(), DETECTORS), bus)
        batch = [Message(HANDSHAKE_TOPIC, "k", value, 0, offset)
                 for offset, value in enumerate(wire)]
        for start in range(0, len(batch), 37):
            await service.handle_batch(batch[start:start + 37])
        assert service.decoder.stats.full == 0
        received = []
        async with asyncio.timeout(5):
            async for message in alerts:
                received.append(message.value)
                if len(received) == len(expected):
                    break
        await bus.close()
        return received

    assert asyncio.run(run()) == expected


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=64)), partitions=st.integers(1, 64))
def test_memoised_partitioner_picks_the_default_partition(key: bytes | None,
                                                         partitions: int) -> None:
    every = list(range(partitions))
    memoised = KeyHashPartitioner(max_keys=4)
    for _ in range(2):  # computed, then memoised
        chosen = memoised(key, every, every)
        if key is not None:
            assert chosen == DefaultPartitioner()(key, every, every)
        else:
            assert chosen in every


def test_a_batch_dead_letters_future_and_malformed_handshakes_with_full_reasons() -> None:
    from certwatch.bus import DEAD_LETTER_TOPIC

    future = _TLS12.replace(b'"schema_version":1', b'"schema_version":2', 1)
    start = _TLS12.index(b'"source":') + 9
    broken = _TLS12[:start] + b'{"ip":"198.51.100.7","port":-1}' + _TLS12[
        _TLS12.index(b',"destination":'):]
    values = [_TLS12, future, _TLS12, broken]

    def reason(value: bytes) -> str:
        with pytest.raises(ValidationError) as caught:
            HandshakeEvent.model_validate_json(value)
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in caught.value.errors()[:5])

    async def run() -> list[Message]:
        bus = MemoryBus()
        dead = bus.subscribe([DEAD_LETTER_TOPIC], "reader")
        service = ProcessorService(Processor(Policy(), DETECTORS), bus)
        await service.handle_batch([Message(HANDSHAKE_TOPIC, "k", value, 0, offset)
                                    for offset, value in enumerate(values)])
        assert service.dead_letters == 2 and service.processor.stats.events == 2
        letters = [await anext(dead), await anext(dead)]
        await bus.close()
        return letters

    letters = asyncio.run(run())
    assert [letter.value for letter in letters] == [future, broken]
    assert [dict(letter.headers)["reason"].decode() for letter in letters] == [
        reason(future), reason(broken)]
    assert "schema_version" in reason(future) and "source.port" in reason(broken)


def test_a_line_with_its_newline_takes_the_template_path() -> None:
    # Messages produced from a file of lines (kcat -l, a replayed dump) keep the newline;
    # they must decode to the same event, and as cheaply as the bare document.
    wire = _wire()
    decoder = HandshakeDecoder()
    for value in wire:
        decoder.decode(value)
    for value in wire:
        for padded in (value + b"\n", value + b"\r\n", b" " + value + b" \n"):
            assert _outcome(decoder.decode, padded) == _outcome(
                HandshakeEvent.model_validate_json, padded)
    assert decoder.stats.full == 0

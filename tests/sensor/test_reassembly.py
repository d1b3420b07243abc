"""One direction of a TCP stream: order, duplicates, overlaps, wrap-around, bounds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.errors import ReassemblyError
from sensor.reassembly import StreamReassembler


@st.composite
def scrambled_stream(draw: st.DrawFn) -> tuple[int, bytes, list[tuple[int, int]]]:
    """A stream, an ISN, and (start, end) pieces covering it in a random order.

    The pieces are a random cut of the stream plus random extra pieces that duplicate or
    overlap others (with the same bytes, as a real retransmission carries).
    """
    isn = draw(st.integers(0, 2**32 - 1))
    data = draw(st.binary(min_size=1, max_size=600))
    cuts = sorted(
        set(draw(st.lists(st.integers(1, len(data) - 1), max_size=30)) if len(data) > 1 else [])
    )
    bounds = [0, *cuts, len(data)]
    pieces = list(itertools.pairwise(bounds))
    extra = draw(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 80)), max_size=15)
    )
    pieces += [(a, min(len(data), a + n)) for a, n in extra]
    return isn, data, draw(st.permutations(pieces))


@settings(max_examples=300, deadline=None)
@given(scrambled_stream(), st.booleans())
def test_any_delivery_order_gives_the_stream(
    case: tuple[int, bytes, list[tuple[int, int]]], with_syn: bool
) -> None:
    isn, data, pieces = case
    r = StreamReassembler()
    out = []
    if with_syn:
        r.set_initial_sequence(isn)
    else:
        # without a SYN the first segment anchors the stream: make it the stream's start
        first = next(p for p in pieces if p[0] == 0)
        pieces = [first, *pieces]
    for a, b in pieces:
        out.append(r.add((isn + 1 + a) % 2**32, data[a:b]))
    assert b"".join(out) == data
    assert r.buffered == 0 and r.gaps_skipped == 0 and r.delivered == len(data)


def test_sequence_wraps_at_2_32() -> None:
    r = StreamReassembler()
    r.set_initial_sequence(2**32 - 3)  # first byte at 2**32 - 2
    assert r.add(0, b"CD") == b""  # after the wrap, held
    assert r.add(2**32 - 2, b"AB") == b"ABCD"
    assert r.add(2, b"EF") == b"EF"
    assert r.add(2**32 - 1, b"BC") == b""  # retransmission across the wrap


def test_capture_starting_mid_stream_anchors_on_first_segment() -> None:
    r = StreamReassembler()
    assert r.add(5000, b"hello ") == b"hello "
    assert r.add(5011, b"!") == b""
    assert r.add(5006, b"world") == b"world!"


def test_overlap_first_received_wins() -> None:
    r = StreamReassembler()
    r.set_initial_sequence(99)
    assert r.add(100, b"abcd") == b"abcd"
    # a retransmission with other bytes for 102-103 and new bytes after: keep ours, trim
    assert r.add(102, b"XYef") == b"ef"
    # out of order: "ij" held first, then an overlapping "GHIJ" only fills the hole
    assert r.add(108, b"ij") == b""
    assert r.add(106, b"GHIJkl") == b"GHijkl"
    # in-order data overlapping held data: the held bytes were first
    assert r.add(114, b"..") == b""
    assert r.add(112, b"mnOP") == b"mn.."
    assert r.buffered == 0


def test_empty_and_pure_retransmissions_deliver_nothing() -> None:
    r = StreamReassembler()
    r.set_initial_sequence(0)
    assert r.add(1, b"") == b""
    assert r.add(1, b"abc") == b"abc"
    assert r.add(1, b"abc") == b""
    assert r.add(2, b"b") == b""
    assert r.delivered == 3


def test_segment_far_away_is_dropped_and_counted() -> None:
    r = StreamReassembler()
    r.set_initial_sequence(1000)
    assert r.add(1001 + 2**30 + 1, b"far") == b""
    assert r.add(1001 - 2**30 - 10, b"far back") == b""
    assert r.far_segments == 2 and r.buffered == 0
    assert r.add(1001, b"ok") == b"ok"


def test_out_of_order_bytes_are_bounded() -> None:
    r = StreamReassembler(max_buffered=100)
    r.set_initial_sequence(0)
    assert r.add(11, b"x" * 60) == b""
    with pytest.raises(ReassemblyError, match="100 bytes"):
        r.add(200, b"y" * 50)


def test_out_of_order_segment_count_is_bounded() -> None:
    r = StreamReassembler(max_out_of_order_segments=4)
    r.set_initial_sequence(0)
    for i in range(4):
        r.add(10 + 10 * i, b"z")
    with pytest.raises(ReassemblyError, match="4 out-of-order segments"):
        r.add(100, b"z")


def test_duplicate_held_segment_does_not_count_against_bounds() -> None:
    r = StreamReassembler(max_out_of_order_segments=1, max_buffered=4)
    r.set_initial_sequence(0)
    for _ in range(10):
        assert r.add(5, b"late") == b""
    assert r.buffered == 4
    assert r.add(1, b"four") == b"fourlate"


def test_skip_gap_delivers_what_follows_a_hole() -> None:
    r = StreamReassembler()
    r.set_initial_sequence(0)
    assert r.add(1, b"head") == b"head"
    assert r.add(10, b"tail") == b""
    assert r.add(20, b"end") == b""
    assert r.skip_gap() == b"tail"
    assert r.skip_gap() == b"end"
    assert r.skip_gap() == b""
    assert r.gaps_skipped == 2 and r.buffered == 0
    assert r.add(23, b"more") == b"more"
    # the lost bytes arriving late are now behind us
    assert r.add(5, b"lost!") == b""


def test_late_syn_does_not_rewind() -> None:
    r = StreamReassembler()
    assert r.add(50, b"data") == b"data"
    r.set_initial_sequence(10)
    assert r.add(54, b"more") == b"more"

"""Pairing reference handshakes with ours and counting, per field and tool, agreement.

Pure and small enough to test on fake handshakes: :class:`Ours` is what the sensor said
(in the canonical forms of :mod:`tools.expected`), :class:`Expected` what a tool said.
Handshakes pair on the unordered endpoint pair, the n-th reference with our n-th, since
tools disagree on who the client is when a capture starts mid-connection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tools.expected import Endpoint, Expected, FlowKey, is_cipher_code, unordered

Pair = tuple[Endpoint, Endpoint]


@dataclass(frozen=True, slots=True)
class Ours:
    """One of our handshake events, reduced to the compared fields (same canonical forms
    as :mod:`tools.expected`, plus ``cipher_code`` as ``0xc02f``)."""

    key: FlowKey
    values: Mapping[str, str]


# -- comparing -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Finding:
    """One field of one handshake where we differ from a tool (``ours`` None: we have no
    value, or no handshake event at all when ``field`` is ``"handshake"``)."""

    capture: str
    tool: str
    key: FlowKey | None
    field: str
    ours: str | None
    theirs: str
    origin: str


@dataclass(slots=True)
class Tally:
    agree: int = 0
    disagree: int = 0
    missing: int = 0

    @property
    def total(self) -> int:
        return self.agree + self.disagree + self.missing


@dataclass(slots=True)
class Report:
    """Everything the run found; :func:`render` prints it, ``--json`` dumps it."""

    tallies: dict[str, dict[str, Tally]] = field(default_factory=dict)
    disagreements: list[Finding] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    crashes: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    captures: int = 0
    packets: int = 0
    our_handshakes: int = 0
    our_unreferenced: int = 0
    udp_left_out: int = 0
    sensor_seconds: float = 0.0

    def tally(self, name: str, tool: str) -> Tally:
        return self.tallies.setdefault(name, {}).setdefault(tool, Tally())


def merge_references(records: Iterable[Expected]) -> dict[tuple[str, Pair | None], list[Expected]]:
    """Group by tool and endpoint pair, in file order. Several files of one tool about one
    capture (Zeek baselines of different scripts over the same trace) are merged
    position by position, the first file's value winning; identical keyless checks (one
    Suricata pcap used by several tests) are kept once."""
    by_origin: dict[tuple[str, Pair | None], dict[str, list[Expected]]] = defaultdict(dict)
    for record in records:
        pair = unordered(record.key) if record.key is not None else None
        by_origin[(record.tool, pair)].setdefault(record.origin, []).append(record)
    merged: dict[tuple[str, Pair | None], list[Expected]] = {}
    for group, lists in by_origin.items():
        if group[1] is None:
            merged[group] = _dedupe_keyless(r for rs in lists.values() for r in rs)
            continue
        rows: list[Expected] = []
        for records_of_file in lists.values():
            for index, record in enumerate(records_of_file):
                if index == len(rows):
                    rows.append(record)
                else:
                    values = {**record.values, **rows[index].values}
                    rows[index] = Expected(record.tool, rows[index].key, rows[index].transport,
                                           values, rows[index].origin)
        merged[group] = rows
    return merged


def _dedupe_keyless(records: Iterable[Expected]) -> list[Expected]:
    """Each (field, value) of keyless checks once: several Suricata tests share a pcap and
    repeat the same expectation among different ones."""
    seen: set[tuple[str, str]] = set()
    out = []
    for record in records:
        fresh = {k: v for k, v in record.values.items() if (k, v) not in seen}
        seen.update(fresh.items())
        if fresh:
            out.append(Expected(record.tool, None, record.transport, fresh, record.origin))
    return out


def ours_value(ours: Ours, name: str, theirs: str) -> str | None:
    """Our value in the form the tool used (a cipher as code where the tool gave one)."""
    if name == "cipher" and is_cipher_code(theirs):
        return ours.values.get("cipher_code")
    return ours.values.get(name)


def compare_capture(
    capture: str,
    ours: Sequence[Ours],
    records: Iterable[Expected],
    known_pairs: set[Pair],
    fields: Sequence[str],
    report: Report,
) -> None:
    """Pair each reference handshake with ours (same endpoints, n-th with n-th) and count
    every field the reference has a value for."""
    by_pair: dict[Pair, list[Ours]] = defaultdict(list)
    for handshake in ours:
        by_pair[unordered(handshake.key)].append(handshake)
    groups = merge_references(records)
    aliases = _port_aliases(groups, by_pair, known_pairs)
    for (tool, theirs), alias in aliases.items():
        report.notes.append((capture, f"{tool}'s {_fmt_pair(theirs)} matched with our "
                             f"{_fmt_pair(alias)} on ports alone (tunnel/NAT addresses)"))
    referenced: set[Pair] = set()
    for (tool, pair), group in groups.items():
        for index, record in enumerate(group):
            if record.transport != "tcp":
                report.udp_left_out += 1
                continue
            if pair is None:
                _compare_keyless(capture, ours, record, fields, report)
                continue
            ours_pair = aliases.get((tool, pair), pair)
            if ours_pair not in known_pairs and ours_pair not in by_pair:
                continue  # a shared baseline's row about another capture
            referenced.add(ours_pair)
            mine = by_pair.get(ours_pair, [])
            _compare_one(capture, mine[index] if index < len(mine) else None, record,
                         fields, report)
    report.our_unreferenced += sum(len(v) for k, v in by_pair.items() if k not in referenced)


def _port_aliases(
    groups: Mapping[tuple[str, Pair | None], list[Expected]],
    by_pair: Mapping[Pair, list[Ours]],
    known_pairs: set[Pair],
) -> dict[tuple[str, Pair], Pair]:
    """A tool's pairs we have no handshake for, matched to the one handshake of ours with
    the same two ports that this tool does not name. Tools label tunnelled traffic with
    the outer or the inner addresses (tshark gives 6in4's outer IPv4, we the inner IPv6)."""
    aliases = {}
    for tool in {tool for (tool, _pair) in groups}:
        wanted = {pair for (t, pair) in groups if t == tool and pair is not None}
        spare: dict[tuple[int, int], list[Pair]] = defaultdict(list)
        for pair in by_pair:
            if pair not in wanted:
                spare[_ports(pair)].append(pair)
        for pair in wanted - set(by_pair):
            candidates = spare.get(_ports(pair), [])
            if len(candidates) == 1 and pair in known_pairs:
                aliases[(tool, pair)] = candidates[0]
    return aliases


def _ports(pair: Pair) -> tuple[int, int]:
    a, b = pair[0][1], pair[1][1]
    return (a, b) if a <= b else (b, a)


def _fmt_pair(pair: Pair) -> str:
    return fmt_key((pair[0][0], pair[0][1], pair[1][0], pair[1][1])).replace(" -> ", " <-> ")


def _compare_one(
    capture: str, ours: Ours | None, record: Expected, fields: Sequence[str], report: Report
) -> None:
    for name in fields:
        theirs = record.values.get(name)
        if theirs is None:
            continue
        mine = ours_value(ours, name, theirs) if ours is not None else None
        _count(report, capture, record, name, mine, theirs, ours is None)


def _compare_keyless(
    capture: str, ours: Sequence[Ours], record: Expected, fields: Sequence[str],
    report: Report,
) -> None:
    """A check naming no endpoints agrees if any of our handshakes has its value."""
    for name in fields:
        theirs = record.values.get(name)
        if theirs is None:
            continue
        candidates = [v for o in ours if (v := ours_value(o, name, theirs)) is not None]
        mine = theirs if theirs in candidates else "|".join(sorted(set(candidates))) or None
        _count(report, capture, record, name, mine, theirs, not ours)


def _count(
    report: Report, capture: str, record: Expected, name: str, mine: str | None,
    theirs: str, no_event: bool,
) -> None:
    tally = report.tally(name, record.tool)
    if mine == theirs:
        tally.agree += 1
        return
    finding = Finding(capture, record.tool, record.key, name, mine, theirs, record.origin)
    if mine is None:
        tally.missing += 1
        if no_event:
            finding = Finding(capture, record.tool, record.key, "handshake", None,
                              f"{name}={theirs}", record.origin)
        report.missing.append(finding)
    else:
        tally.disagree += 1
        report.disagreements.append(finding)


def fmt_key(key: FlowKey | None) -> str:
    if key is None:
        return "(any handshake)"

    def endpoint(ip: str, port: int) -> str:
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    return f"{endpoint(key[0], key[1])} -> {endpoint(key[2], key[3])}"



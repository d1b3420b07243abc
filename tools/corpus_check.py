"""``python -m tools.corpus_check CORPUS_DIR``: the sensor against independent tools.

For every capture listed in ``CORPUS_DIR/CATALOG.tsv`` this runs the sensor in-process,
reads every expected output the catalogue names for that capture (tshark oracle, Zeek
``ssl.log``/``x509.log``, the JA4 reference, nDPI, Suricata-verify) through
:mod:`tools.expected`, pairs each reference handshake with ours on its endpoints and
counts per field and per tool how often we agree, disagree, or have no value where the
tool has one (:mod:`tools.compare`). It prints a table, then every disagreement and every miss.

It is a report: the exit status is 0 whatever the numbers, and 1 only when the sensor
raised on a capture (the traceback is printed). Handshakes over UDP (QUIC, DTLS) are
compared too, in a table of their own: a reference's UDP handshake is paired with our UDP
handshake events on the same endpoints, so the TCP figures stay comparable with earlier
runs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import yaml

from schemas.events import AnomalyEvent, HandshakeEvent
from sensor.capture import open_capture
from sensor.config import SensorConfig
from sensor.decode import decode_frame, format_addr
from sensor.errors import DecodeError
from sensor.sensor import Sensor
from sensor.udp import decode_udp
from tools.compare import Finding, Ours, Pair, Report, Tally, compare_capture, fmt_key
from tools.expected import (
    FIELDS,
    Expected,
    FlowKey,
    ZeekLog,
    ja4_handshakes,
    ndpi_handshakes,
    norm_serial,
    parse_zeek_log,
    suricata_handshakes,
    tshark_handshakes,
    tshark_tuples,
    unordered,
    zeek_handshakes,
    zeek_serials,
)

TOOLS: Final = ("tshark", "zeek", "ja4", "ndpi", "suricata")


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One capture of the corpus and the files that describe it (paths relative to it)."""

    path: str
    notes: str
    expected_files: tuple[str, ...]
    tshark_oracle: str | None


def read_catalog(corpus: Path) -> list[CatalogEntry]:
    """The rows of ``CATALOG.tsv``, in file order."""
    with (corpus / "CATALOG.tsv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        CatalogEntry(
            path=row["local_path"],
            notes=row.get("notes") or "",
            expected_files=tuple(p for p in (row.get("expected_output_files") or "").split()
                                 if p != "-"),
            tshark_oracle=None if row.get("tshark_oracle_json") in (None, "", "-")
            else row["tshark_oracle_json"],
        )
        for row in rows
    ]


# -- our side ------------------------------------------------------------------------------

def ours_from_event(event: HandshakeEvent) -> Ours:
    """The compared fields of one handshake event."""
    tls, detail = event.tls, event.certwatch.tls
    hello, server_hello = detail.client_hello, detail.server_hello
    leaf = tls.server.hash
    x509 = tls.server.x509
    values: dict[str, str | None] = {
        "sni": tls.client.server_name,
        "version": f"{tls.version_protocol}{tls.version}" if tls.version else None,
        "cipher": tls.cipher.upper() if tls.cipher else None,
        "cipher_code": f"0x{server_hello.cipher_suite_code.lower()}" if server_hello else None,
        "alpn": tls.next_protocol,
        "alpn_offered": ",".join(hello.alpn) if hello and hello.alpn else None,
        "leaf_sha256": leaf.sha256.lower() if leaf else None,
        "leaf_sha1": leaf.sha1.lower() if leaf and leaf.sha1 else None,
        "serial": norm_serial(x509.serial_number) if x509 else None,
        "ja3": tls.client.ja3,
        "ja3s": tls.server.ja3s,
        "ja4": hello.ja4 if hello else None,
        "ja4s": server_hello.ja4s if server_hello else None,
    }
    key = (event.source.ip, event.source.port, event.destination.ip, event.destination.port)
    return Ours(key, {name: value for name, value in values.items() if value})


@dataclass(slots=True)
class SensorRun:
    handshakes: list[Ours] = field(default_factory=list)
    udp_handshakes: list[Ours] = field(default_factory=list)
    pairs: set[Pair] = field(default_factory=set)
    packets: int = 0
    seconds: float = 0.0
    note: str = ""
    anomalies: list[str] = field(default_factory=list)


def run_sensor(path: Path, config: SensorConfig) -> SensorRun:
    """Feed the capture to a fresh sensor; also note every TCP endpoint pair in it, so
    that shared baselines' rows from other captures can be told apart."""
    run = SensorRun()
    anomalies: Counter[str] = Counter()
    first_detail: dict[str, str] = {}
    started = time.perf_counter()
    sensor = Sensor(config)
    raw_pairs: set[tuple[bytes, int, bytes, int]] = set()
    events = []
    with open_capture(path) as reader:
        for timestamp, linktype, data in reader:
            sensor.process(timestamp, linktype, data)
            run.packets += 1
            try:
                segment = decode_frame(linktype, data)
            except DecodeError:
                continue
            if segment is not None:
                raw_pairs.add((segment.src_addr, segment.src_port,
                               segment.dst_addr, segment.dst_port))
            else:
                _add_udp_pair(linktype, data, raw_pairs)
            if sensor.pending > 256:
                events.extend(sensor.drain())
        if reader.truncated:
            run.note = f"capture reader stopped early: {reader.stop_reason}"
    events.extend(sensor.finish())
    for event in events:
        if isinstance(event, AnomalyEvent):
            anomaly = event.certwatch.anomaly
            anomalies[anomaly.kind] += anomaly.count
            first_detail.setdefault(anomaly.kind, anomaly.detail)
    run.anomalies = [f"{kind} x{n} ({first_detail[kind]})" for kind, n in anomalies.items()]
    handshakes = [e for e in events if isinstance(e, HandshakeEvent)]
    handshakes.sort(key=lambda e: e.timestamp)
    run.handshakes = [
        ours_from_event(e) for e in handshakes if e.network.transport == "tcp"
    ]
    run.udp_handshakes = [
        ours_from_event(e) for e in handshakes if e.network.transport == "udp"
    ]
    run.pairs = {
        unordered((format_addr(a), p, format_addr(b), q)) for a, p, b, q in raw_pairs
    }
    run.seconds = time.perf_counter() - started
    return run


def _add_udp_pair(linktype: int, data: bytes,
                  pairs: set[tuple[bytes, int, bytes, int]]) -> None:
    try:
        datagram = decode_udp(linktype, data)
    except DecodeError:
        return
    if datagram is not None:
        pairs.add((datagram.src_addr, datagram.src_port, datagram.dst_addr, datagram.dst_port))


# -- their side ----------------------------------------------------------------------------

@dataclass(slots=True)
class References:
    records: list[Expected] = field(default_factory=list)
    tshark_pairs: dict[Pair, str] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)


def load_references(corpus: Path, entry: CatalogEntry) -> References:
    """Every expected output of one capture that a reader exists for."""
    refs = References()
    if entry.tshark_oracle:
        oracle = json.loads((corpus / entry.tshark_oracle).read_text(encoding="utf-8"))
        refs.records += tshark_handshakes(oracle, entry.tshark_oracle)
        refs.tshark_pairs = tshark_tuples(oracle)
    zeek_ssl: list[tuple[str, ZeekLog]] = []
    zeek_x509: list[ZeekLog] = []
    for name in entry.expected_files:
        path = corpus / name
        if name.endswith(".log"):
            log = parse_zeek_log(path.read_text(encoding="utf-8", errors="replace"))
            if log.path == "ssl":
                zeek_ssl.append((name, log))
            elif log.path == "x509":
                zeek_x509.append(log)
        elif ("/expected/python/" in name and name.endswith(".json")) or name.endswith(
            ".ja4-python.json"
        ):
            refs.records += ja4_handshakes(json.loads(path.read_text(encoding="utf-8")), name)
        elif name.endswith(".out"):
            refs.records += ndpi_handshakes(path.read_text(encoding="utf-8", errors="replace"),
                                            name)
        elif name.endswith("test.yaml"):
            test = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(test, dict):
                refs.records += suricata_handshakes(test, name)
        else:
            refs.unread.append(name)
    serials = zeek_serials(zeek_x509)
    for name, log in zeek_ssl:
        refs.records += zeek_handshakes(log, serials, name)
    return refs


# -- the run -------------------------------------------------------------------------------

def check_capture(
    corpus: Path, entry: CatalogEntry, config: SensorConfig, fields: Sequence[str],
    report: Report, udp_report: Report | None = None,
) -> None:
    """Load the references, run the sensor, compare; a sensor exception is recorded.
    UDP handshakes (QUIC, DTLS) are counted in ``udp_report`` (left out when None)."""
    refs = load_references(corpus, entry)
    try:
        run = run_sensor(corpus / entry.path, config)
    except Exception:  # the report must go on; every crash is shown and fails the run
        report.crashes.append((entry.path, traceback.format_exc()))
        return
    if run.note:
        report.notes.append((entry.path, run.note))
    report.notes += [(entry.path, f"sensor anomaly: {text}") for text in run.anomalies]
    report.captures += 1
    report.packets += run.packets
    report.sensor_seconds += run.seconds
    report.our_handshakes += len(run.handshakes)
    known = run.pairs | set(refs.tshark_pairs)
    tcp = [r for r in refs.records if r.transport == "tcp"]
    udp = [r for r in refs.records if r.transport != "tcp"]
    compare_capture(entry.path, run.handshakes, tcp if udp_report else refs.records, known,
                    fields, report)
    if udp_report is not None and (udp or run.udp_handshakes):
        udp_report.captures += 1
        udp_report.packets += run.packets
        udp_report.our_handshakes += len(run.udp_handshakes)
        # compare_capture pairs "tcp" records only; ours are UDP events, so the references
        # are relabelled for the pairing (endpoints and values unchanged).
        relabelled = [dataclasses.replace(r, transport="tcp") for r in udp]
        compare_capture(entry.path, run.udp_handshakes, relabelled, known, fields, udp_report)


def run_corpus(
    corpus: Path, only: str | None = None, foxio: bool = False,
    progress: bool = False, udp_report: Report | None = None,
) -> Report:
    """Check every catalogued capture whose path contains ``only``; UDP handshakes are
    counted in ``udp_report`` when one is given, else left out (``udp_left_out``)."""
    config = SensorConfig(name="corpus-check", foxio_fingerprints=foxio)
    fields = [name for name in FIELDS if foxio or name != "ja4s"]
    report = Report()
    for entry in read_catalog(corpus):
        if only and only not in entry.path:
            continue
        if progress:
            print(f"  {entry.path}", file=sys.stderr)
        check_capture(corpus, entry, config, fields, report, udp_report)
    return report


# -- output --------------------------------------------------------------------------------

def _cell(tally: Tally | None) -> str:
    if tally is None or not tally.total:
        return "-"
    return f"{tally.agree}/{tally.total} ({100 * tally.agree // tally.total}%)"


def _table_and_findings(report: Report) -> list[str]:
    lines = ["agree/total per field and tool (total: handshakes where the tool has a value)"]
    width = 20
    lines.append("field".ljust(14) + "".join(tool.rjust(width) for tool in TOOLS))
    for name in (*FIELDS,):
        row = report.tallies.get(name)
        if not row:
            continue
        lines.append(name.ljust(14) + "".join(_cell(row.get(t)).rjust(width) for t in TOOLS))
    lines.append("")
    lines.append(f"disagreements ({len(report.disagreements)}): capture | handshake | "
                 "field | ours | theirs (tool)")
    lines += [
        f"  {f.capture} | {fmt_key(f.key)} | {f.field} | {f.ours} | {f.theirs} ({f.tool})"
        for f in report.disagreements
    ]
    lines.append("")
    lines.append(f"missing in ours ({len(report.missing)}): capture | handshake | field | "
                 "theirs (tool); field 'handshake': we emitted no event for it")
    lines += [
        f"  {f.capture} | {fmt_key(f.key)} | {f.field} | {f.theirs} ({f.tool})"
        for f in _collapse_missing(report.missing)
    ]
    return lines


def render(report: Report, elapsed: float, udp: Report | None = None) -> str:
    """The human report: summary, field x tool table, then every finding; then the same
    for UDP handshakes (QUIC, DTLS) when ``udp`` is given."""
    left_out = (f"left out {report.udp_left_out} UDP handshakes" if udp is None
                else "UDP handshakes in their own table below")
    lines = [
        f"certwatch corpus check: {report.captures} captures, {report.packets} packets, "
        f"{report.our_handshakes} TCP handshake events "
        f"(sensor {report.sensor_seconds:.1f} s, total {elapsed:.1f} s)",
        f"{left_out}; {report.our_unreferenced} of our handshakes no tool reports",
        "",
        *_table_and_findings(report),
    ]
    if udp is not None:
        lines += [
            "",
            f"UDP (QUIC, DTLS): {udp.captures} captures with UDP handshakes, "
            f"{udp.our_handshakes} UDP handshake events; {udp.our_unreferenced} of them "
            "no tool reports",
            "",
            *_table_and_findings(udp),
        ]
    if report.skipped:
        lines.append("")
        lines.append("skipped captures:")
        lines += [f"  {path}: {why}" for path, why in report.skipped]
    if report.notes:
        lines.append("")
        lines.append("notes:")
        lines += [f"  {path}: {note}" for path, note in report.notes]
    if report.crashes:
        lines.append("")
        lines.append(f"SENSOR CRASHED on {len(report.crashes)} captures:")
        for path, trace in report.crashes:
            lines.append(f"--- {path}")
            lines.append(trace.rstrip())
    return "\n".join(lines)


def _collapse_missing(findings: Sequence[Finding]) -> list[Finding]:
    """One line per (capture, tool, handshake) for handshakes we never emitted."""
    out: list[Finding] = []
    seen: dict[tuple[str, str, FlowKey | None, str], int] = {}
    for finding in findings:
        if finding.field != "handshake":
            out.append(finding)
            continue
        group = (finding.capture, finding.tool, finding.key, finding.origin)
        if group in seen:
            previous = out[seen[group]]
            out[seen[group]] = Finding(previous.capture, previous.tool, previous.key,
                                       previous.field, None,
                                       f"{previous.theirs} {finding.theirs}", previous.origin)
        else:
            seen[group] = len(out)
            out.append(finding)
    return out


def to_json(report: Report, udp: Report | None = None) -> dict[str, object]:
    out = _report_json(report)
    if udp is not None:
        out["udp"] = _report_json(udp)
    return out


def _report_json(report: Report) -> dict[str, object]:
    return {
        "summary": {
            "captures": report.captures, "packets": report.packets,
            "our_handshakes": report.our_handshakes,
            "our_unreferenced": report.our_unreferenced,
            "udp_left_out": report.udp_left_out,
            "sensor_seconds": round(report.sensor_seconds, 3),
        },
        "tallies": {
            name: {tool: asdict(t) for tool, t in row.items()}
            for name, row in report.tallies.items()
        },
        "disagreements": [asdict(f) for f in report.disagreements],
        "missing": [asdict(f) for f in report.missing],
        "skipped": [{"capture": p, "reason": r} for p, r in report.skipped],
        "notes": [{"capture": p, "note": n} for p, n in report.notes],
        "crashes": [{"capture": p, "traceback": t} for p, t in report.crashes],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.corpus_check",
        description="Compare the sensor with tshark, Zeek, JA4, nDPI and Suricata on the "
                    "corpus's captures. Exit 1 only if the sensor crashed.",
    )
    parser.add_argument("corpus", type=Path, help="the corpus folder (holds CATALOG.tsv)")
    parser.add_argument("--only", metavar="SUBSTRING",
                        help="only captures whose path contains this")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also write the report here")
    parser.add_argument("--foxio", action="store_true",
                        help="compute and compare JA4S (FoxIO License 1.1)")
    parser.add_argument("--progress", action="store_true",
                        help="name each capture on stderr as it starts")
    args = parser.parse_args(argv)
    if not (args.corpus / "CATALOG.tsv").is_file():
        parser.error(f"{args.corpus}: no CATALOG.tsv there")
    # The sensor logs the first anomaly of each kind; here they are reported per capture.
    logging.getLogger("certwatch").addHandler(logging.NullHandler())
    started = time.perf_counter()
    udp = Report()
    report = run_corpus(args.corpus, args.only, args.foxio, args.progress, udp)
    print(render(report, time.perf_counter() - started, udp))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(report, udp), indent=1) + "\n",
                             encoding="utf-8")
    return 1 if report.crashes else 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: the sensor against tshark and the bare record loop, on the same captures.

Usage: ``python -m bench.run [--quick] [--rounds N] [--no-tshark] [--no-memory]``.

1. Generates the benchmark captures with ``tools.tlsgen`` (fixed seed) into ``bench/.cache/``
   unless they are there already: the throughput capture (20,000 connections, 70% TLS 1.2
   with a 2-certificate chain, 30% TLS 1.3, 20 application-data segments each, 500 open at
   once; ``--quick``: 2,000 connections, 200 at once) and the memory capture (100,000
   connections all open at once; ``--quick``: 20,000).
2. Checks, once per capture, that the sensor and tshark found the same handshakes and
   certificates (an untimed run of each that writes what it found). No ratio is printed
   unless they agree.
3. Measures, in alternated rounds (the machine is noisy), each in its own process: the bare
   ``struct`` loop over the pcap records (the floor), ``certwatch replay --no-alerts --events
   /dev/null`` and tshark extracting SNI, version, cipher, JA3, serial and subject names
   (``-T fields``). Wall time and the child's peak RSS (``wait4``); the median round is
   reported. When ``.venv-compiled`` exists (``make compiled``: the hot modules compiled with
   mypyc), its ``certwatch replay`` runs in the same rounds, with the same count checks and
   ratios; the output says when it does not. Our packages are byte-compiled first
   (``compileall``), as ``make setup`` does, so no run compiles sources.
4. Measures the processors in-process: the capture's handshake events through
   ``Processor(Policy(), DETECTORS)``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
BIN = Path(sys.executable).parent
COMPILED_BIN = ROOT / ".venv-compiled" / "bin"
PY_PACKAGES = ("sensor", "processors", "schemas", "certwatch", "tools", "bench")
SEED = 1

TSHARK_FILTER = "tls.handshake.type == 1 || tls.handshake.type == 2 || tls.handshake.type == 11"
TSHARK_FIELDS = (
    "tcp.stream", "tls.handshake.type", "tls.handshake.extensions_server_name",
    "tls.handshake.version", "tls.handshake.ciphersuite", "tls.handshake.ja3",
    "x509af.serialNumber", "x509sat.printableString", "x509sat.uTF8String",
)

# The floor: the cheapest Python loop that touches every record (run as its own process,
# like the others, so each measurement starts cold in the same way).
FLOOR = r"""
import struct, sys
with open(sys.argv[1], "rb") as f:
    data = f.read(24)
    little = data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    unpack = struct.Struct("<IIII" if little else ">IIII").unpack
    read = f.read
    packets = size = 0
    while True:
        head = read(16)
        if len(head) < 16:
            break
        caplen = unpack(head)[2]
        frame = read(caplen)
        packets += 1
        size += len(frame)
print(packets, size)
"""


@dataclass(frozen=True, slots=True)
class Capture:
    name: str
    path: Path
    connections: int
    app_segments: int
    concurrency: int


@dataclass(slots=True)
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str


@dataclass(slots=True)
class Tool:
    name: str
    command: list[str]
    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def peak_rss_mb(self) -> float:
        return max(run.peak_rss_mb for run in self.runs)


def captures(quick: bool) -> list[Capture]:
    main = (2_000, 20, 200) if quick else (20_000, 20, 500)
    memory = (20_000, 1, 20_000) if quick else (100_000, 1, 100_000)
    out = []
    for name, (n, segments, concurrency) in (("throughput", main), ("memory", memory)):
        path = CACHE / f"benchmark-s{SEED}-c{n}-a{segments}-p{concurrency}.pcap"
        out.append(Capture(name, path, n, segments, concurrency))
    return out


def empty_capture() -> Path:
    """A pcap with its file header and no records, for timing start-up alone."""
    path = CACHE / "empty.pcap"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        # Little-endian pcap 2.4, snaplen 65535, linktype 1 (Ethernet).
        path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return path


def generate(capture: Capture) -> None:
    if capture.path.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = capture.path.with_suffix(".partial")
    print(f"generating {capture.path.name} ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "tools.tlsgen", "benchmark", str(partial), "--seed", str(SEED),
         "--connections", str(capture.connections),
         "--app-segments", str(capture.app_segments),
         "--concurrency", str(capture.concurrency)],
        check=True, cwd=ROOT,
    )
    partial.rename(capture.path)


TIME = shutil.which("time", path="/usr/bin:/bin")


def measure(command: Sequence[str]) -> Run:
    """Run ``command`` to completion: wall time and the child's own peak RSS.

    The peak RSS comes from GNU time when it is installed: Linux carries a parent's peak RSS
    over fork and exec into the child's figure, so measured straight from this (large)
    process every child would look at least as big as we are. Without GNU time, wait4's
    figure is used (an upper bound)."""
    report = CACHE / "time.txt"
    prefix = [TIME, "-f", "%M", "-o", str(report)] if TIME else []
    started = time.perf_counter()
    child = subprocess.Popen([*prefix, *command], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT, text=True)
    # wait4 (not communicate) reaps the child, for its rusage; the pipes are read on
    # threads so a chatty child never blocks on a full pipe.
    out, err = _drain(child)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{command[0]} failed ({code}): {err[-2000:]}")
    peak_kb = int(report.read_text().split()[-1]) if TIME else usage.ru_maxrss
    return Run(seconds, peak_kb / 1024, out, err)


def _drain(child: subprocess.Popen[str]) -> tuple[str, str]:
    assert child.stdout is not None and child.stderr is not None
    chunks: dict[str, str] = {}

    def read(name: str, stream: object) -> None:
        chunks[name] = stream.read()  # type: ignore[attr-defined]

    threads = [threading.Thread(target=read, args=(n, s))
               for n, s in (("out", child.stdout), ("err", child.stderr))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return chunks["out"], chunks["err"]


def tshark_command(path: Path) -> list[str]:
    command = ["tshark", "-n", "-r", str(path), "-Y", TSHARK_FILTER, "-T", "fields",
               "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]
    for name in TSHARK_FIELDS:
        command += ["-e", name]
    return command


def sensor_command(path: Path, events: str = "/dev/null", bin_dir: Path = BIN) -> list[str]:
    return [str(bin_dir / "certwatch"), "replay", "--no-alerts", "--events", events, str(path)]


def compiled_bin() -> Path | None:
    """The compiled build's bin directory when ``make compiled`` made one whose sensor is
    compiled (an ``.so``), else None."""
    if not (COMPILED_BIN / "certwatch").exists():
        return None
    done = subprocess.run([str(COMPILED_BIN / "python"), "-c",
                           "import sensor.sensor as m; print(m.__file__)"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    return COMPILED_BIN if done.stdout.strip().endswith(".so") else None


def precompile() -> None:
    """Byte-compile our packages (what ``make setup`` does): with PYTHONDONTWRITEBYTECODE set,
    every run would otherwise compile them from source (~60 ms of start-up)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", *PY_PACKAGES], cwd=ROOT,
                   check=True)


# -- what each found ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    handshakes: int
    certificates: int  # certificates in Certificate messages, counted every time
    distinct: int  # distinct certificates


def tshark_found(stdout: str) -> Found:
    streams: set[str] = set()
    certificates = 0
    serials: set[str] = set()
    for line in stdout.splitlines():
        fields = line.split("|")
        streams.add(fields[0])
        serial = [s for s in fields[6].split(";") if s]
        certificates += len(serial)
        serials.update(serial)
    return Found(len(streams), certificates, len(serials))


def sensor_found(events_path: Path) -> tuple[Found, list[bytes]]:
    handshakes = certificates = 0
    distinct: set[str] = set()
    lines = []
    with open(events_path, "rb") as stream:
        for line in stream:
            if b'"certwatch.tls.handshake"' not in line:
                continue
            lines.append(line)
            event = json.loads(line)
            handshakes += 1
            tls = event["certwatch"]["tls"]
            for entry in tls.get("server_chain", []) + tls.get("client_chain", []):
                certificates += 1
                distinct.add(entry["hash"]["sha256"])
    return Found(handshakes, certificates, len(distinct)), lines


def summary_counts(stderr: str) -> tuple[int, int]:
    """(packets, handshakes) from certwatch replay's summary."""
    packets = re.search(r"([\d,]+) packets in", stderr)
    handshakes = re.search(r"handshakes\s+([\d,]+)", stderr)
    if packets is None or handshakes is None:
        raise RuntimeError(f"no summary in certwatch's output: {stderr[-1000:]}")
    return int(packets[1].replace(",", "")), int(handshakes[1].replace(",", ""))


# -- processors -----------------------------------------------------------------------------


def processor_rate(lines: list[bytes], rounds: int) -> tuple[int, float]:
    sys.path.insert(0, str(ROOT))
    from processors.engine import Processor
    from processors.policy import Policy
    from processors.registry import DETECTORS
    from schemas.events import HandshakeEvent

    events = [HandshakeEvent.model_validate_json(line) for line in lines]
    times = []
    for _ in range(rounds):
        processor = Processor(Policy(), DETECTORS)
        started = time.perf_counter()
        for event in events:
            processor.process(event)
        times.append(time.perf_counter() - started)
    return len(events), len(events) / statistics.median(times)


# -- the run ---------------------------------------------------------------------------------


def bench_capture(capture: Capture, rounds: int, with_tshark: bool,
                  lines_out: list[bytes] | None, compiled: Path | None = None) -> None:
    size_mb = capture.path.stat().st_size / 1e6
    print(f"\n== {capture.name}: {capture.path.name} ({size_mb:,.0f} MB; "
          f"{capture.connections:,} connections, {capture.concurrency:,} open at once)")
    floor = Tool("floor (struct loop)", [sys.executable, "-c", FLOOR, str(capture.path)])
    sensor = Tool("certwatch replay", sensor_command(capture.path))
    tshark = Tool("tshark -T fields", tshark_command(capture.path))
    sensors = [sensor]
    if compiled is not None:
        sensors.append(Tool("certwatch compiled", sensor_command(capture.path,
                                                                  bin_dir=compiled)))
    tools = [floor, *sensors] + ([tshark] if with_tshark else [])
    # Start-up alone (an empty capture): how much of each tool's time is not per packet.
    empty = empty_capture()
    startups = [Tool("certwatch start-up", sensor_command(empty))]
    if compiled is not None:
        startups.append(Tool("compiled start-up", sensor_command(empty, bin_dir=compiled)))
    if with_tshark:
        startups.append(Tool("tshark start-up", tshark_command(empty)))

    # Agreement first, untimed: what each found.
    events_path = CACHE / f"{capture.path.stem}.events.jsonl"
    run = measure(sensor_command(capture.path, str(events_path)))
    found_sensor, lines = sensor_found(events_path)
    events_path.unlink()
    if lines_out is not None:
        lines_out.extend(lines)
    agree = True
    print(f"sensor found: {found_sensor.handshakes:,} handshakes, "
          f"{found_sensor.certificates:,} certificates ({found_sensor.distinct} distinct)")
    if with_tshark:
        found_tshark = tshark_found(measure(tshark.command).stdout)
        print(f"tshark found: {found_tshark.handshakes:,} handshakes, "
              f"{found_tshark.certificates:,} certificates ({found_tshark.distinct} distinct)")
        agree = found_sensor == found_tshark
        if not agree:
            print("MISMATCH: the sensor and tshark disagree; no ratios printed")

    for number in range(rounds):
        for tool in tools + startups:
            tool.runs.append(measure(tool.command))
        print(f"round {number + 1}/{rounds}: " + ", ".join(
            f"{tool.name} {tool.runs[-1].seconds:.2f} s" for tool in tools), flush=True)

    packets_text, frame_bytes = floor.runs[0].stdout.split()
    packets, frame_bits = int(packets_text), int(frame_bytes) * 8
    for tool in tools:
        if tool in sensors:
            for run in tool.runs:
                counted, handshakes = summary_counts(run.stderr)
                if counted != packets or handshakes != found_sensor.handshakes:
                    raise RuntimeError(f"{tool.name} counted {counted} packets, {handshakes} "
                                       "handshakes in a timed run; expected "
                                       f"{packets}, {found_sensor.handshakes}")
    print(f"\n{'':22}{'seconds':>9}{'packets/s':>12}{'Mbit/s':>9}{'handshakes/s':>14}"
          f"{'peak RSS MB':>13}")
    for tool in tools:
        s = tool.seconds
        print(f"{tool.name:22}{s:9.2f}{packets / s:12,.0f}{frame_bits / s / 1e6:9,.0f}"
              f"{found_sensor.handshakes / s:14,.0f}{tool.peak_rss_mb:13,.0f}")
    print("start-up (empty capture): " + ", ".join(
        f"{tool.name.removesuffix(' start-up')} {tool.seconds:.2f} s" for tool in startups))
    # The targets: time against the floor on the throughput capture, peak RSS on the
    # memory one (100k flows open at once is the point there, not speed).
    for tool in sensors:
        label = "sensor" if tool is sensor else "compiled sensor"
        if capture.name == "memory":
            print(f"{label} time / floor time: {tool.seconds / floor.seconds:.2f}; "
                  f"{label} peak RSS {tool.peak_rss_mb:,.0f} MB (target < 150 at 100k flows)")
        else:
            print(f"{label} time / floor time: {tool.seconds / floor.seconds:.2f} "
                  "(target <= 4)")
        if with_tshark and agree:
            print(f"{label} packets/s / tshark packets/s: "
                  f"{tshark.seconds / tool.seconds:.2f} (target >= 4)")
    if compiled is not None:
        print(f"compiled / pure time: {sensors[1].seconds / sensor.seconds:.2f}")
    print("median of", rounds, "rounds; peak RSS is the largest of the rounds")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small captures, one round")
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (3)")
    parser.add_argument("--no-tshark", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="skip the 100k-flow capture")
    parser.add_argument("--kafka", action="store_true",
                        help="then the processors end to end through Kafka (bench.kafka_e2e)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    with_tshark = not args.no_tshark and shutil.which("tshark") is not None
    if not args.no_tshark and not with_tshark:
        print("tshark not found: measuring the sensor and the floor only")
    throughput, memory = captures(args.quick)
    selected = [throughput] if args.no_memory else [throughput, memory]
    for capture in selected:
        generate(capture)
    precompile()
    compiled = compiled_bin()
    print(f"our packages byte-compiled first (compileall {' '.join(PY_PACKAGES)})")
    if compiled is None:
        print("compiled build: not measured (no .venv-compiled with a compiled sensor; "
              "`make compiled` to add it)")
    else:
        print(f"compiled build: {compiled / 'certwatch'} (mypyc, make compiled) measured in "
              "the same rounds")
    lines: list[bytes] = []
    bench_capture(throughput, rounds, with_tshark, lines, compiled)
    if not args.no_memory:
        # tshark is left out here: it needs several GB on 100k flows and says nothing new.
        bench_capture(memory, max(1, rounds // 3), False, None, compiled)
    count, rate = processor_rate(lines, rounds)
    print(f"\nprocessors in-process: {count:,} handshake events through every detector: "
          f"{rate:,.0f} events/s (target >= 50,000)")
    if args.kafka:
        from bench import kafka_e2e
        print("\nprocessors through Kafka (python -m bench.kafka_e2e):", flush=True)
        return kafka_e2e.main(["--quick"] if args.quick else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())

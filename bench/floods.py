"""``make floods``: the sensor under four floods, each mixed with 4 real handshakes.

Usage: ``python -m bench.floods [--quick] [--max-flows N] [--only NAME ...]``.

For each flood of ``tools.tlsgen.floods`` (half-open flows, a SYN flood to one server,
length fields claiming 16 MiB, endless one-byte segments) this generates the capture into
``bench/.cache/floods/`` (streamed to disk; reused on the next run), runs ``certwatch replay
--no-alerts --events FILE CAPTURE`` in its own process, and prints a table: packets, wall and
CPU seconds, the child's peak RSS, the anomalies the sensor reported (kinds and counts,
summed over the anomaly events) and how many of the 4 legitimate handshakes are among the
events, established. See bench/README.md, "Floods", for the memory bound these must obey.

Peak RSS is the child's own high-water mark (``VmHWM`` of ``/proc/self/status``, read at
its exit): on Linux ``ru_maxrss`` of a child spawned from a large parent starts at the
parent's size, which would make every run look as big as this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.tlsgen.floods import FLOODS, LEGIT

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "floods"
SEED = 1
#: Sizes of the full run (``--quick``: the CI sizes of tests/sensor/test_floods.py).
FULL = {"flood-half-open": 1_000_000, "flood-syn": 1_000_000, "flood-claim-16mb": 300,
        "flood-one-byte": 1_000_000, "flood-fill-buffers": 600}
QUICK = {"flood-half-open": 50_000, "flood-syn": 50_000, "flood-claim-16mb": 30,
         "flood-one-byte": 20_000, "flood-fill-buffers": 60}
RSS_MARK = "certwatch-flood-peak-rss-kb"
# The child: certwatch's own entry point, then its peak RSS on stderr (see the docstring).
_CHILD = f"""
import sys
from certwatch.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print("{RSS_MARK}", peak, file=sys.stderr)
sys.exit(code)
"""


@dataclass(slots=True)
class FloodRun:
    """What one flood did to the sensor."""

    name: str
    size: int
    capture_bytes: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    packets: int
    anomalies: Counter[str] = field(default_factory=Counter)
    legit_reported: int = 0
    handshakes: int = 0
    summary: str = ""


def capture_path(name: str, size: int, directory: Path = CACHE) -> Path:
    return directory / f"{name}-s{SEED}-n{size}.pcap"


def generate(name: str, size: int, directory: Path = CACHE) -> Path:
    """The flood's capture, generated unless it is there already."""
    path = capture_path(name, size, directory)
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    subprocess.run([sys.executable, "-m", "tools.tlsgen", name, str(partial), "--seed",
                    str(SEED), "--connections", str(size)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    partial.rename(path)
    return path


def replay(capture: Path, events: Path, *, max_flows: int | None = None,
           name: str = "", size: int = 0) -> FloodRun:
    """``certwatch replay --no-alerts --events EVENTS CAPTURE`` in a child process: wall
    and CPU time, peak RSS, and what its events say. Raises RuntimeError if it fails."""
    args = ["replay", "--no-alerts", "--sensor-name", "flood-bench", "--events", str(events),
            str(capture)]
    if max_flows is not None:
        args[1:1] = ["--max-flows", str(max_flows)]
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    with child.stderr:
        err = child.stderr.read()  # a summary and a few log lines: never enough to block on
    # wait4, not wait: it also gives the child's CPU time.
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
    if child.returncode != 0:
        raise RuntimeError(f"certwatch replay failed: {err[-2000:]}")
    peak_kb = next(int(line.split()[1]) for line in err.splitlines()
                   if line.startswith(RSS_MARK))
    run = FloodRun(name, size, capture.stat().st_size, wall, usage.ru_utime + usage.ru_stime,
                   peak_kb / 1024, 0, summary=_summary(err))
    _read_events(events, run)
    return run


def _summary(stderr: str) -> str:
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("certwatch replay:")),
                 len(lines))
    return "\n".join(line for line in lines[start:] if not line.startswith(RSS_MARK))


def _read_events(path: Path, run: FloodRun) -> None:
    """Anomaly counts by kind, and the legitimate handshakes (SNI ``legitN.example.com``,
    established) among the handshake events."""
    legit: set[str] = set()
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            extension = event.get("certwatch", {})
            if "anomaly" in extension:
                run.anomalies[extension["anomaly"]["kind"]] += extension["anomaly"]["count"]
            elif "tls" in extension:
                run.handshakes += 1
                tls = event.get("tls", {})
                name = tls.get("client", {}).get("server_name") or ""
                if name.startswith("legit") and tls.get("established"):
                    legit.add(name)
    run.legit_reported = len(legit)
    packets = run.summary.split(" packets", 1)[0].rsplit(" ", 1)[-1]
    run.packets = int(packets.replace(",", "")) if packets.replace(",", "").isdigit() else 0


def table(runs: Sequence[FloodRun]) -> str:
    """The runs as a Markdown table."""
    rows = ["| flood | size | capture | packets | wall s | CPU s | peak RSS | anomalies "
            "reported (kind: count) | legit handshakes |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        kinds = ", ".join(f"{k}: {n:,}" for k, n in sorted(r.anomalies.items())) or "none"
        rows.append(f"| {r.name} | {r.size:,} | {r.capture_bytes / 1e6:,.0f} MB | "
                    f"{r.packets:,} | {r.wall_seconds:.1f} | {r.cpu_seconds:.1f} | "
                    f"{r.peak_rss_mb:.0f} MB | {kinds} | {r.legit_reported}/{LEGIT} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the CI sizes")
    parser.add_argument("--max-flows", type=int, help="passed to certwatch replay")
    parser.add_argument("--only", nargs="+", choices=sorted(FLOODS), help="these floods only")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    runs = []
    for name in args.only or list(sizes):
        capture = generate(name, sizes[name])
        print(f"{name}: {capture.name}, replaying ...", flush=True)
        run = replay(capture, capture.with_suffix(".events.jsonl"), max_flows=args.max_flows,
                     name=name, size=sizes[name])
        print(run.summary, flush=True)
        runs.append(run)
    print()
    print(table(runs))
    missing = [r.name for r in runs if r.legit_reported < LEGIT]
    if missing:
        print(f"legitimate handshakes missing under: {', '.join(missing)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

"""The compiled build writes the same events as the pure one, byte for byte.

Usage: ``python -m tools.compiled.equivalence [--pure VENV] [--compiled VENV] [--keep DIR]``
(``make test-compiled`` runs it). For every test capture (``tests/data``, fuzz crashers
aside) and the quick benchmark capture (generated like ``make bench`` does when missing),
with and without ``--foxio``, runs ``certwatch replay --no-alerts --events F`` of both venvs
and compares the event files and exit codes. Exit status 0 when all agree, 1 otherwise (each
difference is named). Two replays run at a time (one pure, one compiled).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz")


@dataclass(frozen=True, slots=True)
class Replay:
    code: int
    events: bytes
    stderr: str


def capture_paths() -> list[Path]:
    found = [path for path in (ROOT / "tests" / "data").rglob("*")
             if path.name.endswith(CAPTURE_SUFFIXES) and "fuzz" not in path.parts]
    return sorted(found)


def quick_bench_capture() -> Path:
    from bench.run import captures, generate
    capture = captures(quick=True)[0]
    generate(capture)
    return capture.path


def replay(venv: Path, capture: Path, foxio: bool, out: Path) -> Replay:
    command = [str(venv / "bin" / "certwatch"), "replay", "--no-alerts",
               *(["--foxio"] if foxio else []), "--events", str(out), str(capture)]
    # The pure venv runs this tree's sources (its editable install may point at another
    # checkout); the compiled venv imports only its installed build whatever the path says.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False, env=env)
    events = out.read_bytes() if out.exists() else b""
    return Replay(done.returncode, events, done.stderr)


def compiled_module_file(venv: Path) -> str:
    """Where the compiled venv's ``sensor.sensor`` comes from (an ``.so`` when compiled)."""
    done = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sensor.sensor as m; print(m.__file__)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def compare(pure: Path, compiled: Path, work: Path) -> list[str]:
    """Every difference between the two venvs' replays, as one line each."""
    cases = [(capture, foxio) for capture in [*capture_paths(), quick_bench_capture()]
             for foxio in (False, True)]
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for number, (capture, foxio) in enumerate(cases):
            name = f"{capture.relative_to(ROOT)}{' --foxio' if foxio else ''}"
            runs = [pool.submit(replay, venv, capture, foxio, work / f"{number}.{kind}.jsonl")
                    for kind, venv in (("pure", pure), ("compiled", compiled))]
            left, right = (run.result() for run in runs)
            if left.code != right.code:
                problems.append(f"{name}: exit {left.code} (pure) != {right.code} (compiled): "
                                f"{right.stderr[-500:]}")
            elif left.events != right.events:
                problems.append(f"{name}: events differ (kept in {work})")
            elif not left.events and left.code == 0:
                problems.append(f"{name}: no events written")
    print(f"{len(cases)} replays per venv compared")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compiled.equivalence",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pure", type=Path, default=ROOT / ".venv", help="pure venv (.venv)")
    parser.add_argument("--compiled", type=Path, default=ROOT / ".venv-compiled",
                        help="compiled venv (.venv-compiled)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the event files here and keep them")
    args = parser.parse_args(argv)
    where = compiled_module_file(args.compiled)
    print(f"compiled venv's sensor.sensor: {where}")
    if not where.endswith(".so"):
        print("the compiled venv's sensor.sensor is not compiled: run make compiled")
        return 1
    with tempfile.TemporaryDirectory(prefix="certwatch-equivalence-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        problems = compare(args.pure.absolute(), args.compiled.absolute(), work)
        for line in problems:
            print("DIFFERS:", line)
        if problems and args.keep is None:
            print("(run with --keep DIR to keep the event files)")
    print("byte-identical events" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

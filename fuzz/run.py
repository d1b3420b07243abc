"""Run one fuzz target: ``python -m fuzz.run TARGET [--seconds N] [--corpus DIR]``.

With atheris importable the run is coverage-guided (libFuzzer); otherwise a mutation loop
seeded from the real inputs in tests/data (and ``--corpus`` files) runs for the time
given. Both also seed from the captures of ``../shared/corpus`` when that directory exists
(extracted per target as tests/data's are) and from the regression inputs already kept in
``tests/data/fuzz/<target>/``. Either way it prints the inputs executed and the crashes,
and writes every crasher to ``tests/data/fuzz/<target>/`` where the regression test
replays it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import random
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from unittest import mock

from fuzz import targets as target_module
from fuzz.targets import DATA_DIR, TARGETS, Target

CRASH_DIR = DATA_DIR / "fuzz"
SHARED_CORPUS = DATA_DIR.parent.parent.parent / "shared" / "corpus"
SHARED_CAPTURE_MAX_BYTES = 1 << 20  # larger captures add time to seeding, little shape
HANG_SECONDS = 5.0  # one input taking longer than this is a hang: a crasher
MAX_INPUT = 256 * 1024
_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
_INTERESTING16 = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x4000)


class Hang(Exception):
    """Raised by the alarm when one input runs longer than HANG_SECONDS."""


@dataclass
class Result:
    target: str
    executed: int = 0
    crashes: list[Path] = field(default_factory=list)
    signatures: set[str] = field(default_factory=set)


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise Hang(f"input ran longer than {HANG_SECONDS} s")


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """Apply 1-4 random edits: bit flips, interesting bytes/words, inserted, deleted or
    duplicated chunks, a splice with another seed, truncation."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(buf)
        op = rng.randrange(8)
        if op == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 2 and n >= 2:
            i = rng.randrange(n - 1)
            buf[i : i + 2] = rng.choice(_INTERESTING16).to_bytes(2, "big")
        elif op == 3:
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and n:
            i = rng.randrange(n)
            del buf[i : i + rng.randint(1, 64)]
        elif op == 5 and n:
            i = rng.randrange(n)
            j = rng.randrange(n + 1)
            buf[j:j] = buf[i : i + rng.randint(1, 64)]
        elif op == 6 and pool:
            other = rng.choice(pool)
            i = rng.randrange(n + 1)
            j = rng.randrange(len(other) + 1)
            buf = buf[:i] + other[j:]
        elif op == 7 and n:
            del buf[rng.randrange(n) :]
    return bytes(buf[:MAX_INPUT])


def extra_seeds(name: str, shared: Path | None = SHARED_CORPUS) -> list[bytes]:
    """More seeds for target ``name``: its kept regression inputs, and the real captures
    under ``shared`` (``../shared/corpus``) run through the target's own seed extraction;
    just the former when ``shared`` is None or absent."""
    seeds = [p.read_bytes()[:MAX_INPUT] for p in sorted((CRASH_DIR / name).glob("*"))
             if p.is_file()]
    if shared is None or not shared.is_dir():
        return seeds
    captures = sorted(p for p in shared.rglob("*") if p.suffix in (".pcap", ".pcapng")
                      and p.stat().st_size <= SHARED_CAPTURE_MAX_BYTES)
    # The extraction reads ``seed_captures()`` through two caches: point it at the shared
    # captures for this one call, with the caches emptied before and after.
    cached = [getattr(target_module, n) for n in ("_capture_frames", "_stream_payloads")]
    with contextlib.ExitStack() as stack:
        for function in cached:
            function.cache_clear()
            stack.callback(function.cache_clear)
        stack.enter_context(mock.patch.object(target_module, "seed_captures", lambda: captures))
        return seeds + [s[:MAX_INPUT] for s in TARGETS[name].seeds()]


def check(target: Target, data: bytes) -> BaseException | None:
    """Run one input under the hang alarm; return the contract violation, if any."""
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        target.run(data)
    except (Exception, RecursionError) as exc:  # any escape is a finding: we record it
        return exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return None


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__}@{where}"


def save_crash(name: str, data: bytes, exc: BaseException) -> Path:
    directory = CRASH_DIR / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def mutation_loop(
    name: str,
    seconds: float,
    *,
    corpus: Path | None = None,
    seed: int = 0,
    save: bool = True,
    report: Callable[[str], None] = print,
    shared: Path | None = None,
) -> Result:
    """Mutate seeds for ``seconds``; return inputs executed and crashers (one saved per
    distinct exception type and location). ``shared``: also seed from that corpus of
    captures (see :func:`extra_seeds`)."""
    target = TARGETS[name]
    pool = [s[:MAX_INPUT] for s in target.seeds()]
    if shared is not None:
        pool += extra_seeds(name, shared)
    if corpus is not None:
        pool += [p.read_bytes()[:MAX_INPUT] for p in sorted(corpus.rglob("*")) if p.is_file()]
    pool = pool or [b""]
    rng = random.Random(seed)
    result = Result(name)
    old = signal.signal(signal.SIGALRM, _alarm)
    deadline = time.monotonic() + seconds
    try:
        for data in pool:  # the seeds themselves first: real inputs must pass
            _one(target, data, result, save, report)
        while time.monotonic() < deadline:
            _one(target, mutate(rng, rng.choice(pool), pool), result, save, report)
    finally:
        signal.signal(signal.SIGALRM, old)
    return result


def _one(
    target: Target, data: bytes, result: Result, save: bool, report: Callable[[str], None]
) -> None:
    result.executed += 1
    exc = check(target, data)
    if exc is None:
        return
    sig = _signature(exc)
    if sig in result.signatures:
        return
    result.signatures.add(sig)
    path = save_crash(target.name, data, exc) if save else None
    if path is not None:
        result.crashes.append(path)
    report(f"CRASH {target.name}: {sig}: {exc!r} -> {path}")


def run_atheris(name: str, seconds: float, corpus: Path | None) -> None:  # pragma: no cover
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    target = TARGETS[name]
    # libFuzzer grows its first corpus directory: keep that out of tests/data
    seed_dir = Path(tempfile.gettempdir()) / "certwatch-fuzz-corpus" / name
    seed_dir.mkdir(parents=True, exist_ok=True)
    for data in [*target.seeds(), *extra_seeds(name)]:
        (seed_dir / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    crash_dir = CRASH_DIR / name
    crash_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        f"-max_total_time={int(seconds)}",
        f"-timeout={int(HANG_SECONDS)}",
        f"-max_len={MAX_INPUT}",
        f"-artifact_prefix={crash_dir}/",
        "-print_final_stats=1",
        str(seed_dir),
    ]
    if corpus is not None:
        args.append(str(corpus))
    atheris.instrument_all()
    atheris.Setup(args, target.run)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--no-atheris", action="store_true", help="use the mutation loop")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # anomaly log lines would drown the report
    if not args.no_atheris:
        try:
            import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
        except ImportError:
            print("atheris not importable: using the mutation loop")
        else:
            run_atheris(args.target, args.seconds, args.corpus)
            return 0
    result = mutation_loop(args.target, args.seconds, corpus=args.corpus, shared=SHARED_CORPUS)
    print(f"{args.target}: {result.executed} inputs executed, {len(result.crashes)} crashes")
    return 1 if result.crashes else 0


if __name__ == "__main__":
    sys.exit(main())

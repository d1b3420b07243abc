"""CI-sized fuzzing (issue 7): every target's mutation loop for a few seconds, and every
crasher ever found (tests/data/fuzz/<target>/) replayed as a regression input.

A contract violation is any exception other than ParseError (CaptureError for the capture
target) escaping a target, a broken invariant, or an input running past the hang limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.run import CRASH_DIR, check, mutation_loop
from fuzz.targets import TARGETS

SMOKE_SECONDS = 2.5

# Crashers in sensor code that are known and not fixed yet: path relative to
# tests/data/fuzz -> the bug. Each is xfail(strict): fixing the bug makes it pass and
# the entry must then be removed.
KNOWN_BUGS: dict[str, str] = {}
"""Regression inputs whose bug is not fixed yet: relative path -> what is wrong."""


@pytest.fixture(autouse=True)
def _quiet_anomaly_log() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_exist_and_mutations_keep_the_contract(name: str) -> None:
    assert TARGETS[name].seeds(), f"{name}: no seeds extracted from tests/data"
    crashes: list[str] = []
    result = mutation_loop(name, SMOKE_SECONDS, seed=7, save=False, report=crashes.append)
    assert result.executed > 50, f"{name}: only {result.executed} inputs in {SMOKE_SECONDS} s"
    assert not crashes, "\n".join(crashes)


def _regression_inputs() -> list[object]:
    params: list[object] = []
    for path in sorted(CRASH_DIR.glob("*/*")):
        if not path.is_file() or path.parent.name not in TARGETS:
            continue
        rel = f"{path.parent.name}/{path.name}"
        marks = []
        if rel in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[rel]))
        params.append(pytest.param(path, id=rel, marks=marks))
    return params


@pytest.mark.parametrize("path", _regression_inputs())
def test_regression_input(path: Path) -> None:
    exc = check(TARGETS[path.parent.name], path.read_bytes())
    assert exc is None, f"{path}: {exc!r}"


def test_every_known_bug_has_its_input() -> None:
    for rel in KNOWN_BUGS:
        assert (CRASH_DIR / rel).is_file(), rel

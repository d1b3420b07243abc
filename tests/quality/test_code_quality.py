"""The house rules that a reviewer should not have to check by hand."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_imports_point_one_way() -> None:
    """certwatch -> sensor -> schemas, never back (the layers contract in pyproject.toml)."""
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_packages_are_mypy_strict_clean() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_capture_module_may_import_scapy() -> None:
    offenders = [
        path.relative_to(ROOT).as_posix()
        for package in ("sensor", "schemas", "certwatch")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "capture.py"
        and re.search(r"^\s*(import|from)\s+scapy", path.read_text(encoding="utf-8"), re.M)
    ]
    assert offenders == []

"""setup.py: pure by default, compiled only on request, never compiled in place."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import setuptools  # type: ignore[import-untyped, unused-ignore]

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "setup.py", "schemas", "sensor", "processors",
           "certwatch")


def copy_sources(target: Path) -> Path:
    """What the wheel is built from, as make compiled and the Dockerfile copy it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so")
    target.mkdir(parents=True)
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def environment(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "CERTWATCH_COMPILE"}
    return {**env, **extra}


def test_default_wheel_is_pure_python(tmp_path: Path) -> None:
    # pip's default build isolation, as `pip install .` and the Dockerfile build it.
    source = copy_sources(tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        capture_output=True, text=True, timeout=300, check=False, env=environment())
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("certwatch-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sensor/sensor.py" in names
    assert not [name for name in names if name.endswith((".so", ".c", ".pyd"))]
    assert not (source / "build" / "mypyc.ini").exists()


@pytest.mark.parametrize("command", ["editable_wheel", "develop"])
def test_compiling_an_editable_install_is_refused(tmp_path: Path, command: str) -> None:
    # Extension modules next to the sources would shadow them and go stale.
    source = copy_sources(tmp_path / "src")
    done = subprocess.run([sys.executable, "setup.py", command], cwd=source,
                          capture_output=True, text=True, timeout=120, check=False,
                          env=environment(CERTWATCH_COMPILE="1"))
    assert done.returncode != 0
    assert "refused for an editable install" in done.stderr
    assert not list(source.rglob("*.so")) and not list(source.rglob("*.c"))


def setup_arguments(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, object]:
    """What setup.py hands to setuptools.setup() for this command line."""
    seen: dict[str, object] = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(sys, "argv", ["setup.py", *argv])
    runpy.run_path(str(REPO / "setup.py"))
    return seen


def test_build_requirements_only_when_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    # setuptools' PEP 517 backend asks with `egg_info` (get_requires_for_build_wheel).
    monkeypatch.delenv("CERTWATCH_COMPILE", raising=False)
    assert setup_arguments(monkeypatch, "egg_info") == {}
    monkeypatch.setenv("CERTWATCH_COMPILE", "0")
    assert setup_arguments(monkeypatch, "bdist_wheel") == {}
    monkeypatch.setenv("CERTWATCH_COMPILE", "1")
    asked = setup_arguments(monkeypatch, "egg_info")
    assert "ext_modules" not in asked
    requires = asked["setup_requires"]
    assert isinstance(requires, list)
    assert any(name.startswith("mypy") for name in requires)

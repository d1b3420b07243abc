"""Under ``make test-compiled`` the tests run against the installed compiled build.

``make test-compiled`` sets ``CERTWATCH_EXPECT_COMPILED=1`` and runs pytest with the compiled
venv's interpreter from the repository root, where the sources are on ``sys.path`` too: these
tests fail if any of our modules came from the sources instead of the installed wheel, in
this process or in a subprocess started in the repository (as the CLI tests start theirs).
Skipped in any other run.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = ("sensor", "processors", "schemas", "certwatch")
# The compiled venv's site-packages (the venv itself may live inside the repository).
SITE = Path(sysconfig.get_path("purelib")).resolve()

pytestmark = pytest.mark.skipif(
    os.environ.get("CERTWATCH_EXPECT_COMPILED") != "1",
    reason="checks the compiled venv; run by make test-compiled")


def hot_modules() -> list[str]:
    """setup.py's HOT_MODULES as dotted names (read, not executed: running it builds)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "HOT_MODULES"
                for target in node.targets):
            paths = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no HOT_MODULES")


def test_every_hot_module_is_an_installed_extension() -> None:
    names = hot_modules()
    assert "sensor.sensor" in names
    for name in names:
        module = importlib.import_module(name)
        where = Path(module.__file__ or "")
        assert where.suffix == ".so", f"{name} is not compiled: {where}"
        assert SITE in where.resolve().parents, f"{name} is not the installed one: {where}"


def test_no_module_of_ours_comes_from_the_sources() -> None:
    importlib.import_module("certwatch.cli")
    loaded = {name: Path(str(module.__file__)).resolve() for name, module in sys.modules.items()
              if name.split(".")[0] in OURS and getattr(module, "__file__", None)}
    assert len(loaded) > 20
    from_sources = sorted(name for name, where in loaded.items() if SITE not in where.parents)
    assert from_sources == []


def test_a_subprocess_in_the_repository_imports_the_installed_build() -> None:
    # `python -m certwatch.cli` from the repository root puts the sources first on sys.path;
    # the CLI tests start the CLI that way.
    done = subprocess.run(
        [sys.executable, "-c", "import sensor.sensor as m, certwatch.cli as c; "
         "print(m.__file__); print(c.__file__)"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    compiled, cli = map(Path, done.stdout.split())
    assert compiled.suffix == ".so"
    assert SITE in compiled.resolve().parents and SITE in cli.resolve().parents

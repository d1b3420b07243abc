"""The optional compiled build: ``CERTWATCH_COMPILE=1 pip wheel .`` compiles the hot modules.

Everything about the package (name, dependencies, packages, scripts) is in pyproject.toml;
this file only adds extension modules, and only when asked:

* default (``pip install -e '.[dev]'``, ``make setup``, ``pip wheel .``): pure Python, exactly
  as without this file; neither mypy nor a C compiler is needed.
* ``CERTWATCH_COMPILE=1`` and a wheel build (``pip wheel .`` / ``pip install .``, ``make
  compiled``): the modules in :data:`HOT_MODULES` are compiled together by mypyc into one
  shared library (they call each other natively, which is where the gain is: compiled one by
  one they gain little or lose, bench/README.md "A mypyc study"). mypy and setuptools are then
  build requirements of that build only (``setup_requires``, which setuptools' PEP 517 backend
  reports from ``get_requires_for_build_wheel``, so pip installs them in the isolated build
  environment and nowhere else). The wheel still carries every ``.py`` file.
* ``CERTWATCH_COMPILE=1`` and an editable install: refused. Extension modules next to the
  sources would shadow them and go stale on the next edit.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup  # type: ignore[import-untyped, unused-ignore]

COMPILE_ENV = "CERTWATCH_COMPILE"

# Chosen by measurement (bench/README.md): the per-packet path and the handshake path, which
# must be compiled together. Modules left out and why: x509.py (a local type union mypyc
# rejects), certwatch/output.py (subclassed by interpreted code), the rest (cold).
HOT_MODULES = (
    "sensor/sensor.py",
    "sensor/flows.py",
    "sensor/flowhash.py",
    "sensor/pcapfile.py",
    "sensor/decode.py",
    "sensor/reassembly.py",
    "sensor/session.py",
    "sensor/traffic.py",
    "sensor/build.py",
    "sensor/fingerprints.py",
    "sensor/tls/records.py",
    "sensor/tls/handshake.py",
    "sensor/tls/registry.py",
)

# Only for the compiled build, in its isolated build environment. mypy's major version is
# pinned: mypyc's generated C and its runtime support change with it.
# pydantic: its mypy plugin, without which the schemas' aliased fields do not type-check.
COMPILE_REQUIRES = ["mypy>=2.3,<3", "pydantic>=2.6,<3", "setuptools>=77", "wheel"]


def wants_compiled() -> bool:
    return os.environ.get(COMPILE_ENV, "").strip() not in ("", "0")


def editable() -> bool:
    # setuptools' PEP 517 backend runs this file with its command in sys.argv.
    return any(arg in ("editable_wheel", "develop") for arg in sys.argv[1:])


# Commands that only write metadata: no extension is needed, and mypyc's type check and C
# generation (a good part of the build's time) would run once more for nothing.
METADATA_COMMANDS = ("egg_info", "dist_info")


def compiled_extensions() -> list[object] | None:
    """mypyc's extension modules, or None when the command only writes metadata (for
    ``get_requires_for_build_wheel``, before mypy is installed in the build environment)."""
    if any(arg in METADATA_COMMANDS for arg in sys.argv[1:]):
        return None
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(f"{COMPILE_ENV}=1 needs mypy (mypyc) in the build environment; "
                         "build with pip's default build isolation or install "
                         + " ".join(COMPILE_REQUIRES)) from None
    # Our own type-checking options, not pyproject.toml's [tool.mypy] (strict, for the
    # development venv): the isolated build environment has none of the third-party packages
    # but pydantic, and mypyc treats their objects as plain Python objects anyway.
    os.makedirs("build", exist_ok=True)
    config = os.path.join("build", "mypyc.ini")
    with open(config, "w", encoding="utf-8") as stream:
        stream.write("[mypy]\npython_version = 3.11\nignore_missing_imports = True\n"
                     "plugins = pydantic.mypy\n")
    return list(mypycify(
        ["--config-file", config, *HOT_MODULES],
        opt_level=os.environ.get("CERTWATCH_COMPILE_OPT", "3"),
        # The shared library's name (top level in site-packages), instead of a hash.
        group_name="certwatch_native",
    ))


if not wants_compiled():
    setup()
elif editable():
    raise SystemExit(f"{COMPILE_ENV}=1 builds a wheel; it is refused for an editable install "
                     "(extension modules in the tree would shadow the sources and go stale). "
                     "Use `make compiled` or `pip install .`.")
else:
    extensions = compiled_extensions()
    if extensions is None:
        setup(setup_requires=COMPILE_REQUIRES)
    else:
        setup(setup_requires=COMPILE_REQUIRES, ext_modules=extensions)

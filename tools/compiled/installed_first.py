"""Our packages come from the site-packages directory this file is installed in, never from
the repository.

``make compiled`` copies this file into ``.venv-compiled``'s site-packages as
``certwatch_installed_first.py``, with a ``certwatch_installed_first.pth`` that calls
:func:`install` at every interpreter start of that venv (importing this module does not).
Without it, anything that puts the repository on ``sys.path`` ahead of site-packages
(pytest's rootdir, ``python -m`` from the repository root, the tests' own subprocesses)
would import the pure sources and test nothing compiled. A package missing from
site-packages raises ImportError instead of falling back to the sources. Nothing of ours is
imported here: it runs before anything else in the process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType

PACKAGES = frozenset({"certwatch", "sensor", "processors", "schemas"})
SITE = os.path.dirname(os.path.abspath(__file__))


class InstalledFirst:
    """A meta path finder for our top-level packages only; their submodules follow the
    package's ``__path__``, which is then in site-packages too."""

    @classmethod
    def find_spec(cls, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in PACKAGES:
            return None
        spec = PathFinder.find_spec(fullname, [SITE])
        if spec is None:
            raise ImportError(f"{fullname} is not installed in {SITE}: this venv imports only "
                              "the installed certwatch (make compiled)", name=fullname)
        return spec


def install() -> None:
    """Put the finder first in ``sys.meta_path`` (once)."""
    if InstalledFirst not in sys.meta_path:
        sys.meta_path.insert(0, InstalledFirst)

# The .pth line that make compiled writes (site runs a .pth line that starts with "import").
PTH_LINE = "import certwatch_installed_first as _m; _m.install()\n"

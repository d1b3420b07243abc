"""The optional compiled build (``make compiled``, ``make test-compiled``; setup.py).

* :mod:`tools.compiled.installed_first`: copied into the compiled venv's site-packages with a
  ``.pth`` line, so every Python process of that venv imports the installed (compiled)
  certwatch even when started in the repository (``python -m certwatch.cli`` from the
  repository root, pytest's rootdir on ``sys.path``).
* :mod:`tools.compiled.equivalence`: the compiled ``certwatch replay`` writes the same events,
  byte for byte, as the pure one on every test capture and the quick benchmark capture.
"""

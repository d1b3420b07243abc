"""Fuzzing of the sensor's hostile-input paths (issue 7): targets in :mod:`fuzz.targets`,
the driver in :mod:`fuzz.run` (``python -m fuzz.run TARGET``, ``make fuzz``)."""

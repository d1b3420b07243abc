"""A progress line on stderr for long replays, only when a person is watching (a TTY)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one status line at most every ``interval`` seconds; silent when not a TTY."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.25) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.interval = interval
        self._next = 0.0

    def update(self, name: str, done: int, total: int | None, packets: int, tls: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        if total:
            fraction = min(done / total, 1.0)
            bar = "#" * int(fraction * 30)
            head = f"{name} [{bar:<30}] {fraction:6.1%}"
        else:
            head = f"{name} {done / 1e6:8.1f} MB"
        self.stream.write(f"\r{head}  {packets:>10,} packets  {tls:>7,} handshakes ")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

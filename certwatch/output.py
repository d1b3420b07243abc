"""Where replayed events go when no broker is involved: JSON lines on a file or stdout."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, Self

from pydantic import BaseModel


class JsonLinesWriter:
    """Writes each event or alert as one ECS JSON document per line (``-`` is stdout)."""

    def __init__(self, path: str) -> None:
        self._owned = path != "-"
        self._stream: IO[str] = open(path, "w", encoding="utf-8") if self._owned else sys.stdout  # noqa: SIM115
        self.written = 0

    def write(self, event: BaseModel) -> None:
        self._stream.write(event.model_dump_json(by_alias=True, exclude_none=True))
        self._stream.write("\n")
        self.written += 1

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""Logging set-up: readable lines on a terminal, one JSON document per line otherwise.

JSON lines use ECS names (``@timestamp``, ``log.level``, ``log.logger``, ``message``) so the
same pipeline that ships alerts to the SIEM can ship the services' own logs. Nothing here logs
per packet: the sensor and processors log once per kind of trouble and count the rest.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["auto", "json", "text"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "@timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "log": {"level": record.levelname.lower(), "logger": record.name},
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["error"] = {"stack_trace": self.formatException(record.exc_info)}
        return json.dumps(document, ensure_ascii=False)


def configure(level: int, log_format: LogFormat = "auto") -> None:
    """Send logs to stderr, as text on a terminal (or when asked) and as JSON otherwise."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json
                         else logging.Formatter("certwatch: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every failed reconnect at ERROR; our bus logs the loss once instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

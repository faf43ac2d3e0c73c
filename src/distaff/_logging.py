"""``distaff worker --log-level --log-format``: distaff's own log lines, one per event.

Every line names the worker (its uid). At INFO a worker logs its start, the
peers its shipped proxies admit and drop, its drain and stop, and the calls
it refuses; never a line per call.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")


class _WorkerUid(logging.Filter):
    def __init__(self, uid: str) -> None:
        super().__init__()
        self._uid = uid

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._uid
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname} {record.name} "
            f"worker={getattr(record, 'worker', '-')} {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "worker": getattr(record, "worker", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str, style: str, uid: str, stream: TextIO | None = None) -> None:
    """Send the ``distaff`` loggers' records at ``level`` and above to stderr.

    The lines stay on the worker (they are not forwarded to callers) and do
    not reach the root logger's handlers.

    Raises:
        ValueError: an unknown level or format.
    """
    if level.upper() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    if style not in FORMATS:
        raise ValueError(f"unknown log format {style!r}; use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_WorkerUid(uid))
    handler.setFormatter(_JsonFormatter() if style == "json" else _TextFormatter())
    logger = logging.getLogger("distaff")
    logger.setLevel(level.upper())
    logger.addHandler(handler)
    logger.propagate = False

"""``distaff worker --log-level --log-format``: distaff's own log lines, one per event.

Every line names the worker (its uid). At INFO a worker logs its start, the
peers its shipped proxies admit and drop, its drain and stop, and the calls
it refuses; never a line per call.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import sys
import threading
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


class _CancelledRpc(logging.Filter):
    """Drops gRPC's report of a servicer cancelled as its RPC ended (not an error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


class _JsonStderr(io.TextIOBase):
    """``sys.stderr`` of a worker logging JSON: text written to it outside the
    logging system (a traceback a library prints) becomes JSON lines, one per
    line of text, from the logger ``stderr``."""

    def __init__(self, real: TextIO, uid: str) -> None:
        self._real = real
        self._uid = uid
        self._pending = ""
        self._lock = threading.Lock()  # threads print too
        self._format = _JsonFormatter()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                lines, _, self._pending = self._pending.rpartition("\n")
                for line in lines.split("\n"):
                    self._emit(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                line, self._pending = self._pending, ""
                self._emit(line)
            self._real.flush()

    def _emit(self, line: str) -> None:
        record = logging.LogRecord("stderr", logging.WARNING, "", 0, line, None, None)
        record.worker = self._uid
        self._real.write(self._format.format(record) + "\n")


def configure(level: str, style: str, uid: str, stream: TextIO | None = None) -> None:
    """Send the ``distaff`` loggers' records at ``level`` and above to stderr.

    The lines stay on the worker (they are not forwarded to callers) and do
    not reach the root logger's handlers. Records of other loggers made
    outside a call, at WARNING and above, and (for ``json``) Python warnings
    and text printed to stderr outside a call, come out in the same format,
    so every line of a JSON log parses.

    Raises:
        ValueError: an unknown level or format.
    """
    if level.upper() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    if style not in FORMATS:
        raise ValueError(f"unknown log format {style!r}; use text or json")
    formatter = _JsonFormatter() if style == "json" else _TextFormatter()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_WorkerUid(uid))
    handler.setFormatter(formatter)
    logger = logging.getLogger("distaff")
    logger.setLevel(level.upper())
    logger.addHandler(handler)
    logger.propagate = False
    # What other code logs outside a call, at WARNING and above, with no
    # handler of its own (a library's thread, gRPC's servicer errors at stop),
    # reaches Python's last-resort handler: give it the same lines. Records
    # made inside a call still go to its caller, not here.
    fallback = logging.StreamHandler(stream or sys.stderr)
    fallback.setLevel(logging.WARNING)
    fallback.addFilter(_WorkerUid(uid))
    fallback.setFormatter(formatter)
    logging.lastResort = fallback
    logging.getLogger("grpc._cython.cygrpc").addFilter(_CancelledRpc())
    if style == "json":
        logging.captureWarnings(True)  # warnings as records: JSON lines too
        sys.stderr = _JsonStderr(stream or sys.stderr, uid)

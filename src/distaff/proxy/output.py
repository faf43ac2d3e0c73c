"""Output a worker sent back with a call, on the caller's side.

Printed lines go to this process's stdout or stderr, each prefixed with the
routine and where it ran; log records are re-emitted through ``logging``
under ``distaff.remote.<original logger name>``. On a worker, a call made
from inside another call hands its output up instead (``current_output_sink``
holds the sink of the call running in this context), so nested output reaches
the caller that started the chain. A worker's report that a routine blocked
its event loop becomes one warning per routine per process, on the
``distaff`` logger.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Protocol

from ..serialization.wire import Output, OutputKind


class OutputSinkLike(Protocol):
    """Where the output of the calls made in this context goes instead of here."""

    def forward(self, output: Output) -> None:
        """Pass on the output of a nested call, its origin kept."""
        ...


current_output_sink: contextvars.ContextVar[OutputSinkLike | None] = contextvars.ContextVar(
    "distaff_output_sink", default=None
)


# the logger name on an Output that reports a routine blocking a worker's
# event loop (sent by the worker on the call's stream, not a user's record)
BLOCKED_LOGGER = "distaff.blocked"
# routines reported as blocking a worker's loop, by name and place; bounded
_reported: set[str] = set()
_reported_lock = threading.Lock()
blocked_log = logging.getLogger("distaff")


def prefix(output: Output) -> str:
    """``(routine pid=N host=H) ``: what each forwarded line starts with."""
    return f"({output.routine} pid={output.pid} host={output.host}) "


def emit(output: Output) -> None:
    """Write ``output`` in this process: printed lines, or a log record."""
    if output.kind == OutputKind.OUTPUT_LOG:
        if output.logger == BLOCKED_LOGGER:
            _blocked(output)
        else:
            _log(output)
        return
    stream = sys.stdout if output.kind == OutputKind.OUTPUT_STDOUT else sys.stderr
    head = prefix(output)
    text = "".join(f"{head}{line}\n" for line in output.text.split("\n"))
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # our own stream is closed: nowhere to write
        pass


def _log(output: Output) -> None:
    logger = logging.getLogger(f"distaff.remote.{output.logger or 'root'}")
    level = output.level or logging.INFO
    if not logger.isEnabledFor(level):
        return
    extra = {
        "worker_pid": output.pid,
        "worker_host": output.host,
        "worker_uid": output.worker,
        "routine": output.routine,
    }
    record = logger.makeRecord(
        logger.name, level, output.routine, 0, output.text, (), None, extra=extra
    )
    logger.handle(record)


def _blocked(output: Output) -> None:
    """Warn once per routine in this process (on the ``distaff`` logger)."""
    with _reported_lock:
        if output.routine in _reported:
            return
        if len(_reported) >= 4096:  # routines are few; bound it anyway
            _reported.clear()
        _reported.add(output.routine)
    extra = {"worker_pid": output.pid, "worker_host": output.host, "worker_uid": output.worker}
    blocked_log.warning("%s", output.text, extra=extra)

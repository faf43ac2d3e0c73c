"""Output a worker sent back with a call, on the caller's side.

Printed lines go to this process's stdout or stderr, each prefixed with the
routine and where it ran; log records are re-emitted through ``logging``
under ``distaff.remote.<original logger name>``. On a worker, a call made
from inside another call hands its output up instead (``current_output_sink``
holds the sink of the call running in this context), so nested output reaches
the caller that started the chain.
"""

from __future__ import annotations

import contextvars
import logging
import sys
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


def prefix(output: Output) -> str:
    """``(routine pid=N host=H) ``: what each forwarded line starts with."""
    return f"({output.routine} pid={output.pid} host={output.host}) "


def emit(output: Output) -> None:
    """Write ``output`` in this process: printed lines, or a log record."""
    if output.kind == OutputKind.OUTPUT_LOG:
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

"""What a worker sees of its calls: counts, metrics, output capture and trace spans.

One ``Instruments`` per worker service. Everything here is optional per
call: a call that asked for no output, carries no trace context and runs
on a worker without metrics pays two counter increments and a few checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...proxy.output import current_output_sink
from ...serialization.task import Task
from ...serialization.wire import Output
from ..tracing import worker_span
from .output import CallOutput, Origin, OutputSlot, default_burst

if TYPE_CHECKING:
    from .metrics import WorkerMetrics
    from .monitor import LoopMonitor

log = logging.getLogger(__name__)
_NO_SPAN = contextlib.nullcontext()


class Instruments:
    """A worker's view of its calls.

    Args:
        worker: the worker's uid, stamped on output and spans.
    """

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.host = socket.gethostname()
        self.completed = 0  # calls that returned (or finished streaming)
        self.failed = 0  # calls that raised, timed out, were cancelled or refused
        self.metrics: WorkerMetrics | None = None
        self.monitor: LoopMonitor | None = None  # tells calls that block the loop
        self._burst = default_burst()
        self._origins: dict[str, Origin] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def started(self) -> float:
        """A call starts: its start time if metrics need one, else 0."""
        return time.perf_counter() if self.metrics is not None else 0.0

    def ended(self, routine: str, outcome: str, started: float) -> None:
        """A call ended with ``outcome``: ok, error, timeout, cancelled or rejected."""
        if outcome == "ok":
            self.completed += 1
        else:
            self.failed += 1
        if self.metrics is not None:
            self.metrics.finished(routine, outcome, started)

    def refused(self, count: int, *, busy: bool = False) -> None:
        """``count`` calls were refused before they started (draining, or busy)."""
        if not busy:  # busy refusals are routine under load: counted, not logged
            log.info("refused %d new call(s): the worker is draining", count)
        for _ in range(count):
            self.ended("unknown", "rejected", 0.0)

    def item(self, routine: str) -> None:
        """A generator call yielded an item."""
        if self.metrics is not None:
            self.metrics.item(routine)

    def capture_output(self, slot: OutputSlot, loop: asyncio.AbstractEventLoop) -> None:
        """Send what the current call prints and logs to ``slot``; on ``loop``, in the call.

        The slot makes its sink (``open_output``) on the call's first line
        only: most calls print nothing.
        """
        if loop is not self._loop:  # calls run on one loop: its thread is known
            self._loop, self._loop_thread = loop, threading.get_ident()
        current_output_sink.set(slot)

    def open_output(
        self, routine: str, send: Callable[[list[Output]], None], loop: asyncio.AbstractEventLoop
    ) -> CallOutput:
        """The sink of a call of ``routine``, its frames sent through ``send`` on ``loop``."""
        origin = self._origins.get(routine)
        if origin is None:
            if len(self._origins) >= 4096:  # routines are few; bound it anyway
                self._origins.clear()
            origin = Origin(routine, os.getpid(), self.host, self.worker)
            self._origins[routine] = origin
        return CallOutput(send, origin, self._burst, loop, self._loop_thread)

    def span(self, task: Task, routine: str) -> contextlib.AbstractContextManager[Any]:
        """The call's child span of the caller's trace, if it sent one."""
        if not task.traceparent:
            return _NO_SPAN
        attributes = {
            "distaff.routine": routine,
            "distaff.task.id": task.id,
            "distaff.attempt": task.attempt,
            "distaff.worker.uid": self.worker,
            "distaff.worker.host": self.host,
            "process.pid": os.getpid(),
        }
        return worker_span(task.traceparent, routine, attributes)

"""What a call prints and logs on a worker, sent back to the caller that made it.

``sys.stdout``/``sys.stderr`` are replaced once per process by routers, and
one handler sits on the root logger: each looks up the sink of the call
running in the current context (a context variable, so concurrent calls on
one loop, and plain functions in their threads, each reach their own) and
falls back to the real stream outside any call. A sink batches lines into
Output frames on the call's own stream, at most ``burst`` lines at once and
``burst / 10`` per second after that; the rest become one "… N lines
suppressed" line. Lines are never merged or deduplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, cast

from ...proxy.output import BLOCKED_LOGGER, current_output_sink
from ...serialization.wire import Output, OutputKind

_STDOUT = OutputKind.OUTPUT_STDOUT
_STDERR = OutputKind.OUTPUT_STDERR
_LONGEST_LINE = 64 * 1024  # a partial line this long goes out as it is


def default_burst() -> int:
    """``DISTAFF_OUTPUT_LINES``: lines a call may send at once (default 1000)."""
    configured = os.environ.get("DISTAFF_OUTPUT_LINES", "1000")
    try:
        return max(1, int(configured))
    except ValueError:
        raise ValueError(
            f"DISTAFF_OUTPUT_LINES must be a whole number of lines, not {configured!r}"
        ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where output comes from: stamped on every frame a call sends."""

    routine: str
    pid: int
    host: str
    worker: str


class _Budget:
    """A token bucket of lines: ``burst`` at once, ``burst / 10`` per second."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, burst: int) -> None:
        self._burst = float(burst)
        self._rate = burst / 10
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        if self._tokens < 1:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1:
                return False
        self._tokens -= 1
        return True


class CallOutput:
    """The output sink of one call; safe to write from any thread.

    Args:
        send: queues frames on the call's stream (runs on the loop).
        origin: stamped on the frames this call produces.
        burst: lines the call may send at once.
        loop: the loop ``send`` runs on.
        loop_thread: that loop's thread (default: this one).
    """

    __slots__ = (
        "_budget",
        "_burst",
        "_closed",
        "_last",
        "_lock",
        "_loop",
        "_loop_thread",
        "_origin",
        "_partial",
        "_queued",
        "_scheduled",
        "_send",
        "_suppressed",
        "_touched",
    )

    def __init__(
        self,
        send: Callable[[list[Output]], None],
        origin: Origin,
        burst: int,
        loop: asyncio.AbstractEventLoop,
        loop_thread: int | None = None,
    ) -> None:
        self._send = send
        self._origin = origin
        self._burst = burst
        self._loop = loop
        self._loop_thread = threading.get_ident() if loop_thread is None else loop_thread
        self._lock = threading.Lock()
        self._partial = ["", ""]  # by kind: stdout, stderr
        self._queued: list[Output] = []
        self._last: Output | None = None  # the frame of our own to add lines to
        self._scheduled = False
        self._budget: _Budget | None = None  # made on the first line
        self._suppressed = 0
        self._closed = False
        self._touched = False  # anything was written

    def write(self, kind: int, text: str) -> bool:
        """Take printed ``text``; False once the call has ended (write it elsewhere)."""
        with self._lock:
            if self._closed:
                return False
            self._touched = True
            buffered = self._partial[kind] + text
            if "\n" not in buffered and len(buffered) < _LONGEST_LINE:
                self._partial[kind] = buffered
                return True
            *lines, rest = buffered.split("\n")
            if len(rest) >= _LONGEST_LINE:
                lines.append(rest)
                rest = ""
            self._partial[kind] = rest
            for line in lines:
                self._line(kind, line)
        self._schedule()
        return True

    def record(self, record: logging.LogRecord, text: str) -> bool:
        """Take a log record formatted as ``text``; False once the call has ended."""
        with self._lock:
            if self._closed:
                return False
            if self._admit():
                origin = self._origin
                self._queued.append(
                    Output(
                        kind=OutputKind.OUTPUT_LOG,
                        text=text,
                        logger=record.name,
                        level=record.levelno,
                        routine=origin.routine,
                        pid=origin.pid,
                        host=origin.host,
                        worker=origin.worker,
                    )
                )
                self._last = None
        self._schedule()
        return True

    def blocked(self, culprit: str, text: str) -> None:
        """Tell the caller that this call's code ``culprit`` blocked the worker's loop."""
        origin = self._origin
        self.forward(
            Output(
                kind=OutputKind.OUTPUT_LOG,
                text=text,
                logger=BLOCKED_LOGGER,
                level=logging.WARNING,
                routine=culprit,
                pid=origin.pid,
                host=origin.host,
                worker=origin.worker,
            )
        )

    def forward(self, output: Output) -> None:
        """Pass on a nested call's output, its origin kept."""
        with self._lock:
            if self._closed or not self._admit():
                return
            self._queued.append(output)
            self._last = None
        self._schedule()

    def close(self) -> None:
        """Send what is left (partial lines, the suppressed count); on the loop, idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._touched:
                return
            for kind, rest in enumerate(self._partial):
                if rest:
                    self._line(kind, rest)
            self._note_suppressed()
        self._flush()

    # under the lock

    def _admit(self) -> bool:
        self._touched = True
        if self._budget is None:
            self._budget = _Budget(self._burst)
        if not self._budget.take():
            self._suppressed += 1
            return False
        if self._suppressed:
            self._note_suppressed()
        return True

    def _note_suppressed(self) -> None:
        if self._suppressed:
            count, self._suppressed = self._suppressed, 0
            self._append(_STDERR, f"… {count} lines suppressed (output rate limit)")

    def _line(self, kind: int, line: str) -> None:
        if self._admit():
            self._append(kind, line)

    def _append(self, kind: int, line: str) -> None:
        last, queued = self._last, self._queued
        if last is not None and last.kind == kind and queued and queued[-1] is last:
            last.text += "\n" + line
            return
        origin = self._origin
        last = self._last = Output(
            kind=kind,  # type: ignore[arg-type]
            text=line,
            routine=origin.routine,
            pid=origin.pid,
            host=origin.host,
            worker=origin.worker,
        )
        queued.append(last)

    # getting frames out

    def _schedule(self) -> None:
        with self._lock:
            if self._scheduled or not self._queued:
                return
            self._scheduled = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._flush)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            queued, self._queued = self._queued, []
            self._scheduled = False
        if queued:
            self._send(queued)


# guards the opening and closing of every slot: rare (a call's first line,
# its end), and short
_OPENING = threading.Lock()


class OutputSlot:
    """Where one call's output goes: its ``CallOutput``, made on the call's first line.

    Every call that forwards output is a slot (the worker's record of a
    running call subclasses this); most print nothing, and pay for no sink.
    Safe to write from any thread, like the sink. A subclass says how its
    sink is made (``open_sink``).
    """

    __slots__ = ("_closed", "_sink")

    def __init__(self) -> None:
        self._sink: CallOutput | None = None
        self._closed = False

    def open_sink(self) -> CallOutput:
        """Make this call's sink (once at most, from whichever thread writes first)."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once the call has ended."""
        return self._closed

    def sink(self) -> CallOutput | None:
        """The call's sink, made now if need be; None once the call has ended."""
        sink = self._sink
        if sink is not None:
            return sink
        with _OPENING:
            if self._closed:
                return None
            if self._sink is None:
                self._sink = self.open_sink()
            return self._sink

    def write(self, kind: int, text: str) -> bool:
        """Take printed ``text``; False once the call has ended (write it elsewhere)."""
        sink = self.sink()
        return sink is not None and sink.write(kind, text)

    def record(self, record: logging.LogRecord, text: str) -> bool:
        """Take a log record formatted as ``text``; False once the call has ended."""
        sink = self.sink()
        return sink is not None and sink.record(record, text)

    def forward(self, output: Output) -> None:
        """Pass on a nested call's output, its origin kept."""
        sink = self.sink()
        if sink is not None:
            sink.forward(output)

    def blocked(self, culprit: str, text: str) -> None:
        """Tell the caller that this call's code ``culprit`` blocked the worker's loop."""
        sink = self.sink()
        if sink is not None:
            sink.blocked(culprit, text)

    def close(self) -> None:
        """The call ends: send what is left; later lines go to the real streams. On the loop."""
        with _OPENING:
            self._closed = True
            sink, self._sink = self._sink, None  # it may refer back to its slot
        if sink is not None:
            sink.close()


class _StreamRouter:
    """Stands in for ``sys.stdout``/``sys.stderr``: the current call's sink, or the real one."""

    def __init__(self, real: TextIO, kind: int) -> None:
        self.real = real
        self._kind = kind

    def write(self, text: str) -> int:
        sink = current_output_sink.get()
        if isinstance(sink, OutputSlot) and sink.write(self._kind, text):
            return len(text)
        return self.real.write(text)

    def flush(self) -> None:
        if not isinstance(current_output_sink.get(), OutputSlot):
            self.real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _LogRouter(logging.Handler):
    """On the root logger: a record made inside a call goes to that call's caller."""

    def __init__(self) -> None:
        super().__init__()
        self._format = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        sink = current_output_sink.get()
        if isinstance(sink, OutputSlot):
            try:
                text = record.getMessage()
                if record.exc_info:
                    text += "\n" + self._format.formatException(record.exc_info)
                if record.stack_info:
                    text += "\n" + record.stack_info
            except Exception:  # a bad format string: report it as logging does
                self.handleError(record)
                return
            if sink.record(record, text):
                return
        # outside a call, behave as if this handler were not there
        last = logging.lastResort
        alone = len(logging.getLogger().handlers) == 1
        if last is not None and alone and record.levelno >= last.level:
            last.handle(record)


_installed = 0
_saved: tuple[TextIO, TextIO] | None = None
_handler = _LogRouter()


def install() -> None:
    """Route this process's stdout, stderr and root logging through call sinks.

    Counted: each ``install`` needs one ``uninstall`` (several workers may run
    in one process).
    """
    global _installed, _saved
    _installed += 1
    if _installed > 1:
        return
    _saved = (sys.stdout, sys.stderr)
    sys.stdout = cast(TextIO, _StreamRouter(sys.stdout, _STDOUT))
    sys.stderr = cast(TextIO, _StreamRouter(sys.stderr, _STDERR))
    logging.getLogger().addHandler(_handler)


def uninstall() -> None:
    """Undo one ``install``; the last one restores the real streams."""
    global _installed, _saved
    _installed -= 1
    if _installed > 0 or _saved is None:
        return
    sys.stdout, sys.stderr = _saved
    _saved = None
    logging.getLogger().removeHandler(_handler)

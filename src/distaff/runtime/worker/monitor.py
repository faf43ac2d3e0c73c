"""Notice routines that block a worker's event loop, and say which.

A timer on the loop beats every ``threshold / 2``; a watchdog thread checks
the beat. When the loop has not beaten for longer than the threshold, the
thread samples the loop thread's stack and takes its outermost frame that is
neither distaff's nor the standard library's: the routine body that is
running, and the task the loop was running. When the loop gets going
again, the beat measures how late it came and logs one warning per routine
(not when the call was told and the worker has no log handlers of its own:
a worker a pool spawned shares its caller's stderr, where the caller's
warning goes). A stall whose code cannot be named (the thread could not
run: a C extension held the GIL throughout) is not logged.

The call whose task blocked is told too, so its caller hears of it: a sink
watched for that task (``watch``) gets the report when the beat comes, or,
when the call ends in the very step that blocked, as it closes
(``closing``), before its final frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import sys
import sysconfig
import threading
import time
import types
from collections.abc import Callable
from typing import Any, Protocol

from ...serialization.tracebacks import is_internal

log = logging.getLogger("distaff.worker")

_STDLIB = tuple(
    os.path.realpath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")
)


def threshold_from_env() -> float:
    """``DISTAFF_LOOP_BLOCK_THRESHOLD`` in seconds (default 0.1; 0 turns the check off)."""
    value = os.environ.get("DISTAFF_LOOP_BLOCK_THRESHOLD", "0.1")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise ValueError(
            f"DISTAFF_LOOP_BLOCK_THRESHOLD must be a number of seconds, not {value!r}"
        ) from None


class StallSinkLike(Protocol):
    """Where a call hears that it blocked the loop (its output sink)."""

    def blocked(self, culprit: str, text: str) -> None:
        """The call's code ``culprit`` blocked the loop; ``text`` says how long."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Suspect:
    culprit: str  # the code that was running, named with its file and line
    task: asyncio.Task[Any] | None  # the task the loop was running then
    told: bool = False  # its call heard of it already


def describe(culprit: str, seconds: float, threshold: float) -> str:
    """The warning about a routine that blocked this worker's loop for ``seconds``."""
    return (
        f"routine {culprit} blocked the event loop of distaff worker pid {os.getpid()} "
        f"on {socket.gethostname()} for {seconds:.2f} s (threshold {threshold:.2f} s; "
        "DISTAFF_LOOP_BLOCK_THRESHOLD): other calls on that worker waited; make it a "
        "plain 'def' to run it in a thread, or await instead of blocking"
    )


def log_configured() -> bool:
    """True if distaff's loggers have handlers of their own (``distaff worker --log-*``)."""
    return bool(logging.getLogger("distaff").handlers)


def _running_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    try:  # from the watchdog thread: the task the loop's thread is running
        return asyncio.current_task(loop)
    except RuntimeError:
        return None


def culprit(frame: types.FrameType | None) -> str | None:
    """Name the outermost frame of user code on a stack, or None."""
    stack = []
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    for candidate in reversed(stack):
        filename = candidate.f_code.co_filename
        if is_internal(filename) or filename.startswith("<"):
            continue
        if os.path.realpath(filename).startswith(_STDLIB):
            continue
        code = candidate.f_code
        return f"{code.co_qualname!r} ({filename}:{code.co_firstlineno})"
    return None


def _no_sink(task: asyncio.Task[Any]) -> StallSinkLike | None:
    return None


class LoopMonitor:
    """Warns once per routine that blocks the loop for more than ``threshold`` s.

    It watches only while calls run: ``busy()`` says whether any does, and the
    worker calls ``wake()`` when a call starts on an idle worker. An idle
    worker's loop and watchdog thread sleep.
    """

    def __init__(self, threshold: float, busy: Callable[[], bool] = lambda: True) -> None:
        self.threshold = threshold
        self._busy = busy
        self._interval = max(threshold / 2, 0.01)
        self._warned: set[str] = set()
        # what was running when the loop stalled; read by calls as they end
        self.suspect: _Suspect | None = None
        # the output of the call a task runs (the worker service sets it)
        self.sink_of: Callable[[asyncio.Task[Any]], StallSinkLike | None] = _no_sink
        self._beaten = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed = threading.Event()  # set while beating: the thread watches
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating on the running loop and watching from a thread (threshold > 0)."""
        if self.threshold <= 0 or self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._watch,
            args=(threading.get_ident(),),
            name="distaff-loop-monitor",
            daemon=True,
        )
        self._thread.start()
        self.wake()

    def wake(self) -> None:
        """Beat again (a call started); call from the loop's thread."""
        if self._loop is None or self._timer is not None or self._stop.is_set():
            return
        self._beaten = time.monotonic()
        self.suspect = None
        self._timer = self._loop.call_later(self._interval, self._beat, self._loop, self._beaten)
        self._armed.set()

    def closing(self, task: asyncio.Task[Any] | None, sink: StallSinkLike) -> None:
        """``task``'s call ends: tell ``sink`` first if the call is blocking the loop now.

        A call that ends in the step that blocked would hear of it only after
        its final frame; the watchdog has caught it by now, and the stall so
        far is what it reports. Callers skip this while ``suspect`` is None.
        """
        suspect = self.suspect
        if suspect is None or task is None or suspect.task is not task:
            return
        late = time.monotonic() - self._beaten - self._interval
        if late > self.threshold:
            self.suspect = dataclasses.replace(suspect, task=None, told=True)  # not again
            sink.blocked(suspect.culprit, describe(suspect.culprit, late, self.threshold))

    def stop(self) -> None:
        """Stop the timer and the thread; idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop.set()
        self._armed.set()  # let the thread see the stop
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self, loop: asyncio.AbstractEventLoop, scheduled: float) -> None:
        now = time.monotonic()
        late = now - scheduled - self._interval
        suspect, self.suspect = self.suspect, None
        self._beaten = now
        self._timer = None
        if late > self.threshold and suspect is not None:
            self._report(suspect, late)
        if self._stop.is_set():
            return
        if not self._busy():
            self._armed.clear()  # nothing runs: sleep until wake()
            return
        self._timer = loop.call_later(self._interval, self._beat, loop, now)

    def _report(self, suspect: _Suspect, late: float) -> None:
        text = describe(suspect.culprit, late, self.threshold)
        sink = self.sink_of(suspect.task) if suspect.task is not None else None
        if sink is not None:
            sink.blocked(suspect.culprit, text)
        # a worker without log handlers of its own (spawned by a pool) writes
        # to its caller's stderr: the caller's warning says it already
        told = suspect.told or sink is not None
        if suspect.culprit not in self._warned and (not told or log_configured()):
            self._warned.add(suspect.culprit)
            log.warning("%s", text)

    def _watch(self, loop_thread: int) -> None:
        loop = self._loop
        assert loop is not None
        while self._armed.wait() and not self._stop.wait(self._interval):
            stale = time.monotonic() - self._beaten > self.threshold
            if self._armed.is_set() and self.suspect is None and stale:
                task = _running_task(loop)  # before the stack: the step may end meanwhile
                name = culprit(sys._current_frames().get(loop_thread))
                if name is not None:
                    self.suspect = _Suspect(name, task)

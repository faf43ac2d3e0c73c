"""Notice routines that block a worker's event loop, and say which.

A timer on the loop beats every ``threshold / 2``; a watchdog thread checks
the beat. When the loop has not beaten for longer than the threshold, the
thread samples the loop thread's stack and takes its outermost frame that is
neither distaff's nor the standard library's: the routine body that is
running. When the loop gets going again, the beat measures how late it came
and logs one warning per routine. A stall whose code cannot be named (the
thread could not run: a C extension held the GIL throughout) is not logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import sysconfig
import threading
import time
import types
from collections.abc import Callable

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
        self._suspect: str | None = None
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
        self._suspect = None
        self._timer = self._loop.call_later(self._interval, self._beat, self._loop, self._beaten)
        self._armed.set()

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
        suspect, self._suspect = self._suspect, None
        self._beaten = now
        self._timer = None
        if late > self.threshold and suspect is not None and suspect not in self._warned:
            self._warned.add(suspect)
            log.warning(
                "distaff worker %d: routine %s blocked the event loop for %.2f s "
                "(threshold %.2f s; DISTAFF_LOOP_BLOCK_THRESHOLD): other calls on this "
                "worker waited; make it a plain 'def' to run it in a thread, or await "
                "instead of blocking",
                os.getpid(),
                suspect,
                late,
                self.threshold,
            )
        if self._stop.is_set():
            return
        if not self._busy():
            self._armed.clear()  # nothing runs: sleep until wake()
            return
        self._timer = loop.call_later(self._interval, self._beat, loop, now)

    def _watch(self, loop_thread: int) -> None:
        while self._armed.wait() and not self._stop.wait(self._interval):
            stale = time.monotonic() - self._beaten > self.threshold
            if self._armed.is_set() and self._suspect is None and stale:
                self._suspect = culprit(sys._current_frames().get(loop_thread))

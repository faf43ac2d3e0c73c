"""A bounded pool of daemon threads for plain ``def`` routines.

Daemon threads, unlike ``concurrent.futures.ThreadPoolExecutor``'s: a plain
function still running when its worker stops must not keep the process
alive (the executor joins its threads at interpreter exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[[], Any]
]


def default_limit() -> int:
    """``DISTAFF_THREADS``, or ``min(32, CPUs + 4)`` like the standard executor."""
    configured = os.environ.get("DISTAFF_THREADS")
    if not configured:
        return min(32, (os.cpu_count() or 1) + 4)
    try:
        return max(1, int(configured))
    except ValueError:
        raise ValueError(
            f"DISTAFF_THREADS must be a whole number of threads, not {configured!r}"
        ) from None


class ThreadRunner:
    """Runs callables on at most ``limit`` daemon threads; queues the rest.

    A job whose future is cancelled before a thread picks it up never runs;
    one already running finishes and its result is dropped (a thread cannot
    be interrupted).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a thread runner needs at least one thread, not {limit}")
        self.limit = limit
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(
        self, fn: Callable[[], Any], context: contextvars.Context | None = None
    ) -> asyncio.Future[Any]:
        """Run ``fn`` in a thread, in ``context`` (default: a copy of the current one).

        Await the future for its result.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, context or contextvars.copy_context(), fn))
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # a waiting thread takes it (the count may run high,
                # as the standard executor's does: a freed thread may take a queued job)
            elif self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._work, name="distaff-plain", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            loop, future, context, fn = self._jobs.get()
            if not future.cancelled():
                try:
                    result = context.run(fn)
                except BaseException as exc:
                    _deliver(loop, future, None, exc)
                else:
                    _deliver(loop, future, result, None)
            del loop, future, context, fn  # no reference kept while idle
            with self._lock:
                self._idle += 1


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    def settle() -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


_runner: ThreadRunner | None = None
_serial: ThreadRunner | None = None


def runner() -> ThreadRunner:
    """This process's thread runner, created on first use."""
    global _runner
    if _runner is None:
        _runner = ThreadRunner(default_limit())
    return _runner


def serial_runner() -> ThreadRunner:
    """This process's one-thread runner, created on first use.

    For big chunks of quick plain items: run one after another, each ends
    (and its results leave) sooner than if several shared the GIL at once.
    """
    global _serial
    if _serial is None:
        _serial = ThreadRunner(1)
    return _serial

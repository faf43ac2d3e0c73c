"""The event loop a worker runs on: uvloop's when it is installed, else asyncio's.

uvloop (``pip install 'distaff[uvloop]'``) runs the worker's side of each
call with less CPU than asyncio's pure-Python loop. ``auto`` (the default)
takes it when it can be imported; ``asyncio`` and ``uvloop`` insist. The
caller's loop is the caller's business: distaff never changes it.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any

from ..._exceptions import WorkerStartError

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
ENVIRONMENT = "DISTAFF_WORKER_LOOP"


def default() -> str:
    """The choice ``DISTAFF_WORKER_LOOP`` makes (``auto`` when it is not set).

    Raises:
        ValueError: the variable names no event loop; the message names it.
    """
    return check(os.environ.get(ENVIRONMENT) or "auto", ENVIRONMENT)


def check(value: object, name: str = "event_loop") -> str:
    """``value`` if it names a worker event loop; ValueError or TypeError naming it otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(EVENT_LOOPS)}, not {value!r}")
    if value not in EVENT_LOOPS:
        raise ValueError(f"{name} must be one of {', '.join(EVENT_LOOPS)}, not {value!r}")
    return value


def factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``choice`` (None: asyncio's default).

    Raises:
        WorkerStartError: ``uvloop`` was asked for and cannot be imported.
    """
    if check(choice) == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise WorkerStartError(
                f"the worker event loop 'uvloop' needs the uvloop package ({exc}); "
                "install it with: pip install 'distaff[uvloop]'"
            ) from exc
        return None
    new: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new


# A worker process (this module's ``run`` is its main loop) collects its
# youngest generation after this many net allocations, not 700: a call
# allocates a few dozen containers, so the default collected every few calls.
# In ten interleaved W2-shaped pairs on the 2-core Intel VM the pool answered
# more calls per second with it in eight (about 6 % on average). Cycles live
# a little longer; the worker's memory is bounded all the same.
YOUNG_GENERATION = 20_000


def run(main: Coroutine[Any, Any, object], choice: str) -> None:
    """Run ``main`` to its end on a new loop of the ``choice`` kind (a worker's main).

    Also sets the worker process's collector thresholds (``YOUNG_GENERATION``).
    """
    gc.set_threshold(YOUNG_GENERATION, *gc.get_threshold()[1:])
    try:
        loop = factory(choice)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=loop) as runner:
        runner.run(main)

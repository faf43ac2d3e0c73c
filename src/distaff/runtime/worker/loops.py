"""The event loop a worker runs on: uvloop's when it is installed, else asyncio's.

uvloop (``pip install 'distaff[uvloop]'``) runs the worker's side of each
call with less CPU than asyncio's pure-Python loop. ``auto`` (the default)
takes it when it can be imported; ``asyncio`` and ``uvloop`` insist. The
caller's loop is the caller's business: distaff never changes it.
"""

from __future__ import annotations

import asyncio
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


def run(main: Coroutine[Any, Any, object], choice: str) -> None:
    """Run ``main`` to its end on a new loop of the ``choice`` kind."""
    try:
        loop = factory(choice)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=loop) as runner:
        runner.run(main)

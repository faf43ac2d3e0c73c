"""How a worker runs a routine's body: coroutines on the loop, plain functions in threads."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import contextvar
from .threads import ThreadRunner, runner

if TYPE_CHECKING:
    from ...serialization.task import Task

# body -> whether it is a plain function; routines are few, the bound is a guard
_plain: dict[Callable[..., Any], bool] = {}


def is_plain(body: Callable[..., Any]) -> bool:
    """True if ``body`` is not a coroutine function (so it must run in a thread)."""
    plain = _plain.get(body)
    if plain is None:
        if len(_plain) >= 4096:
            _plain.clear()
        plain = _plain[body] = not inspect.iscoroutinefunction(body)
    return plain


def invoke(task: Task) -> Awaitable[Any]:
    """Start ``task``'s body; await the result.

    An ``async def`` body runs on the worker's event loop. A plain ``def``
    runs on the worker's bounded thread pool (see ``run_plain``), never on
    the loop; while it runs the worker keeps serving other calls. Cancelling
    the await cancels a plain call that has not started yet; one already
    running finishes in its thread and its result is dropped.
    """
    body = task.callable
    if not is_plain(body):
        coroutine: Awaitable[Any] = body(*task.args, **task.kwargs)
        return coroutine
    return run_plain(functools.partial(body, *task.args, **task.kwargs))


async def run_plain(fn: Callable[[], Any], threads: ThreadRunner | None = None) -> Any:
    """Run a plain callable on the thread pool (or ``threads``); return its result.

    It runs in a copy of the current context (so ``current_task()`` and the
    caller's ``distaff.ContextVar`` values work there); the
    ``distaff.ContextVar`` values it sets are set in the current context when
    it returns or raises, as an ``async def`` body's would be.
    """
    context = contextvars.copy_context()
    try:
        return await (threads or runner()).submit(fn, context)
    finally:
        contextvar.adopt(context)

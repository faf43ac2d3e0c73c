"""``@routine``: make an ``async def`` run on a worker when called."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from .. import _checks
from .context import (
    current_proxy,
    current_task_var,
    deadline_var,
    dispatch_timeout_var,
    remaining,
    tightest,
)
from .task import Task

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")


@dataclasses.dataclass(frozen=True)
class _Options:
    timeout: float | None = None
    dispatch_timeout: float | None = None
    window: int = 0


def _new_task(
    body: Callable[..., Any], args: Any, kwargs: Any, generator: bool, options: _Options
) -> Task:
    proxy = current_proxy()
    parent = current_task_var.get()
    timeout = tightest(options.timeout, remaining())
    if timeout is not None and timeout <= 0:
        raise TimeoutError("the deadline for this call had already passed")
    dispatch_timeout = dispatch_timeout_var.get()
    task = Task(
        callable=body,
        args=args,
        kwargs=kwargs,
        caller=parent.id if parent is not None else None,
        timeout=timeout,
        dispatch_timeout=tightest(
            options.dispatch_timeout if dispatch_timeout is None else dispatch_timeout, timeout
        ),
        generator=generator,
        window=options.window if generator else 0,
        proxy=proxy,
    )
    task.encode()  # an unpicklable argument fails here, before any worker is asked
    return task


async def _dispatch(task: Task) -> Any:
    """Reach a worker within the task's dispatch timeout; TimeoutError if not."""
    assert task.proxy is not None
    if task.dispatch_timeout is None:
        return await task.proxy.dispatch(task)
    try:
        async with asyncio.timeout(task.dispatch_timeout):
            return await task.proxy.dispatch(task, timeout=task.dispatch_timeout)
    except TimeoutError as exc:
        if exc.args:
            raise
        raise TimeoutError(
            f"no worker accepted the call within dispatch_timeout={task.dispatch_timeout} s"
        ) from None


def _bound(deadline: float | None) -> contextlib.AbstractAsyncContextManager[Any]:
    if deadline is None:
        return _NO_BOUND
    return asyncio.timeout(deadline - time.monotonic())


_NO_BOUND = contextlib.nullcontext()


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _coroutine_routine(
    body: Callable[P, Coroutine[Any, Any, R]], options: _Options
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(body)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        task = _new_task(body, args, kwargs, False, options)
        deadline = None if task.timeout is None else time.monotonic() + task.timeout
        stream = await _dispatch(task)
        try:
            if deadline is None:
                result: R = await anext(stream)
            else:
                async with _bound(deadline):
                    result = await anext(stream)
        finally:
            await _close(stream)
        return result

    return call


def _generator_routine(
    body: Callable[P, AsyncGenerator[Y, S]], options: _Options
) -> Callable[P, AsyncGenerator[Y, S]]:
    @functools.wraps(body)
    async def call(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Y, S]:
        task = _new_task(body, args, kwargs, True, options)
        deadline = None if task.timeout is None else time.monotonic() + task.timeout
        stream: Any = await _dispatch(task)
        try:
            async with _bound(deadline):
                value = await stream.asend(None)
            while True:
                try:
                    sent = yield value
                except GeneratorExit:
                    raise
                except BaseException as exc:  # athrow() on us goes to the remote body
                    async with _bound(deadline):
                        value = await stream.athrow(exc)
                else:
                    async with _bound(deadline):
                        value = await stream.asend(sent)
        except StopAsyncIteration:
            return
        finally:
            await stream.aclose()

    return call


def _wrap(fn: Callable[P, Any], options: _Options) -> Callable[P, Any]:
    if isinstance(fn, (classmethod, staticmethod)):
        raise TypeError(
            f"@routine must be applied under @{type(fn).__name__}: "
            "put the built-in decorator outermost"
        )
    if inspect.isasyncgenfunction(fn):
        return _generator_routine(fn, options)
    if inspect.iscoroutinefunction(fn):
        return _coroutine_routine(fn, options)
    name = getattr(fn, "__qualname__", repr(fn))
    raise TypeError(
        f"@routine needs an 'async def' function or async generator; "
        f"{name!r} is {type(fn).__name__}"
    )


@overload
def routine(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def routine(fn: Callable[P, AsyncGenerator[Y, S]]) -> Callable[P, AsyncGenerator[Y, S]]: ...


@overload
def routine(
    *, timeout: float | None = None, dispatch_timeout: float | None = None, window: int = 0
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def routine(
    fn: Callable[P, Any] | None = None,
    *,
    timeout: float | None = None,
    dispatch_timeout: float | None = None,
    window: int = 0,
) -> Any:
    """Make ``fn`` a routine: calling it runs the body on a pool worker.

    ``fn`` is an ``async def`` coroutine or async generator function: plain, or
    a method (with ``@classmethod``/``@staticmethod`` outermost). Calling the
    routine returns a coroutine that dispatches when awaited, or an async
    generator that dispatches on first iteration and supports ``asend``,
    ``athrow`` and ``aclose``. Results, yielded values and exceptions (with
    their type and traceback) come back as if the body had run locally.

    Use as ``@routine`` or ``@routine(timeout=..., dispatch_timeout=...)``:
    ``timeout`` bounds each call's run (tightened by any enclosing
    ``RuntimeContext`` deadline) and ``dispatch_timeout`` the time to reach a
    worker (a ``RuntimeContext`` value overrides it). Expiry raises
    ``TimeoutError`` and cancels the remote work.

    Arguments travel pickled (cloudpickle), so the body gets copies. For a
    method this includes ``self``: each call works on its own copy, and
    changes it makes to ``self`` stay on the worker and are dropped (three
    calls of a method doing ``self.n += 1`` each return 1, and the caller's
    object is unchanged). Return what should come back. Stateful remote
    objects will be actors, a separate feature. A text file open for
    reading arrives as an ``io.StringIO`` snapshot of its contents (at the
    same position); other open files do not pickle.

    ``window=N`` (async generators only) lets the worker run up to N items
    ahead of the caller, batching them on the wire: much faster streaming,
    at the cost of local semantics: the body runs ahead of the consumer and
    the stream supports only iteration and ``aclose`` (``asend(value)`` and
    ``athrow`` raise TypeError). Without it, each item is one step driven by
    the caller, exactly like a local generator.

    Raises:
        TypeError: ``fn`` is not an async function or async generator function,
            or an option is not a number.
        ValueError: a timeout that is not positive, or a negative window.
    """
    options = _Options(
        _checks.seconds("timeout", timeout, positive=True),
        _checks.seconds("dispatch_timeout", dispatch_timeout, positive=True),
        _checks.integer("window", window, minimum=0),
    )
    if fn is None:
        return functools.partial(_wrap, options=options)
    return _wrap(fn, options)


def enter_task_deadlines(task: Task) -> None:
    """On a worker: make nested calls inherit ``task``'s remaining time."""
    if task.timeout is not None:
        deadline_var.set(time.monotonic() + task.timeout)
    dispatch_timeout_var.set(task.dispatch_timeout)

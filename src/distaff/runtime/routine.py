"""``@routine``: make an ``async def`` run on a worker when called."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from .context import current_proxy, current_task_var
from .task import Task

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")


def _new_task(body: Callable[..., Any], args: Any, kwargs: Any, generator: bool) -> Task:
    proxy = current_proxy()
    parent = current_task_var.get()
    task = Task(
        callable=body,
        args=args,
        kwargs=kwargs,
        caller=parent.id if parent is not None else None,
        generator=generator,
        proxy=proxy,
    )
    task.encode()  # an unpicklable argument fails here, before any worker is asked
    return task


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _coroutine_routine(
    body: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(body)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        task = _new_task(body, args, kwargs, generator=False)
        stream = await task.proxy.dispatch(task)  # type: ignore[union-attr]
        try:
            result: R = await anext(stream)
        finally:
            await _close(stream)
        return result

    return call


def _generator_routine(
    body: Callable[P, AsyncGenerator[Y, S]],
) -> Callable[P, AsyncGenerator[Y, S]]:
    @functools.wraps(body)
    async def call(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Y, S]:
        task = _new_task(body, args, kwargs, generator=True)
        stream: Any = await task.proxy.dispatch(task)  # type: ignore[union-attr]
        try:
            value = await stream.asend(None)
            while True:
                try:
                    sent = yield value
                except GeneratorExit:
                    raise
                except BaseException as exc:  # athrow() on us goes to the remote body
                    value = await stream.athrow(exc)
                else:
                    value = await stream.asend(sent)
        except StopAsyncIteration:
            return
        finally:
            await stream.aclose()

    return call


@overload
def routine(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def routine(
    fn: Callable[P, AsyncGenerator[Y, S]],
) -> Callable[P, AsyncGenerator[Y, S]]: ...


def routine(fn: Callable[P, Any]) -> Callable[P, Any]:
    """Make ``fn`` a routine: calling it runs the body on a pool worker.

    ``fn`` is an ``async def`` coroutine or async generator function: plain, or
    a method (with ``@classmethod``/``@staticmethod`` outermost). Calling the
    routine returns a coroutine that dispatches when awaited, or an async
    generator that dispatches on first iteration and supports ``asend``,
    ``athrow`` and ``aclose``. Results, yielded values and exceptions (with
    their type and traceback) come back as if the body had run locally.

    Raises:
        TypeError: ``fn`` is not an async function or async generator function.
    """
    if isinstance(fn, (classmethod, staticmethod)):
        raise TypeError(
            f"@routine must be applied under @{type(fn).__name__}: "
            "put the built-in decorator outermost"
        )
    wrapper: Callable[P, Any]
    if inspect.isasyncgenfunction(fn):
        wrapper = _generator_routine(fn)
    elif inspect.iscoroutinefunction(fn):
        wrapper = _coroutine_routine(fn)
    else:
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"@routine needs an 'async def' function or async generator; "
            f"{name!r} is {type(fn).__name__}"
        )
    return wrapper

"""``@routine``: make a function run on a worker when called."""

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
from .._exceptions import NoWorkersAvailable
from ..proxy import observe
from ..proxy.call import NOT_YET, RemoteCall
from ..serialization.task import Task, new_task_id
from ..serialization.tracebacks import trim_traceback
from . import contextvar
from .context import (
    actor_chain_var,
    current_proxy,
    current_task_var,
    deadline_var,
    dispatch_timeout_var,
    remaining,
    tightest,
)
from .retry import RetryPolicy, with_retries
from .streams import RemoteGenerator
from .tracing import current_traceparent

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")


@dataclasses.dataclass(frozen=True)
class _Options:
    timeout: float | None = None
    dispatch_timeout: float | None = None
    window: int = 0
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)


@dataclasses.dataclass(frozen=True)
class RoutineInfo:
    """What ``@routine`` knows about a routine; ``routine_info`` returns it."""

    body: Callable[..., Any]
    options: _Options
    generator: bool


def routine_info(fn: object) -> RoutineInfo | None:
    """The routine behind ``fn`` (a routine, or a method bound from one), or None."""
    info = getattr(getattr(fn, "__func__", fn), "__distaff_routine__", None)
    return info if isinstance(info, RoutineInfo) else None


def _new_task(
    body: Callable[..., Any], args: Any, kwargs: Any, generator: bool, options: _Options
) -> Task:
    proxy = current_proxy()
    parent = current_task_var.get()
    timeout = options.timeout
    if deadline_var.get() is not None:
        timeout = tightest(timeout, remaining())
        if timeout is not None and timeout <= 0:
            raise TimeoutError("the deadline for this call had already passed")
    dispatch_timeout = dispatch_timeout_var.get()
    if dispatch_timeout is None:
        dispatch_timeout = options.dispatch_timeout
    if timeout is not None:
        dispatch_timeout = tightest(dispatch_timeout, timeout)
    # positional, in Task's field order: matching keywords cost a third of
    # building it (test_routine_tasks.py checks every field)
    task = Task(
        body,  # callable
        args,
        kwargs,
        new_task_id(),  # id
        parent.id if parent is not None else None,  # caller
        timeout,
        dispatch_timeout,
        generator,
        options.window if generator else 0,  # window
        proxy,
        0,  # attempt
        contextvar.capture(),  # context
        actor_chain_var.get(),  # chain
        proxy.forward_output,  # output
        current_traceparent(),  # traceparent
    )
    task.start_fields()  # an unpicklable argument fails here, before any worker is asked
    return task


async def _dispatch(task: Task) -> Any:
    """Reach a worker within the task's dispatch timeout; TimeoutError if not."""
    assert task.proxy is not None
    if observe.current is None:
        return await task.proxy.dispatch(task, timeout=task.dispatch_timeout)
    outcome = "error"
    try:
        stream = await task.proxy.dispatch(task, timeout=task.dispatch_timeout)
        outcome = "ok"
        return stream
    except NoWorkersAvailable:
        outcome = "no_workers"
        raise
    except TimeoutError:
        outcome = "timeout"
        raise
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        if observe.current is not None:
            observe.current.dispatched(outcome)


def _bound(deadline: float | None) -> contextlib.AbstractAsyncContextManager[Any]:
    if deadline is None:
        return _NO_BOUND
    return asyncio.timeout(deadline - time.monotonic())


_NO_BOUND = contextlib.nullcontext()


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def run_task(task: Task) -> Any:
    """Dispatch ``task`` (a coroutine call) once and return its result."""
    deadline = None if task.timeout is None else time.monotonic() + task.timeout
    if observe.current is None:  # the common case, one coroutine frame fewer
        assert task.proxy is not None
        stream = await task.proxy.dispatch(task, timeout=task.dispatch_timeout)
    else:
        stream = await _dispatch(task)
    if stream.__class__ is RemoteCall:  # the built-in proxy's call: no frames to close it
        call: RemoteCall = stream
        try:
            if deadline is None:
                outcome = call.take()  # answered already, as a call usually is by now
                return outcome if outcome is not NOT_YET else await call.receive()
            async with _bound(deadline):
                return await call.receive()
        finally:
            if call.context:
                contextvar.apply(call.context)  # what the routine set
            call.discard()
    try:  # a balancer's own dispatch returned some other stream
        if deadline is None:
            return await stream.__anext__()
        async with _bound(deadline):
            return await anext(stream)
    finally:
        contextvar.apply(getattr(stream, "context", b""))
        await _close(stream)


async def run_with_policy(task: Task, options: _Options) -> Any:
    """Run ``task`` with the routine's retry policy."""
    if options.retry.retries:
        return await with_retries(task, options.retry, run_task)
    return await run_task(task)


def _coroutine_routine(
    body: Callable[P, Any], options: _Options
) -> Callable[P, Coroutine[Any, Any, Any]]:
    name = getattr(body, "__qualname__", "routine")
    retrying = bool(options.retry.retries)

    @functools.wraps(body)
    async def call(*args: P.args, **kwargs: P.kwargs) -> Any:
        started = time.perf_counter() if observe.current is not None else 0.0
        try:
            task = _new_task(body, args, kwargs, False, options)
            if retrying:
                return await with_retries(task, options.retry, run_task)
            return await run_task(task)
        except BaseException as error:
            trim_traceback(error)
            raise  # a bare raise adds no frame of ours to the traceback
        finally:
            if observe.current is not None and started:
                observe.current.finished(name, time.perf_counter() - started)

    call.__distaff_routine__ = RoutineInfo(body, options, False)  # type: ignore[attr-defined]
    return call


async def _first_step(task: Task) -> tuple[Any, Any]:
    """Dispatch a generator call and take its first item: ``(stream, item)``.

    Raises StopAsyncIteration (stream closed) if the generator yields nothing.
    """
    deadline = None if task.timeout is None else time.monotonic() + task.timeout
    return await take_first(await _dispatch(task), deadline)


async def take_first(stream: Any, deadline: float | None) -> tuple[Any, Any]:
    """``(stream, first item)`` of a generator call, by ``deadline``; closed on failure."""
    try:
        async with _bound(deadline):
            return stream, await stream.asend(None)
    except BaseException:
        await stream.aclose()
        raise


def _generator_routine(
    body: Callable[P, AsyncGenerator[Y, S]], options: _Options
) -> Callable[P, AsyncGenerator[Y, S]]:
    async def first_step(task: Task) -> tuple[Any, Any]:
        # retries, when enabled, cover the call until its first item only
        if options.retry.retries:
            return await with_retries(task, options.retry, _first_step)
        return await _first_step(task)

    @functools.wraps(body)
    def call(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Y, S]:
        return RemoteGenerator(
            lambda: _new_task(body, args, kwargs, True, options), first_step, _bound
        )

    call.__distaff_routine__ = RoutineInfo(body, options, True)  # type: ignore[attr-defined]
    return call


def _wrap(fn: Callable[P, Any], options: _Options) -> Callable[P, Any]:
    if isinstance(fn, (classmethod, staticmethod)):
        raise TypeError(
            f"@routine must be applied under @{type(fn).__name__}: "
            "put the built-in decorator outermost"
        )
    name = getattr(fn, "__qualname__", repr(fn))
    if inspect.isasyncgenfunction(fn):
        return _generator_routine(fn, options)
    if options.window:
        raise TypeError(f"window= is for async generators; {name!r} is not one")
    if inspect.iscoroutinefunction(fn):
        return _coroutine_routine(fn, options)
    if inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"@routine takes 'async def' generators, not plain generators: make {name!r} "
            "an 'async def' with 'yield', or return a list"
        )
    if inspect.isfunction(fn) or inspect.isbuiltin(fn) or isinstance(fn, functools.partial):
        return _coroutine_routine(fn, options)  # a plain def: runs in a worker thread
    raise TypeError(
        f"@routine needs a function ('def' or 'async def') or an async generator "
        f"function; {name!r} is {type(fn).__name__}"
    )


@overload
def routine(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def routine(  # type: ignore[overload-overlap]
    fn: Callable[P, AsyncGenerator[Y, S]],
) -> Callable[P, AsyncGenerator[Y, S]]: ...


@overload
def routine(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def routine(
    *,
    timeout: float | None = None,
    dispatch_timeout: float | None = None,
    window: int = 0,
    retries: int = 0,
    retry_on: tuple[type[Exception], ...] = (),
    backoff: float | Callable[[int], float] = 0.1,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def routine(
    fn: Callable[P, Any] | None = None,
    *,
    timeout: float | None = None,
    dispatch_timeout: float | None = None,
    window: int = 0,
    retries: int = 0,
    retry_on: tuple[type[Exception], ...] = (),
    backoff: float | Callable[[int], float] = 0.1,
) -> Any:
    """Make ``fn`` a routine: calling it runs the body on a pool worker.

    ``fn`` is an ``async def`` coroutine function, an async generator
    function, or a plain ``def``: plain, or a method (with
    ``@classmethod``/``@staticmethod`` outermost). Calling the routine returns
    a coroutine that dispatches when awaited (also for a plain ``def``: ``await
    f(x)``), or an async generator that dispatches on first iteration and
    supports ``asend``, ``athrow`` and ``aclose``. Results, yielded values and
    exceptions (with their type and traceback) come back as if the body had
    run locally. On the worker an ``async def`` runs on the event loop and a
    plain ``def`` on a bounded thread pool, so it never blocks the loop.

    Use as ``@routine`` or ``@routine(timeout=..., dispatch_timeout=...)``:
    ``timeout`` bounds each call's run (tightened by any enclosing
    ``RuntimeContext`` deadline) and ``dispatch_timeout`` the time to reach a
    worker (a ``RuntimeContext`` value overrides it). Expiry raises
    ``TimeoutError`` and cancels the remote work (a plain ``def`` already
    running finishes in its thread; its result is dropped).

    Arguments travel pickled (cloudpickle), so the body gets copies. For a
    method this includes ``self``: each call works on its own copy, and
    changes it makes to ``self`` stay on the worker and are dropped (three
    calls of a method doing ``self.n += 1`` each return 1, and the caller's
    object is unchanged). Return what should come back; for state that
    lives on a worker across calls, use an actor (``distaff.actor``). A
    text file open for reading arrives as an ``io.StringIO`` snapshot of its
    contents (at the same position); other open files do not pickle.

    ``window=N`` (async generators only) lets the worker run up to N items
    ahead of the caller, batching them on the wire: much faster streaming,
    at the cost of local semantics: the body runs ahead of the consumer and
    the stream supports only iteration and ``aclose`` (``asend(value)`` and
    ``athrow`` raise TypeError). Without it, each item is one step driven by
    the caller, exactly like a local generator.

    ``retries=N`` (for idempotent routines) runs a call again, up to N times,
    when its worker went away mid-call or it raised one of ``retry_on``,
    after a jittered exponential pause (``backoff`` seconds, doubling; or a
    function of the 0-based attempt returning the pause), all within the
    call's ``timeout``. ``current_task().attempt`` on the worker counts the
    runs from 0. A generator is retried only until its first item arrives.
    Without ``retries`` a call runs at most once.

    Raises:
        TypeError: ``fn`` is not a function, a plain generator function, or
            ``retry_on`` holds something other than exception classes; an
            option is not a number.
        ValueError: a timeout that is not positive, a negative ``window``,
            ``retries`` or ``backoff``.
    """
    retry = RetryPolicy(retries, tuple(retry_on), backoff)
    options = _Options(
        _checks.seconds("timeout", timeout, positive=True),
        _checks.seconds("dispatch_timeout", dispatch_timeout, positive=True),
        _checks.integer("window", window, minimum=0),
        retry,
    )
    if fn is None:
        return functools.partial(_wrap, options=options)
    return _wrap(fn, options)


def enter_task_deadlines(task: Task) -> None:
    """On a worker: nested calls inherit ``task``'s remaining time and actor call chain."""
    if task.chain is not None:
        actor_chain_var.set(task.chain)
    if task.timeout is not None:
        deadline_var.set(time.monotonic() + task.timeout)
    if task.dispatch_timeout is not None or dispatch_timeout_var.get() is not None:
        dispatch_timeout_var.set(task.dispatch_timeout)  # a set costs more than a get

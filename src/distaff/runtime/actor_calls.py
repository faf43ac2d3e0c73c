"""How a handle's calls travel: pinned to the actor's worker, deaths made final.

A method call is a task whose body (``worker/actors.py``) finds the
instance; it goes through the pool's proxy with a balancer that offers only
the actor's worker, so it is never sent anywhere else. What the transport
reports about that worker (lost, draining, not in the pool) becomes an
``ActorDiedError`` that the handle remembers: later calls fail at once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .._exceptions import (
    ActorDiedError,
    NoWorkersAvailable,
    RpcError,
    StatusCode,
    WorkerLostError,
)
from ..balancers.pinned import PinnedLoadBalancer
from ..proxy.call import NOT_YET, RemoteCall
from ..serialization.task import Task
from ..serialization.tracebacks import trim_traceback
from .routine import _bound, _new_task, _Options, take_first
from .streams import RemoteGenerator
from .worker.actors import call_method, close_actor, stream_method

if TYPE_CHECKING:
    from ..proxy.proxy import WorkerProxy
    from .actors import ActorHandle

CLOSE = close_actor
_OPTIONS = _Options()
_SETTLE = 1.0  # seconds to wait for an actor's worker to show up in a running pool


def bind_method(handle: ActorHandle[Any], name: str, generator: bool) -> Callable[..., Any]:
    """The callable ``handle.<name>``: a coroutine method or a streamed one."""
    if generator:

        def stream(*args: Any, **kwargs: Any) -> RemoteGenerator[Any, Any]:
            return RemoteGenerator(
                lambda: _task(handle, stream_method, name, args, kwargs, True),
                functools.partial(_first_step, handle),
                _bound,
            )

        return stream

    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await _call(handle, _task(handle, call_method, name, args, kwargs, False))
        except BaseException as error:
            trim_traceback(error)
            raise

    return call


def _task(
    handle: ActorHandle[Any],
    body: Callable[..., Any],
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    generator: bool,
) -> Task:
    handle.check_alive()
    task = _new_task(body, (handle.id, name, *args), kwargs, generator, _OPTIONS)
    if task.chain is None:  # a call from outside any actor starts a chain of its own
        task.chain = task.id  # unique already: no second id to make
    return task


async def _call(handle: ActorHandle[Any], task: Task) -> Any:
    deadline = None if task.timeout is None else time.monotonic() + task.timeout
    stream = await dispatch(handle, task)
    # a pinned dispatch always makes the built-in RemoteCall: read and end it
    # without the frames of __anext__ and an awaited aclose
    call = stream if stream.__class__ is RemoteCall else None
    try:
        if deadline is None:
            if call is None:
                return await anext(stream)
            outcome = call.take()  # answered already, as a call usually is by now
            return outcome if outcome is not NOT_YET else await call.receive()
        async with _bound(deadline):
            return await (call.receive() if call is not None else anext(stream))
    except (RpcError, ActorDiedError) as error:
        death = _death(handle, error, task.proxy)
        if death is None:
            raise
        raise death from error
    finally:
        if call is not None:
            call.discard()
        else:
            await stream.aclose()  # type: ignore[attr-defined]


async def run_pinned(handle: ActorHandle[Any], body: Callable[..., Any], args: Any) -> Any:
    """Run ``body(*args)`` as a plain task on the actor's worker."""
    return await _call(handle, _new_task(body, args, {}, False, _OPTIONS))


async def dispatch(handle: ActorHandle[Any], task: Task) -> AsyncIterator[Any]:
    """Send ``task`` to the actor's worker only; a gone worker is a dead actor."""
    proxy: WorkerProxy = task.proxy
    uid = handle.worker
    if proxy.departure(uid) is not None:  # known gone: fail at once, with why
        raise _gone(handle, proxy)
    pinned = handle._balancer
    try:
        try:
            return await proxy.dispatch(task, timeout=task.dispatch_timeout, balancer=pinned)
        except NoWorkersAvailable as error:
            # not in the membership yet (a proxy just restored on a worker)?
            if error.__cause__ is not None or not await _appears(proxy, uid, task):
                raise
        return await proxy.dispatch(task, timeout=task.dispatch_timeout, balancer=pinned)
    except (RpcError, NoWorkersAvailable) as error:
        death = _death(handle, error, proxy)
        if death is None:
            raise
        raise death from error


async def _appears(proxy: WorkerProxy, uid: str, task: Task) -> bool:
    wait = _SETTLE if task.dispatch_timeout is None else min(_SETTLE, task.dispatch_timeout)
    try:
        await proxy.wait_for(lambda workers: any(m.uid == uid for m in workers), wait)
    except (TimeoutError, RuntimeError):
        return False
    return True


def _drained(proxy: WorkerProxy | None, uid: str) -> bool | None:
    """Whether worker ``uid`` drained (True), was lost (False), or neither is known (None)."""
    if proxy is None:
        return None
    departure = proxy.departure(uid)
    if departure is not None:
        return departure.drained
    for metadata, connection in proxy.context.workers.items():
        if metadata.uid == uid:
            return True if getattr(connection, "draining", False) else None
    return None


def _gone(
    handle: ActorHandle[Any], proxy: WorkerProxy | None, cause: BaseException | None = None
) -> ActorDiedError:
    """The death of an actor whose worker left the pool or cannot be reached."""
    uid = handle.worker
    drained = _drained(proxy, uid)
    if drained:
        return handle.died(ActorDiedError.DRAINED, f"worker {uid} drained and left the pool")
    if cause is not None:
        return handle.died(ActorDiedError.WORKER_LOST, f"worker {uid} cannot be reached: {cause}")
    if drained is None:
        return handle.died(
            ActorDiedError.WORKER_LOST,
            f"worker {uid} is not in the pool (it stopped, drained or was lost "
            "before this process saw it leave)",
        )
    return handle.died(ActorDiedError.WORKER_LOST, f"worker {uid} was lost")


def _death(
    handle: ActorHandle[Any], error: BaseException, proxy: WorkerProxy | None = None
) -> ActorDiedError | None:
    """The ActorDiedError that ``error`` means for this actor, or None if it means none."""
    uid = handle.worker
    if isinstance(error, ActorDiedError):  # the worker says so: remember why
        handle.died(error.reason, error.details)
        return None
    if isinstance(error, WorkerLostError):
        if _drained(proxy, uid):  # the session ended after the worker announced its drain
            return handle.died(ActorDiedError.DRAINED, f"worker {uid} drained and stopped")
        return handle.died(ActorDiedError.WORKER_LOST, f"the connection to worker {uid} was lost")
    if isinstance(error, NoWorkersAvailable):
        cause = error.__cause__
        if isinstance(cause, RpcError) and cause.code is StatusCode.RESOURCE_EXHAUSTED:
            return None  # busy, not gone
        return _gone(handle, proxy, cause)
    if isinstance(error, RpcError) and error.code is StatusCode.CANCELLED:
        if "worker stopped" in error.details:
            return handle.died(ActorDiedError.DRAINED, f"worker {uid} stopped: {error.details}")
        return handle.died(ActorDiedError.CLOSED, error.details)
    return None


class _ActorStream:
    """A generator method's call: each step maps a lost worker to a dead actor."""

    __slots__ = ("_call", "_handle", "_proxy")

    def __init__(self, handle: ActorHandle[Any], call: Any, proxy: WorkerProxy) -> None:
        self._handle = handle
        self._call = call
        self._proxy = proxy

    async def _step(self, step: Callable[[], Any]) -> Any:
        try:
            return await step()
        except (RpcError, ActorDiedError) as error:
            death = _death(self._handle, error, self._proxy)
            if death is None:
                raise
            raise death from error

    async def asend(self, value: Any) -> Any:
        return await self._step(lambda: self._call.asend(value))

    async def athrow(self, error: BaseException) -> Any:
        return await self._step(lambda: self._call.athrow(error))

    async def aclose(self) -> None:
        await self._step(self._call.aclose)

    def cancel(self) -> None:
        self._call.cancel()


async def _first_step(handle: ActorHandle[Any], task: Task) -> tuple[Any, Any]:
    deadline = None if task.timeout is None else time.monotonic() + task.timeout
    return await take_first(
        _ActorStream(handle, await dispatch(handle, task), task.proxy), deadline
    )


async def ask(proxy: WorkerProxy, uid: str, body: Callable[..., Any], args: Any) -> Any:
    """Run ``body(*args)`` on worker ``uid`` of ``proxy`` and return its result.

    Unbounded here: the caller bounds it (``asyncio.timeout``).
    """
    task = _new_task(body, args, {}, False, _OPTIONS)
    stream = await proxy.dispatch(
        task, timeout=task.dispatch_timeout, balancer=PinnedLoadBalancer(uid)
    )
    try:
        return await anext(stream)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]

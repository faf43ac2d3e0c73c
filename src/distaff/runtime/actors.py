"""``@actor``: a class whose instances live on a worker, and their handles.

A handle is an address (actor id, worker uid, class): its method calls are
ordinary tasks dispatched through the ambient pool's proxy with a balancer
that pins them to the actor's worker, so they use the call path (coroutine
methods) and the stream path (async generator methods) unchanged. What runs
on the worker is in ``worker/actors.py``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from .. import _checks
from .._exceptions import ActorDiedError
from ..balancers.pinned import PinnedLoadBalancer
from ..proxy.proxy import WorkerProxy
from ..serialization.task import new_task_id
from ..serialization.tracebacks import trim_traceback
from . import actor_calls as calls
from .context import current_proxy, current_proxy_var
from .routine import _new_task, _Options, run_task
from .worker.actors import ACTOR_MARKER, ActorInfo, find_actor, spawn_actor

T = TypeVar("T")
_OPTIONS = _Options()
LOOKUP_TIMEOUT = 10.0  # seconds a name lookup may take, all workers asked at once


def holds_actors(proxy: WorkerProxy) -> bool:
    """True while actors spawned through ``proxy`` in this process are open.

    An actor lives as long as the session that spawned it: such a proxy
    keeps its sessions open however idle, and a worker keeps a proxy it
    restored running.
    """
    return bool(proxy.actors)


class ActorHandle(Generic[T]):
    """The address of an actor: call its methods as if it were local.

    ``await handle.method(...)`` runs a coroutine method on the actor's
    worker; ``handle.stream(...)`` of an async generator method returns an
    async generator (``asend``, ``athrow``, ``aclose``). A handle pickles
    small and unpickles without I/O: pass it to routines on other workers.
    Once its actor is known dead, every call raises ``ActorDiedError`` at
    once.
    """

    __slots__ = ("__weakref__", "_balancer", "_cls", "_death", "_methods", "id", "name", "worker")

    def __init__(self, actor_id: str, worker: str, cls: type[T], name: str | None = None) -> None:
        self.id = actor_id
        self.worker = worker
        self.name = name
        self._cls = cls
        self._balancer = PinnedLoadBalancer(worker)
        self._death: tuple[str, str] | None = None
        self._methods: dict[str, Any] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorHandle, (self.id, self.worker, self._cls, self.name))

    def __getattr__(self, name: str) -> Any:
        methods = self._methods
        method = methods.get(name)
        if method is None:
            info: ActorInfo = getattr(self._cls, ACTOR_MARKER)
            if name not in info.methods:
                raise AttributeError(
                    f"actor {self._cls.__qualname__} has no remote method {name!r} "
                    "(only public 'async def' methods and async generator methods are)"
                )
            method = methods[name] = calls.bind_method(self, name, info.methods[name])
        return method

    @property
    def label(self) -> str:
        """How errors name this actor: its name, else its id."""
        return self.name or self.id

    def died(self, reason: str, details: str) -> ActorDiedError:
        """Remember that the actor is gone; return the error to raise."""
        if self._death is None:
            self._death = (reason, details)
        return ActorDiedError(self.label, *self._death)

    def check_alive(self) -> None:
        """Raise ActorDiedError if this handle already knows its actor is gone."""
        if self._death is not None:
            raise ActorDiedError(self.label, *self._death)

    async def close(self) -> None:
        """End the actor: calls waiting for a turn and later calls fail; idempotent.

        Calls already running finish. Closing an actor that is already gone
        is quiet.
        """
        if self._death is not None:
            return
        try:
            await calls.run_pinned(self, calls.CLOSE, (self.id,))
        except ActorDiedError:
            pass
        finally:
            self._death = (ActorDiedError.CLOSED, "closed by its handle")
            proxy = current_proxy_var.get()
            if proxy is not None:
                proxy.actors.discard(self.id)

    async def __aenter__(self) -> ActorHandle[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        return f"<actor {self._cls.__qualname__}{named} {self.id} on worker {self.worker}>"


async def spawn(
    cls: type[T], args: tuple[Any, ...], kwargs: dict[str, Any], name: str | None
) -> ActorHandle[T]:
    """Place an instance of ``cls`` on a worker the pool's balancer picks."""
    if name is not None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"an actor name must be a non-empty str, not {name!r}")
        if await _lookup(name) is not None:
            raise ValueError(f"an actor named {name!r} already exists in this pool")
    actor_id = new_task_id()
    task = _new_task(spawn_actor, (cls, args, kwargs, actor_id, name), {}, False, _OPTIONS)
    worker: str = await run_task(task)
    assert task.proxy is not None
    task.proxy.actors.add(actor_id)
    return ActorHandle(actor_id, worker, cls, name)


async def get_actor(name: str, *, timeout: float = LOOKUP_TIMEOUT) -> ActorHandle[Any]:
    """Find the actor spawned with ``name=name`` in the current pool.

    Works from any process of the pool: the caller, or a routine on a worker.
    Every worker is asked at once and the first that holds the actor
    answers; ``timeout`` bounds the whole lookup (waiting for the pool's
    first worker included). A worker that has not answered by then counts
    as not holding it.

    Raises:
        ValueError: no live actor has that name (among the workers that
            answered in time), or ``timeout`` is not > 0.
        TypeError: ``timeout`` is not a number.
    """
    found = await _lookup(name, _checks.seconds("timeout", timeout, positive=True))
    if found is None:
        raise ValueError(f"no actor named {name!r} lives in this pool")
    actor_id, cls, worker = found
    return ActorHandle(actor_id, worker, cls, name)


class _Found(Exception):
    """A worker holds the actor: stops the other questions (internal)."""

    def __init__(self, answer: tuple[str, type, str]) -> None:
        super().__init__(answer[0])
        self.answer = answer


async def _lookup(name: str, timeout: float = LOOKUP_TIMEOUT) -> tuple[str, type, str] | None:
    """Ask every worker of the pool at once whether it holds the actor ``name``."""
    proxy = current_proxy()
    if not proxy.started:
        await proxy.start()
    found: tuple[str, type, str] | None = None
    try:
        async with asyncio.timeout(timeout):
            await proxy.wait_for(bool, proxy.wait)
            async with asyncio.TaskGroup() as group:
                for metadata in proxy.workers:
                    group.create_task(_ask(proxy, metadata.uid, name))
    except* _Found as answers:
        found = cast(_Found, answers.exceptions[0]).answer
    except* TimeoutError:
        pass  # the workers that did not answer in time hold no live actor
    return found


async def _ask(proxy: WorkerProxy, uid: str, name: str) -> None:
    try:
        answer = await calls.ask(proxy, uid, find_actor, (name,))
    except Exception:  # unreachable, stopped, refused: it holds no live actor
        return
    if answer is not None:
        raise _Found(answer)


def _remote_methods(cls: type) -> dict[str, bool]:
    methods: dict[str, bool] = {}
    for name in dir(cls):
        if name.startswith("_") or hasattr(object, name):
            continue
        value = inspect.getattr_static(cls, name)
        if isinstance(value, (staticmethod, classmethod, property)) or not callable(value):
            continue
        where = f"{cls.__qualname__}.{name}"
        if name in ("spawn", "close"):
            raise TypeError(
                f"@distaff.actor: {where} clashes with the handle's own {name}(); rename it"
            )
        if inspect.isasyncgenfunction(value):
            methods[name] = True
        elif inspect.iscoroutinefunction(value):
            if name != "on_start":
                methods[name] = False
        else:
            raise TypeError(
                f"@distaff.actor: {where} is a plain 'def', which would block the worker's "
                f"event loop; make it 'async def', or private ('_{name}')"
            )
    return methods


async def _spawn_classmethod(
    cls: type[Any], /, *args: Any, name: str | None = None, **kwargs: Any
) -> Any:
    try:
        return await spawn(cls, args, kwargs, name)
    except BaseException as error:
        trim_traceback(error)
        raise  # a bare raise adds no frame of ours


_SPAWN: classmethod[Any, ..., Any] = classmethod(_spawn_classmethod)


def _make_actor(cls: type[T], concurrency: int | None) -> type[T]:
    if not isinstance(cls, type):
        raise TypeError(f"@distaff.actor decorates a class, not {type(cls).__name__}")
    for klass in cls.__mro__:
        if "spawn" in vars(klass) and vars(klass)["spawn"] is not _SPAWN:
            raise TypeError(
                f"@distaff.actor: {klass.__qualname__} defines 'spawn', which actors use to "
                "start an instance on a worker; rename it"
            )
    setattr(cls, ACTOR_MARKER, ActorInfo(_remote_methods(cls), concurrency))
    cls.spawn = _SPAWN  # type: ignore[attr-defined]
    return cls


def actor(cls: type[T] | None = None, *, concurrency: int | None = 1) -> Any:
    """Make a class an actor: ``await Cls.spawn(*args, **kwargs)`` runs it on a worker.

    ``spawn`` (a coroutine; ``name=`` is its own keyword) places an instance
    with the pool's balancer, runs ``__init__`` and an optional ``async def
    on_start()`` there, and returns an :class:`ActorHandle`; a constructor
    error is raised with its own type and leaves nothing behind. The class
    itself stays usable locally.

    Public ``async def`` methods and async generator methods become remote.
    ``concurrency`` turns run at once (default 1: one method, or one
    generator step, at a time; ``None``: no limit). Calls from one caller
    start in the order they were made; a call from a chain of actor calls
    already inside the actor enters at once, so actors calling each other
    (or themselves) cannot deadlock.

    Raises:
        TypeError: a public method is a plain ``def`` (it would block the
            worker's loop), or the class defines ``spawn`` or ``close``.
        ValueError: ``concurrency`` is not None or a positive int.
    """
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ValueError(f"concurrency must be a positive int or None, not {concurrency!r}")
    if cls is None:
        return functools.partial(_make_actor, concurrency=concurrency)
    return _make_actor(cls, concurrency)

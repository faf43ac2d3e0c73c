"""The worker's side of actors: the instances living here, and their turns.

Actor methods reach the worker as ordinary routine calls whose bodies are
the functions at the end of this module: they look the instance up in this
process's :class:`ActorRegistry` and call the method within a turn. The
service only marks which caller session each call came on
(``actor_scope_var``); an actor belongs to the session that spawned it and
is closed when that session ends (its pool closed, or its caller went
away), so a pool never leaves an actor behind.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from ..._exceptions import ActorDiedError
from ...serialization.task import new_task_id
from ..context import actor_chain_var

ACTOR_MARKER = "__distaff_actor__"


@dataclasses.dataclass(frozen=True)
class ActorInfo:
    """What ``@actor`` records on a class.

    Attributes:
        methods: the remote methods, each mapped to True for an async
            generator method (streamed) and False for a coroutine method.
        concurrency: how many turns may run at once (None: no limit).
    """

    methods: Mapping[str, bool]
    concurrency: int | None


class Turns:
    """Who may run inside one actor now: up to ``limit`` call chains, first come first in.

    A call whose chain is already inside enters at once (reentrancy), so a
    self-call or A -> B -> A cannot deadlock. ``limit=None`` admits everyone.
    """

    __slots__ = ("_busy", "_inside", "_waiters", "dead", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.dead: ActorDiedError | None = None
        self._busy = 0
        self._inside: dict[str, int] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_enter(self, chain: str) -> bool | None:
        """Take a turn for ``chain`` if one is free now: True/False as ``enter``; None if not.

        The hot path of an uncontended call: no coroutine, no await.

        Raises:
            ActorDiedError: the actor was closed.
        """
        if self.dead is not None:
            raise _copy(self.dead)
        inside = self._inside
        limit = self.limit
        slot = False
        if limit is not None and chain not in inside:
            if self._busy >= limit or self._waiters:
                return None
            self._busy += 1
            slot = True
        inside[chain] = inside.get(chain, 0) + 1
        return slot

    async def enter(self, chain: str) -> bool:
        """Wait for a turn for ``chain``; True if it took a slot (pass it to ``leave``).

        Raises:
            ActorDiedError: the actor was closed before the turn came.
        """
        slot = self.try_enter(chain)
        if slot is not None:
            return slot
        await self._wait()  # the slot is handed over to us, first come first in
        self._inside[chain] = self._inside.get(chain, 0) + 1
        return True

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved: the slot was handed over to us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # granted as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def leave(self, chain: str, slot: bool) -> None:
        """End a turn taken by ``enter``."""
        count = self._inside[chain] - 1
        if count:
            self._inside[chain] = count
        else:
            del self._inside[chain]
        if slot:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; _busy is unchanged
                return
        self._busy -= 1

    def kill(self, error: ActorDiedError) -> None:
        """Fail every call still waiting for a turn, and every later one."""
        self.dead = error
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(_copy(error))


def _copy(error: ActorDiedError) -> ActorDiedError:
    # one exception object must not be raised in many tasks
    return ActorDiedError(error.actor, error.reason, error.details)


@dataclasses.dataclass(eq=False)
class LiveActor:
    """One actor instance living in this process."""

    id: str
    name: str | None
    instance: Any
    info: ActorInfo
    turns: Turns

    def method(self, name: str) -> Any:
        """The bound remote method ``name``; AttributeError if it is not one."""
        if name not in self.info.methods:
            raise AttributeError(
                f"{type(self.instance).__qualname__} has no remote method {name!r}"
            )
        return getattr(self.instance, name)


class ActorRegistry:
    """The actors living in this process, by id and by name."""

    def __init__(self) -> None:
        self._actors: dict[str, LiveActor] = {}
        self._names: dict[str, str] = {}
        # why recent actors ended, so a late call gets the real reason
        self._ended: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._actors)

    def get(self, actor_id: str) -> LiveActor:
        """The live actor ``actor_id``; ActorDiedError (with why) if it is gone."""
        actor = self._actors.get(actor_id)
        if actor is None:
            reason, details = self._ended.get(
                actor_id, (ActorDiedError.CLOSED, "it no longer lives on this worker")
            )
            raise ActorDiedError(actor_id, reason, details)
        return actor

    def find(self, name: str) -> LiveActor | None:
        """The live actor called ``name``, if it lives here."""
        actor_id = self._names.get(name)
        return None if actor_id is None else self._actors.get(actor_id)

    def reserve(self, name: str, actor_id: str) -> None:
        """Claim ``name`` for ``actor_id``; ValueError if another actor has it."""
        if self._names.setdefault(name, actor_id) != actor_id:
            raise ValueError(f"an actor named {name!r} already exists; close it or pick another")

    def add(self, actor: LiveActor) -> None:
        """Register a constructed actor."""
        self._actors[actor.id] = actor

    def ended(self, actor_id: str, name: str | None, reason: str, details: str) -> None:
        """Record that ``actor_id`` ended (or never started) and free its name."""
        if name is not None and self._names.get(name) == actor_id:
            del self._names[name]
        self._ended[actor_id] = (reason, details)
        if len(self._ended) > 10_000:
            self._ended.popitem(last=False)

    def close(self, actor_id: str, reason: str, details: str) -> bool:
        """Drop an actor: waiting and later calls fail; running ones finish."""
        actor = self._actors.pop(actor_id, None)
        if actor is None:
            return False
        self.ended(actor_id, actor.name, reason, details)
        actor.turns.kill(ActorDiedError(actor.name or actor_id, reason, details))
        return True


_registry = ActorRegistry()


def registry() -> ActorRegistry:
    """This process's actor registry."""
    return _registry


class ActorScope:
    """The actors one caller session spawned here; they end with the session."""

    __slots__ = ("_owned", "worker")

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._owned: set[str] = set()

    def own(self, actor_id: str) -> None:
        """Tie ``actor_id`` to this session."""
        self._owned.add(actor_id)

    def close(self) -> None:
        """The session ended: close every actor it spawned that still lives."""
        owned, self._owned = self._owned, set()
        for actor_id in owned:
            registry().close(
                actor_id,
                ActorDiedError.CLOSED,
                "the pool that spawned it closed (its session with the worker ended)",
            )


actor_scope_var: contextvars.ContextVar[ActorScope | None] = contextvars.ContextVar(
    "distaff_actor_scope", default=None
)


# Routine bodies: what an actor's spawn, calls and lookups run on the worker.


async def spawn_actor(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], actor_id: str, name: str | None
) -> str:
    """Construct ``cls`` here and register it; return this worker's uid."""
    scope = actor_scope_var.get()
    if scope is None:
        raise RuntimeError("actors can only be spawned on a distaff worker")
    info: ActorInfo = getattr(cls, ACTOR_MARKER)
    actors = registry()
    if name is not None:
        actors.reserve(name, actor_id)
    actor_chain_var.set(actor_id)
    try:
        instance = cls(*args, **kwargs)
        on_start = getattr(instance, "on_start", None)
        if on_start is not None:
            await on_start()
    except BaseException:
        actors.ended(actor_id, name, ActorDiedError.CONSTRUCTOR_FAILED, "its constructor raised")
        raise
    actors.add(LiveActor(actor_id, name, instance, info, Turns(info.concurrency)))
    scope.own(actor_id)
    return scope.worker


def _chain() -> str:
    # every actor call carries its chain (Task.chain); the worker set it
    chain = actor_chain_var.get()
    if chain is None:
        chain = new_task_id()
        actor_chain_var.set(chain)
    return chain


async def call_method(actor_id: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
    """Run a coroutine method of actor ``actor_id`` in a turn of the call's chain.

    The method's arguments are this task's own (after the two names), so
    they pickle exactly as a routine's would (the C pickler for builtins).
    """
    actor = _registry.get(actor_id)
    bound = actor.method(method)
    turns = actor.turns
    if turns.limit is None:  # no turns to take: only a closed actor refuses
        if turns.dead is not None:
            raise _copy(turns.dead)
        return await bound(*args, **kwargs)
    chain = actor_chain_var.get() or _chain()
    slot = turns.try_enter(chain)
    if slot is None:
        slot = await turns.enter(chain)
    try:
        return await bound(*args, **kwargs)
    finally:
        turns.leave(chain, slot)


async def stream_method(
    actor_id: str, method: str, /, *args: Any, **kwargs: Any
) -> AsyncGenerator[Any, Any]:
    """Drive an async generator method of actor ``actor_id``, one turn per step."""
    actor = registry().get(actor_id)
    inner = actor.method(method)(*args, **kwargs)
    chain = _chain()
    turns = actor.turns
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            slot = await turns.enter(chain)
            try:
                item = await (inner.asend(sent) if thrown is None else inner.athrow(thrown))
            except StopAsyncIteration:
                return
            finally:
                turns.leave(chain, slot)
            sent, thrown = None, None
            try:
                sent = yield item
            except GeneratorExit:
                raise
            except BaseException as error:  # athrow() from the caller: into the body
                thrown = error
    finally:
        await _close_inner(turns, chain, inner)


async def _close_inner(turns: Turns, chain: str, inner: Any) -> None:
    """Close the method's generator (its ``finally`` runs) within a turn if it still can."""
    try:
        slot = await turns.enter(chain)
    except ActorDiedError:
        await inner.aclose()
        return
    try:
        await inner.aclose()
    finally:
        turns.leave(chain, slot)


async def close_actor(actor_id: str) -> None:
    """Close actor ``actor_id`` if it lives here; quiet if it does not."""
    registry().close(actor_id, ActorDiedError.CLOSED, "closed by a handle")


async def find_actor(name: str) -> tuple[str, type, str] | None:
    """``(actor id, class, worker uid)`` of the actor called ``name`` here, or None."""
    actor = registry().find(name)
    scope = actor_scope_var.get()
    if actor is None or scope is None:
        return None
    return actor.id, type(actor.instance), scope.worker

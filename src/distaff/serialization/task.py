"""Task: one routine call, as it travels to a worker."""

from __future__ import annotations

import dataclasses
import itertools
import os
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .session import StartFields
from .tasks import encode_arguments, encode_routine
from .wire import Payload


class ShippedProxyLike(Protocol):
    """What a task needs of the proxy that travels with it."""

    def serialized(self) -> tuple[str, bytes]:
        """``(id, pickled bytes)``, pickled once per proxy."""
        ...


# Task ids: a random per-process prefix and a counter. uuid4() per call costs
# an os.urandom system call, a visible share of a no-op call's latency. The
# prefix has a fixed length, so the counter needs no padding; in decimal, as
# a format spec (``:016x``) costs twice the rest of the id.
_id_prefix = os.urandom(8).hex()
_id_counter = itertools.count()


def new_task_id() -> str:
    """Return an id unique across processes (random prefix) and calls (counter)."""
    return f"{_id_prefix}{next(_id_counter)}"


# id(body) -> (a weak reference to body, its blob). Keyed by id, not by a
# WeakKeyDictionary, whose get() costs a Python call and a new weakref per
# call; the reference's callback drops the entry as the body is collected,
# before its id can be reused.
_routine_blobs: dict[int, tuple[weakref.ref[Any], bytes]] = {}


def routine_blob(body: Callable[..., Any]) -> bytes:
    """The encoded routine ``body``, pickled once per body (while it lives)."""
    entry = _routine_blobs.get(id(body))
    if entry is not None and entry[0]() is body:
        return entry[1]
    blob = encode_routine(body)
    key = id(body)

    def forget(_: weakref.ref[Any]) -> None:
        _routine_blobs.pop(key, None)

    try:
        ref = weakref.ref(body, forget)
    except TypeError:  # not weakly referenceable (a builtin): pickled each time
        return blob
    _routine_blobs[key] = (ref, blob)
    return blob


@dataclasses.dataclass(eq=False, slots=True)
class Task:
    """One call of a routine.

    Attributes:
        id: unique id of this call.
        callable: the routine's body (the undecorated ``async def``).
        args: positional arguments.
        kwargs: keyword arguments.
        caller: id of the task that made this call, when made on a worker.
        timeout: execution budget in seconds (None: unbounded).
        dispatch_timeout: seconds to reach a worker; nested calls inherit it.
        generator: the body is an async generator function.
        window: for generators, how many items the worker may produce ahead
            of the caller's pulls (0: strictly one per pull).
        proxy: the proxy that dispatches it (a ``WorkerProxy``); it ships
            along for nested calls.
        attempt: which run of the call this is, counted from 0; above 0 only
            for routines with ``retries`` (see ``routine``).
        context: the caller's ``distaff.ContextVar`` values, pickled (empty
            when there are none).
        chain: the actor call chain the call belongs to (made, directly or
            through routines, by an actor method); actors let a call of a
            chain already inside them enter at once.
        output: the worker sends what the call prints and logs back.
        traceparent: the W3C trace context of the calling span ("" = none).
    """

    callable: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: str = dataclasses.field(default_factory=new_task_id)
    caller: str | None = None
    timeout: float | None = None
    dispatch_timeout: float | None = None
    generator: bool = False
    window: int = 0
    proxy: Any = dataclasses.field(default=None, repr=False)
    attempt: int = 0
    context: bytes = dataclasses.field(default=b"", repr=False)
    chain: str | None = None
    output: bool = False
    traceparent: str = ""
    _encoded: tuple[bytes, Payload] | None = dataclasses.field(default=None, init=False, repr=False)
    _fields: StartFields | None = dataclasses.field(default=None, init=False, repr=False)

    def encode(self) -> tuple[bytes, Payload]:
        """Return ``(routine, arguments)`` blobs, pickled once per task.

        Raises:
            SerializationError: an argument cannot be pickled; the message
                names it. No worker has been contacted yet.
        """
        if self._encoded is None:
            self._encoded = (
                routine_blob(self.callable),
                encode_arguments(self.args, self.kwargs, routine=self.callable),
            )
        return self._encoded

    def next_attempt(self, timeout: float | None) -> Task:
        """The next run of this call: a new id, ``attempt + 1``, the same pickles."""
        dispatch_timeout = self.dispatch_timeout
        if timeout is not None and dispatch_timeout is not None:
            dispatch_timeout = min(dispatch_timeout, timeout)
        task = dataclasses.replace(
            self,
            id=new_task_id(),
            attempt=self.attempt + 1,
            timeout=timeout,
            dispatch_timeout=dispatch_timeout,
        )
        task._encoded = self._encoded
        return task

    def start_fields(self) -> StartFields:
        """Everything the Start frame carries, encoded (pickling happens here).

        Raises:
            SerializationError: the routine, an argument or the proxy cannot
                be pickled. No worker has been contacted yet.
        """
        if self._fields is not None:
            return self._fields
        routine, arguments = self.encode()
        proxy_id, proxy = ("", b"")
        if self.proxy is not None:
            shipped: ShippedProxyLike = self.proxy
            proxy_id, proxy = shipped.serialized()
        # positional, in StartFields' order: matching 15 keywords cost more
        # than the rest of this method (test_task.py checks every field)
        self._fields = StartFields(
            self.id,  # task_id
            routine,
            arguments,
            self.caller or "",  # caller
            proxy_id,
            proxy,
            self.timeout or 0.0,  # timeout
            self.dispatch_timeout or 0.0,  # dispatch_timeout
            self.generator,
            self.window,
            self.attempt,
            self.context,
            self.chain or "",  # chain
            self.output,
            self.traceparent,
        )
        return self._fields

    @classmethod
    def from_start(
        cls,
        start: Any,
        *,
        callable: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        proxy: Any,
    ) -> Task:
        """The task a Start frame describes (the inverse of ``start_fields``)."""
        return cls(  # positional, in field order, as in start_fields
            callable,
            args,
            kwargs,
            start.task_id,  # id
            start.caller or None,  # caller
            start.timeout or None,  # timeout
            start.dispatch_timeout or None,  # dispatch_timeout
            start.generator,
            start.window,
            proxy,
            start.attempt,
            start.context,
            start.chain or None,  # chain
            start.output,
            start.traceparent,
        )

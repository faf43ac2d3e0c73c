"""RemoteCall: the caller's end of one call multiplexed on a session."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Protocol

from .._exceptions import RpcError, StatusCode, WorkerLostError
from ..serialization import session as s
from ..serialization.exceptions import decode_exception, encode_exception
from ..serialization.tasks import dumps, loads
from ..serialization.wire import StepKind
from .output import OutputSinkLike, current_output_sink, emit


class _NotYet:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_YET"


NOT_YET: Any = _NotYet()  # take(): nothing to read yet


class CallLink(Protocol):
    """What a call needs of the session driver that carries it."""

    target: str
    error: RpcError | None  # why the stream ended, once it has
    loop: asyncio.AbstractEventLoop  # the loop the calls run on

    def step(self, call: int, kind: int, payload: bytes = b"", credit: int = 0) -> None:
        """Queue a step frame for ``call``."""
        ...

    def cancel(self, call: int) -> None:
        """Give up on ``call`` (a Cancel frame, or take back its Start)."""
        ...


class RemoteCall:
    """The caller's end of one call: an async iterator of its results.

    For a coroutine routine it yields the return value once. For an async
    generator routine it also supports ``asend``, ``athrow`` and ``aclose``,
    each one step of the remote generator. ``aclose`` is idempotent and quiet
    once the call has ended for any reason.
    """

    __slots__ = (
        "_consumed",
        "_ended",
        "_events",
        "_generator",
        "_link",
        "_loop",
        "_sink",
        "_waiter",
        "_window",
        "ahead",
        "born",
        "closed_by",
        "context",
        "id",
    )

    def __init__(self, link: CallLink, generator: bool, window: int) -> None:
        self._link = link
        self._loop = link.loop  # asyncio.get_running_loop() costs a getpid() on 3.11
        self.id = 0
        # when it began, for the connection's latency average (calls, not streams)
        self.born: float | None = None if generator else time.monotonic()
        self.ahead = 0  # this caller's calls on the worker when it was sent
        self._generator = generator
        self._window = window
        self._consumed = 0
        self._events: collections.deque[s.Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False  # a final event arrived, or we cancelled
        self.closed_by: str | None = None  # why distaff closed it, if it did
        self.context = b""  # ContextVar changes that came with the last outcome
        # made inside a call on a worker: its output goes up that call's stream
        self._sink: OutputSinkLike | None = current_output_sink.get()

    @property
    def idle(self) -> bool:
        """True when nobody is waiting on this call (a suspended stream)."""
        return self._waiter is None

    def feed(self, event: s.Event) -> None:
        """Deliver a session event for this call (driver only)."""
        kind = event.__class__
        if kind is s.Output:  # written at once, whoever reads the call
            if self._sink is not None:
                self._sink.forward(event.output)  # type: ignore[union-attr]
            else:
                emit(event.output)  # type: ignore[union-attr]
            return
        if kind is not s.Accepted and kind is not s.Item:  # a final event
            self._ended = True
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def first_answer(self) -> s.Event:
        """Wait for the worker's first word on this call; cancelling cancels it.

        An ``Accepted`` is taken; any other (final) answer stays queued, so
        reading the call reports it.
        """
        events = self._events
        while not events:
            await self._arrival()
        event = events[0]
        if event.__class__ is s.Accepted:
            events.popleft()
        return event

    async def _arrival(self) -> None:
        """Wait for the next event; cancelling cancels the call."""
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        except asyncio.CancelledError:
            self.cancel()
            raise
        finally:
            self._waiter = None

    async def _next(self) -> s.Event:
        while not self._events:
            await self._arrival()
        return self._events.popleft()

    def cancel(self) -> None:
        """Give up on the call: the worker cancels it; nothing more will come."""
        if not self._ended:
            self._ended = True
            self._link.cancel(self.id)

    def discard(self) -> None:
        """End a coroutine call at once: ``aclose()`` without awaiting (it never waits for one)."""
        if self._generator:
            raise TypeError("discard() is for coroutine calls; a stream's aclose() must be awaited")
        if self._ended or self.closed_by is not None:
            self._events.clear()
        else:
            self.cancel()

    async def receive(self) -> Any:
        """Read the next outcome: a value, StopAsyncIteration at the end, or the error.

        For a coroutine call this is ``__anext__`` without its two extra frames.
        """
        if self._ended and not self._events:
            raise StopAsyncIteration
        while True:
            outcome = self.take()
            if outcome is not NOT_YET:
                return outcome
            await self._arrival()

    def take(self) -> Any:
        """The next outcome if it has arrived, else ``NOT_YET``: ``receive()`` without waiting.

        A call answered by now (the usual case once ``first_answer`` has
        returned its result) is read without making a coroutine.
        """
        events = self._events
        while True:
            if not events:
                return NOT_YET
            event = events.popleft()
            if event.__class__ is not s.Accepted:
                break
        if event.__class__ is s.Result or event.__class__ is s.Item:
            self.context = event.context
            return loads(event.payload, what="a value sent by the worker")
        if isinstance(event, s.Done):
            self.context = event.context
            raise StopAsyncIteration
        if isinstance(event, s.Failed):
            self.context = event.context
            raise decode_exception(event.payload, origin=self._link.target)
        if isinstance(event, s.Lost):
            raise self._lost_error()
        raise RpcError(StatusCode.INTERNAL, f"unexpected {event!r}", self._link.target)

    def _lost_error(self) -> RpcError:
        if self.closed_by is not None:
            return RpcError(StatusCode.CANCELLED, self.closed_by, self._link.target)
        ended = self._link.error
        if ended is not None and ended.code is StatusCode.CANCELLED:  # closed on this side
            return RpcError(
                StatusCode.CANCELLED,
                "this caller closed the connection (its pool or proxy stopped) while the call ran",
                self._link.target,
            )
        return WorkerLostError(
            StatusCode.UNAVAILABLE,
            "the connection was lost while the call ran; it may have run (it is not retried)",
            self._link.target,
        )

    def __aiter__(self) -> RemoteCall:
        return self

    async def __anext__(self) -> Any:
        return await self.asend(None)

    async def asend(self, value: Any) -> Any:
        """Send ``value`` into the remote generator; return what it yields next."""
        if not self._generator:
            return await self.receive()
        if self.closed_by is not None:
            raise self._lost_error()
        if self._ended and not self._events:
            raise StopAsyncIteration
        if self._window:
            if value is not None:
                raise TypeError(self._pull_only("asend() with a value"))
            return await self._pull()
        if value is None:
            self._link.step(self.id, StepKind.STEP_NEXT)
        else:
            self._link.step(self.id, StepKind.STEP_SEND, bytes(dumps(value, what="the value sent")))
        return await self.receive()

    async def _pull(self) -> Any:
        """Take the next read-ahead item; grant credit back in batches."""
        self._consumed += 1
        if self._consumed * 2 >= self._window:
            self._link.step(self.id, StepKind.STEP_CREDIT, credit=self._consumed)
            self._consumed = 0
        return await self.receive()

    def _pull_only(self, what: str) -> str:
        return (
            f"{what} is not supported on this stream: its routine reads ahead "
            f"(window={self._window}), so it only supports iteration and aclose(); "
            "drop window= from @routine to drive it step by step"
        )

    async def athrow(self, error: BaseException) -> Any:
        """Throw ``error`` into the remote generator; return its next yield."""
        if (self._ended and not self._events) or self.closed_by is not None:
            raise error  # like a finished local generator
        if self._window:
            raise TypeError(self._pull_only("athrow()"))
        self._link.step(self.id, StepKind.STEP_THROW, encode_exception(error))
        return await self.receive()

    async def aclose(self) -> None:
        """Close the call: a generator runs its ``finally``; a coroutine is cancelled.

        Quiet and idempotent once the call has ended, whatever ended it.
        """
        if self._ended or self.closed_by is not None:
            self._events.clear()
            return
        if not self._generator:
            self.cancel()
            return
        self._link.step(self.id, StepKind.STEP_CLOSE)
        while True:
            event = await self._next()
            if isinstance(event, s.Failed):
                raise decode_exception(event.payload, origin=self._link.target)
            if isinstance(event, s.FINAL):  # done, or lost: nothing left to close
                return

    def close_suspended(self, reason: str) -> bool:
        """Close a stream nobody is reading (its pool is going); True if it did."""
        if self._ended or not self._generator or not self.idle:
            return False
        self.closed_by = reason
        self._link.step(self.id, StepKind.STEP_CLOSE)
        return True

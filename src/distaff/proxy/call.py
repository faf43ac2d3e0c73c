"""RemoteCall: the caller's end of one call multiplexed on a session."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from .._exceptions import RpcError
from ..serialization.exceptions import decode_exception, encode_exception
from ..serialization.tasks import dumps, loads
from ..serialization.wire import Frame, StepKind

if TYPE_CHECKING:
    from .connection import _Session


class RemoteCall:
    """The caller's end of one call: an async iterator of its results.

    For a coroutine routine it yields the return value once. For an async
    generator routine it also supports ``asend``, ``athrow`` and ``aclose``,
    each one step of the remote generator.
    """

    __slots__ = (
        "_consumed",
        "_error",
        "_finished",
        "_frames",
        "_generator",
        "_id",
        "_session",
        "_waiter",
        "_window",
    )

    def __init__(self, session: _Session, call_id: int, generator: bool, window: int) -> None:
        self._session = session
        self._id = call_id
        self._generator = generator
        self._window = window
        self._consumed = 0
        self._frames: collections.deque[Frame] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._finished = False

    def _feed(self, frame: Frame) -> None:
        self._frames.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _next_frame(self) -> Frame:
        while not self._frames:
            if self._error is not None:
                self._finish(failed=True)
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self._cancel_remote()
                raise
            finally:
                self._waiter = None
        return self._frames.popleft()

    def _finish(self, *, failed: bool) -> None:
        if not self._finished:
            self._finished = True
            self._session.release(self._id, failed=failed)

    def _cancel_remote(self) -> None:
        if not self._finished:
            frame = self._session.outbox.add()
            frame.call = self._id
            frame.cancel.SetInParent()
            self._finish(failed=True)

    async def _receive(self) -> Any:
        """Read the next outcome frame: a value, the end, or an error."""
        if self._finished:
            raise StopAsyncIteration
        frame = await self._next_frame()
        kind = frame.WhichOneof("kind")
        if kind == "value":
            return loads(frame.value.payload, what="a value sent by the worker")
        if kind == "done":
            self._finish(failed=False)
            raise StopAsyncIteration
        if kind == "error":
            self._finish(failed=True)
            raise decode_exception(frame.error.payload, origin=self._session.target)
        self._finish(failed=True)
        raise RpcError("INTERNAL", f"unexpected {kind!r} frame", self._session.target)

    def _step(self, kind: int, payload: bytes = b"") -> None:
        frame = self._session.outbox.add()
        frame.call = self._id
        frame.step.kind = kind  # type: ignore[assignment]
        if payload:
            frame.step.payload = payload

    def __aiter__(self) -> RemoteCall:
        return self

    async def __anext__(self) -> Any:
        return await self.asend(None)

    async def asend(self, value: Any) -> Any:
        """Send ``value`` into the remote generator; return what it yields next."""
        if not self._generator:
            value = await self._receive()
            self._finish(failed=False)
            return value
        if self._finished:
            raise StopAsyncIteration
        if self._window:
            if value is not None:
                raise TypeError(self._pull_only("asend(value)"))
            return await self._pull()
        if value is None:
            self._step(StepKind.STEP_NEXT)
        else:
            self._step(StepKind.STEP_SEND, dumps(value, what="the value sent"))
        return await self._receive()

    async def _pull(self) -> Any:
        """Take the next read-ahead item; grant credit back in batches."""
        self._consumed += 1
        if self._consumed * 2 >= self._window:
            frame = self._session.outbox.add()
            frame.call = self._id
            frame.step.kind = StepKind.STEP_CREDIT
            frame.step.credit = self._consumed
            self._consumed = 0
        return await self._receive()

    def _pull_only(self, what: str) -> str:
        return (
            f"this stream reads ahead (window={self._window}) and only supports "
            f"iteration; {what} needs a routine without a window"
        )

    async def athrow(self, error: BaseException) -> Any:
        """Throw ``error`` into the remote generator; return its next yield."""
        if self._finished:
            raise error
        if self._window:
            raise TypeError(self._pull_only("athrow()"))
        self._step(StepKind.STEP_THROW, encode_exception(error))
        return await self._receive()

    async def aclose(self) -> None:
        """Close the call: a generator runs its ``finally``; a coroutine is cancelled."""
        if self._finished:
            return
        if not self._generator:
            self._cancel_remote()
            return
        if self._session.broken:  # nothing left to close remotely
            self._finish(failed=True)
            return
        self._step(StepKind.STEP_CLOSE)
        try:
            frame = await self._next_frame()
            while frame.WhichOneof("kind") == "value":  # read-ahead items nobody wants
                frame = await self._next_frame()
        finally:
            self._finish(failed=False)
        if frame.WhichOneof("kind") == "error":
            raise decode_exception(frame.error.payload, origin=self._session.target)

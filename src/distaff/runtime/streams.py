"""RemoteGenerator: what calling an async generator routine returns.

It behaves like the local async generator would: nothing runs until the
first step; ``asend``, ``athrow`` and ``aclose`` each drive one remote step;
once the body returns or raises, the generator is finished. Unlike a native
generator wrapper, a misuse (``asend(value)`` on a read-ahead stream) raises
without ending the stream, and a stream its pool closed says so.
"""

from __future__ import annotations

import collections.abc
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from ..serialization.task import Task
from ..serialization.tracebacks import trim_traceback
from . import contextvar

Y = TypeVar("Y")
S = TypeVar("S")


class RemoteGenerator(collections.abc.AsyncGenerator[Y, S], Generic[Y, S]):
    """An async generator whose body runs on a pool worker.

    Args:
        new_task: builds the task at the first step (so the ambient pool and
            deadlines are those in force when iteration starts, as for a local
            generator's body).
        first_step: sends the task and takes its first item: ``(stream, item)``.
        bound: makes a deadline context for one step.
    """

    __slots__ = (
        "_bound",
        "_deadline",
        "_finished",
        "_first_step",
        "_new_task",
        "_running",
        "_stream",
        "_window",
    )

    def __init__(
        self,
        new_task: Callable[[], Task],
        first_step: Callable[[Task], Awaitable[tuple[Any, Any]]],
        bound: Callable[[float | None], contextlib.AbstractAsyncContextManager[Any]],
    ) -> None:
        self._new_task = new_task
        self._first_step = first_step
        self._bound = bound
        self._stream: Any = None
        self._deadline: float | None = None
        self._finished = False
        self._running = False
        self._window = 0

    async def _start(self) -> Y:
        task = self._new_task()
        self._window = task.window
        if task.timeout is not None:
            self._deadline = time.monotonic() + task.timeout
        self._stream, value = await self._first_step(task)
        result: Y = value
        return result

    async def _drive(self, step: Callable[[Any], Any]) -> Y:
        if self._running:
            raise RuntimeError("anext(): asynchronous generator is already running")
        self._running = True
        try:
            if self._stream is None:
                value = await self._start()
            else:
                async with self._bound(self._deadline):
                    value = await step(self._stream)
            self._take_context()
            result: Y = value
            return result
        except BaseException as error:
            self._take_context()
            await self._finish()
            trim_traceback(error)
            raise
        finally:
            self._running = False

    def _take_context(self) -> None:
        """Set, here, the ContextVar values the body changed in its last step."""
        stream = self._stream
        blob = getattr(stream, "context", b"")
        if blob:
            contextvar.apply(blob)
            stream.context = b""

    async def _finish(self) -> None:
        self._finished = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def asend(self, value: S) -> Y:
        """Send ``value`` into the body; return what it yields next."""
        if self._finished:
            raise StopAsyncIteration
        if self._stream is None and value is not None:
            raise TypeError("can't send non-None value to a just-started async generator")
        if self._window and value is not None:
            raise self._misuse("asend() with a value")
        return await self._drive(lambda stream: stream.asend(value))

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> Y:
        """Throw an exception into the body at its current ``yield``."""
        error = typ if isinstance(typ, BaseException) else (typ() if val is None else val)
        if self._finished:
            return None  # type: ignore[return-value]  # as a finished local generator does
        if self._stream is None:  # not started: it raises at once, and is finished
            self._finished = True
            raise error
        if self._window:
            raise self._misuse("athrow()")
        return await self._drive(lambda stream: stream.athrow(error))

    async def aclose(self) -> None:
        """Close the body (its ``finally`` runs remotely); idempotent and quiet."""
        if self._finished:
            return
        if self._running:
            raise RuntimeError("aclose(): asynchronous generator is already running")
        await self._finish()

    def _misuse(self, what: str) -> TypeError:
        # the stream stays open: the caller may go on iterating
        return TypeError(
            f"{what} is not supported on this stream: its routine reads ahead "
            f"(window={self._window}), so it only supports iteration and aclose(); "
            "drop window= from @routine to drive it step by step"
        )

    def __del__(self) -> None:
        stream = self._stream
        if stream is not None and not self._finished:
            with contextlib.suppress(Exception):  # no loop left, or already gone
                stream.cancel()

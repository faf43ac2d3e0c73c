"""``distaff.map`` and ``distaff.as_completed``: many calls, bounded, with progress.

The calls of a fan-out are tasks owned by the iterator that started them:
whichever way iteration ends (exhausted, an error, ``aclose``, the consumer
cancelled), the ones still running are cancelled and awaited before it
returns. No ``TaskGroup`` is held across a ``yield``: a failing child would
cancel the consumer's task wherever it happens to be.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from ..serialization.task import routine_blob
from ..serialization.tracebacks import trim_traceback
from .chunks import run_chunk
from .context import current_proxy
from .progress import Progress, ProgressSpec, open_progress
from .routine import _new_task, _Options, routine_info, run_with_policy
from .sizing import BIG_CALL, ChunkSizer

T = TypeVar("T")

# calls in flight per worker when ``concurrency`` is not given
CALLS_PER_WORKER = 16


class Results(Generic[T]):
    """An async iterator of a fan-out's results; also an async context manager.

    Leaving ``async with`` or calling ``aclose()`` cancels the calls still
    in flight. A loop left early without either closes when collected.
    """

    def __init__(self, source: AsyncGenerator[list[T], None]) -> None:
        self._source = source  # yields the results of one call at a time
        self._items = _each(source)  # no reference back: dropped, both close

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items

    def __anext__(self) -> Awaitable[T]:
        return self._items.__anext__()

    async def aclose(self) -> None:
        """Cancel what is in flight and wait for it; idempotent."""
        await self._source.aclose()

    async def __aenter__(self) -> Results[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _each(source: AsyncGenerator[list[T], None]) -> AsyncGenerator[T, None]:
    """The results one by one, from the source's lists of them.

    Resuming a generator per item costs less than a coroutine per
    ``__anext__``, and a list's items need no queue.
    """
    while True:
        try:
            results = await anext(source)
        except StopAsyncIteration:
            return
        except BaseException as error:
            trim_traceback(error)
            raise
        for result in results:
            yield result


class _Owned:
    """Tasks started by one fan-out, each with a tag; ``close`` cancels and awaits the rest."""

    def __init__(self) -> None:
        self.tasks: dict[asyncio.Task[Any], Any] = {}
        self._finished: asyncio.Queue[asyncio.Task[Any]] = asyncio.Queue()

    def start(self, awaitable: Awaitable[Any], tag: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self.tasks[task] = tag
        task.add_done_callback(self._finished.put_nowait)

    async def next_finished(self) -> tuple[asyncio.Task[Any], Any]:
        """The next task to finish, and its tag; it leaves the owned set."""
        while True:
            task = await self._finished.get()
            if task in self.tasks:  # not one that close() already let go
                return task, self.tasks.pop(task)

    async def close(self) -> None:
        running = [t for t in self.tasks if not t.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        for task in self.tasks:  # mark their exceptions retrieved
            if not task.cancelled():
                task.exception()
        self.tasks.clear()


def map(
    fn: Callable[..., Awaitable[T]],
    *iterables: Iterable[Any],
    concurrency: int | None = None,
    ordered: bool = True,
    chunksize: int | None = None,
    progress: ProgressSpec = False,
) -> Results[T]:
    """Call ``fn(*args)`` for each ``args`` of ``zip(*iterables)``; iterate the results.

    Reads its input lazily and keeps at most ``concurrency`` calls in flight
    (default: 16 per worker of the current pool), so memory stays bounded
    for inputs of any length. ``ordered=True`` yields results in input
    order (holding at most ``concurrency`` finished calls back);
    ``ordered=False`` as they complete.

    With a routine, ``chunksize=N`` sends N items per call, run one after
    another on the worker; ``chunksize=None`` sizes calls from the worker's
    measured time per item (see ``ChunkSizer``); ``chunksize=1`` makes one
    plain call per item. The first exception stops the map: the calls in
    flight are cancelled, and it is raised with its remote traceback.

    ``progress`` is False, True (tqdm, else rich, else a line on stderr
    every second) or a callable receiving ``(done, total)``.

    Raises:
        TypeError: ``fn`` is an async generator routine (whose items stream,
            so there is no one result to collect) or not callable, or
            chunking was asked of a callable that is not a routine.
        ValueError: ``concurrency`` or ``chunksize`` below 1.
    """
    name = getattr(fn, "__qualname__", repr(fn))
    info = routine_info(fn)
    if (info is not None and info.generator) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"distaff.map collects one result per call, but {name!r} is an async generator "
            "routine whose items stream: iterate each call yourself, or return a list"
        )
    if not callable(fn):
        raise TypeError(f"distaff.map needs a routine or an async function, not {fn!r}")
    if not iterables:
        raise TypeError("distaff.map needs at least one iterable of arguments")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency}")
    if chunksize is not None and chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, not {chunksize}")
    if info is None and chunksize not in (None, 1):
        raise TypeError(f"chunksize needs a @distaff.routine; {name!r} is not one")
    total = _length(iterables)
    run = _chunked if info is not None and chunksize != 1 else _one_by_one
    source = _fan_out(fn, iterables, run, total, concurrency, ordered, chunksize, progress)
    return Results(source)


def _length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


def _batches(iterables: tuple[Iterable[Any], ...], sizer: ChunkSizer | None) -> Iterator[list[Any]]:
    """Lists of argument tuples; of bare arguments when there is one iterable."""
    items = iter(iterables[0]) if len(iterables) == 1 else zip(*iterables, strict=False)
    while True:
        batch = list(itertools.islice(items, sizer.next_size() if sizer else 1))
        if not batch:
            return
        yield batch


async def _one_by_one(
    fn: Callable[..., Awaitable[Any]], batch: list[Any], single: bool, sizer: ChunkSizer | None
) -> list[Any]:
    return [await (fn(batch[0]) if single else fn(*batch[0]))]


async def _chunked(
    fn: Callable[..., Awaitable[Any]], batch: list[Any], single: bool, sizer: ChunkSizer | None
) -> list[Any]:
    info = routine_info(fn)
    chunk = routine_info(run_chunk)
    assert info is not None and chunk is not None and sizer is not None  # noqa: PT018
    owner = getattr(fn, "__self__", None)
    if owner is not None:  # a bound method: the instance (or class) comes first
        batch = [(owner, x) for x in batch] if single else [(owner, *args) for args in batch]
        single = False
    options = info.options
    timeout = None if options.timeout is None else options.timeout * len(batch)
    task = _new_task(
        chunk.body,
        (routine_blob(info.body), batch, not single, sizer.quick and len(batch) >= BIG_CALL),
        {},
        False,
        _Options(timeout, options.dispatch_timeout, 0, options.retry),
    )
    results, seconds = await run_with_policy(task, options)
    sizer.observe(len(batch), seconds, len(task.encode()[1]))
    results_list: list[Any] = results
    return results_list


async def _send_now() -> None:
    """Let calls just started reach the wire before the consumer takes the next results.

    A consumer working through a chunk's results never suspends, so without
    this the new calls would wait for it to finish them all: their first
    step (encode and queue the call) and then the connection's writer each
    need a turn of the loop.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def _fan_out(
    fn: Callable[..., Awaitable[Any]],
    iterables: tuple[Iterable[Any], ...],
    run: Callable[..., Awaitable[list[Any]]],
    total: int | None,
    concurrency: int | None,
    ordered: bool,
    chunksize: int | None,
    progress: ProgressSpec,
) -> AsyncGenerator[list[Any], None]:
    workers = max(1, len(current_proxy().workers))
    limit = concurrency or CALLS_PER_WORKER * workers
    sizer = ChunkSizer(chunksize, workers, total) if run is _chunked else None
    single = len(iterables) == 1
    batches = _batches(iterables, sizer)
    display = open_progress(progress, total, getattr(fn, "__qualname__", "distaff.map"))
    owned = _Owned()
    ready: dict[int, list[Any]] = {}  # ordered: finished calls waiting for their turn
    started = emitted = 0
    exhausted = False
    try:
        while True:
            flying = limit if sizer is None else sizer.in_flight(limit)
            launched = started
            while not exhausted and len(owned.tasks) + len(ready) < flying:
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                else:
                    owned.start(run(fn, batch, single, sizer), started)
                    started += 1
                    if sizer is not None:
                        flying = sizer.in_flight(limit)
            if sizer is not None and started > launched:
                await _send_now()
            if emitted in ready:
                yield ready.pop(emitted)
                emitted += 1
                continue
            if not owned.tasks:
                return
            task, index = await owned.next_finished()
            results = task.result()  # the first failure ends the map
            if display is not None:
                display.update(len(results))
            if ordered:
                ready[index] = results
            else:
                yield results
    finally:
        await owned.close()
        if display is not None:
            display.close()


class AsCompleted(Generic[T]):
    """Awaitables in the order they complete; see ``as_completed``."""

    def __init__(self, awaitables: Iterable[Awaitable[T]], progress: ProgressSpec) -> None:
        self._awaitables = list(awaitables)
        self._count = len(self._awaitables)
        self._progress = progress
        self._owned = _Owned()
        self._started = False
        self._display: Progress | None = None

    def __len__(self) -> int:
        return self._count

    def _start(self) -> None:
        if self._started:
            raise RuntimeError("an as_completed iterator can be iterated only once")
        self._started = True
        self._display = open_progress(self._progress, len(self), "distaff.as_completed")
        for index, awaitable in enumerate(self._awaitables):
            self._owned.start(awaitable, index)
        self._awaitables = []  # the tasks hold them now

    async def _next(self) -> T:
        task, _ = await self._owned.next_finished()
        if self._display is not None:
            self._display.update(1)
            if not self._owned.tasks:
                display, self._display = self._display, None
                display.close()
        result: T = task.result()
        return result

    def __iter__(self) -> Iterator[Awaitable[T]]:
        """Yield one awaitable per input; each returns the next result to complete."""
        self._start()
        for _ in range(len(self)):
            yield self._next()

    def __aiter__(self) -> Results[T]:
        """Iterate the results themselves, in completion order."""
        return Results(self._results())

    async def _results(self) -> AsyncGenerator[list[T], None]:
        self._start()
        try:
            for _ in range(len(self)):
                yield [await self._next()]
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Cancel the awaitables still running and wait for them; idempotent."""
        if not self._started:  # never started: close the coroutines unawaited
            for awaitable in self._awaitables:
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
            self._awaitables = []
        await self._owned.close()
        if self._display is not None:
            display, self._display = self._display, None
            display.close()

    async def __aenter__(self) -> AsCompleted[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def as_completed(
    awaitables: Iterable[Awaitable[T]], *, progress: ProgressSpec = False
) -> AsCompleted[T]:
    """Results of ``awaitables`` in the order they complete.

    ``async for result in as_completed(calls)`` yields results (the first
    failure is raised there; the rest are cancelled when the loop ends);
    ``for next_done in as_completed(calls): await next_done`` works like
    ``asyncio.as_completed``. ``len()`` is the number of awaitables, so
    ``tqdm`` can wrap it. The awaitables start on first iteration and
    belong to the iterator: ``aclose()`` or leaving ``async with`` cancels
    any still running. ``progress`` is as for ``distaff.map``.
    """
    return AsCompleted(awaitables, progress)

"""Routines the integration tests run on real workers (importable by them)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import pathlib
import sys
import threading
import warnings
from collections.abc import AsyncGenerator
from typing import Any

import distaff


@distaff.routine
async def echo(value: Any) -> Any:
    """Return ``value`` unchanged."""
    return value


@distaff.routine
async def pid() -> int:
    """Return the serving process's PID."""
    return os.getpid()


@distaff.routine
async def task_info() -> tuple[str, str | None, int]:
    """Return this task's id, its caller's id, and the PID."""
    task = distaff.current_task()
    assert task is not None
    return task.id, task.caller, os.getpid()


@distaff.routine
async def nested_info() -> tuple[str, tuple[str, str | None, int], int]:
    """Call ``task_info`` from a worker: a nested dispatch."""
    task = distaff.current_task()
    assert task is not None
    return task.id, await task_info(), os.getpid()


@distaff.routine
async def warn_from_a_thread(message: str) -> None:
    """From a thread of the worker's own (outside any call): log, warn and print."""

    def speak() -> None:
        logging.getLogger("thirdparty").warning("%s", message)
        warnings.warn(message, RuntimeWarning, stacklevel=1)
        print(message, file=sys.stderr)

    thread = threading.Thread(target=speak)
    thread.start()
    await asyncio.to_thread(thread.join)


@distaff.routine
async def fib(n: int) -> int:
    """Naive parallel Fibonacci: a tree of nested calls."""
    if n < 2:
        return n
    a, b = await asyncio.gather(fib(n - 1), fib(n - 2))
    return a + b


async def _accumulate(start: int) -> AsyncGenerator[Any, Any]:
    """A generator exercising asend/athrow/aclose; also run locally for parity."""
    total = start
    try:
        while True:
            try:
                sent = yield total
            except ValueError as exc:
                total = -1
                yield f"recovered from {exc}"
                continue
            if sent == "stop":
                return
            total += sent if isinstance(sent, int) else 1
    finally:
        pass


accumulate = distaff.routine(_accumulate)


@distaff.routine
async def countdown(n: int) -> AsyncGenerator[int, None]:
    """Yield n, n-1, ..., 1."""
    while n > 0:
        yield n
        n -= 1


class StockError(Exception):
    """A custom error with attributes whose __init__ does not take its args."""

    def __init__(self, item: str, missing: int) -> None:
        super().__init__(f"{missing} x {item} missing")
        self.item = item
        self.missing = missing


async def _fail(item: str) -> None:
    try:
        {}[item]
    except KeyError as exc:
        error = StockError(item, 3)
        error.add_note("checked the stock table")
        raise error from exc


fail = distaff.routine(_fail)


@distaff.routine
async def sleep_then_mark(marker: str, seconds: float) -> str:
    """Sleep; write ``marker`` from the ``finally`` block (also when cancelled)."""
    try:
        pathlib.Path(marker + ".started").touch()
        await asyncio.sleep(seconds)
        return "finished"
    finally:
        pathlib.Path(marker).write_text(str(os.getpid()))


@distaff.routine
async def stream_then_mark(marker: str) -> AsyncGenerator[int, None]:
    """Yield forever; write ``marker`` from ``finally`` when closed or cancelled."""
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        pathlib.Path(marker).write_text(str(os.getpid()))


class Counter:
    """Routines as methods: instance, class and static."""

    def __init__(self, start: int) -> None:
        self.start = start

    @distaff.routine
    async def add(self, n: int) -> tuple[int, int]:
        return self.start + n, os.getpid()

    @distaff.routine
    async def increment(self) -> int:
        """Mutates ``self``: on the worker's copy, which is dropped after the call."""
        self.start += 1
        return self.start

    @classmethod
    @distaff.routine
    async def make(cls, start: int) -> tuple[str, int]:
        return cls.__name__, start

    @staticmethod
    @distaff.routine
    async def double(n: int) -> int:
        return 2 * n

    @distaff.routine
    async def upto(self, n: int) -> AsyncGenerator[int, None]:
        for i in range(self.start, n):
            yield i


@distaff.routine(window=64)
async def numbers(n: int, marker: str | None = None) -> AsyncGenerator[int, None]:
    """Stream 0..n-1 with read-ahead; write ``marker`` from ``finally``."""
    try:
        for i in range(n):
            yield i
    finally:
        if marker:
            pathlib.Path(marker).write_text(str(os.getpid()))


@distaff.routine
async def proxy_started() -> bool:
    """Whether this worker's copy of the pool's proxy is running (dispatches nothing)."""
    task = distaff.current_task()
    assert task is not None
    assert task.proxy is not None
    return task.proxy.started


@distaff.routine
async def nested_transports(calls: int) -> tuple[str, list[bool]]:
    """Make ``calls`` nested calls; this worker's loop, and which connections went over ipc."""
    pids = await asyncio.gather(*(pid() for _ in range(calls)))
    task = distaff.current_task()
    assert task is not None
    assert task.proxy is not None
    membership = task.proxy._membership
    assert membership is not None
    used = [c for c in membership.context.workers.values() if c.statistics().completed]
    assert len(pids) == calls
    return type(asyncio.get_running_loop()).__module__, [c.via_ipc for c in used]


@distaff.routine
async def gc_threshold() -> tuple[int, ...]:
    """The serving process's collector thresholds."""
    return gc.get_threshold()


@distaff.routine
async def nap(seconds: float) -> int:
    """Sleep ``seconds``; return the serving process's PID."""
    await asyncio.sleep(seconds)
    return os.getpid()


@distaff.routine
async def nap_marking_pid(marker: str, seconds: float) -> int:
    """Write this worker's PID to ``marker``, then sleep ``seconds``; return the PID."""
    pathlib.Path(marker).write_text(str(os.getpid()))
    await asyncio.sleep(seconds)
    return os.getpid()


@distaff.routine
async def nap_then_bulk(seconds: float, size: int) -> tuple[int, bytes]:
    """Sleep ``seconds``; return the serving process's PID and ``size`` bytes."""
    await asyncio.sleep(seconds)
    return os.getpid(), os.urandom(size)


@distaff.routine
async def naps_elsewhere(
    marker: str, count: int, seconds: float, size: int
) -> tuple[int, list[int], int]:
    """Nap ``count`` times in nested calls; ``marker``.started once they run.

    Each nap answers with ``size`` bytes. Returns this worker's PID, those of
    the workers that napped, and the bytes that came back.
    """
    naps = [asyncio.ensure_future(nap_then_bulk(seconds, size)) for _ in range(count)]
    await asyncio.sleep(min(0.3, seconds / 3))  # dispatched, and running
    pathlib.Path(marker + ".started").touch()
    answers = await asyncio.gather(*naps)
    return os.getpid(), [pid for pid, _ in answers], sum(len(data) for _, data in answers)


@distaff.routine
async def read_rest(f: Any) -> tuple[str, str]:
    """What a file argument is on the worker, and what is left to read in it."""
    return type(f).__name__, f.read()


@distaff.routine(window=4)
async def blocks(n: int, size: int) -> AsyncGenerator[bytes, None]:
    """Stream ``n`` blocks of ``size`` bytes, block i filled with i."""
    for i in range(n):
        yield bytes([i % 256]) * size


@distaff.routine
async def echo_sent() -> AsyncGenerator[Any, Any]:
    """Yield back each value sent in, from ``None`` on."""
    sent = None
    while True:
        sent = yield sent


@distaff.routine
async def loop_module() -> str:
    """The top-level module of the class of the event loop this call runs on."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


_first_step_var: contextvars.ContextVar[str] = contextvars.ContextVar("first_step", default="unset")


@distaff.routine
async def own_task(tag: str, pause: float) -> tuple[str, str, str, str]:
    """What a call sees of its task in its first step, and after ``pause`` s.

    Returns the task's coroutine name, the task's name (``Task-N``: unique
    in the worker, unlike an ``id``, which a finished task may hand on), the
    context variable as the call found it (before setting it to ``tag``),
    and that variable after the pause (still ``tag``: the task kept its own
    context).
    """
    task = asyncio.current_task()
    assert task is not None
    found = _first_step_var.get()
    _first_step_var.set(tag)
    if pause:
        await asyncio.sleep(pause)
    assert asyncio.current_task() is task
    return task.get_coro().__qualname__, task.get_name(), found, _first_step_var.get()


@distaff.routine
async def times_out_in_first_step(limit: float) -> str:
    """Hit an ``asyncio.timeout`` set in the call's first step (it needs its own task)."""
    try:
        async with asyncio.timeout(limit):
            await asyncio.sleep(30)
    except TimeoutError:
        return "timed out"
    return "slept"

"""Routines for the fan-out, plain-function and retry tests (imported by workers)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import threading
import time
from collections.abc import AsyncGenerator

import distaff


@distaff.routine
async def square(x: int) -> int:
    """x squared."""
    return x * x


@distaff.routine
def square_plain(x: int) -> tuple[int, str]:
    """x squared, from a plain def, with the name of the thread that ran it."""
    return x * x, threading.current_thread().name


@distaff.routine
async def add(x: int, y: int) -> int:
    """x + y."""
    return x + y


@distaff.routine
async def slow_square(x: int, seconds: float) -> int:
    """x squared after ``seconds``."""
    await asyncio.sleep(seconds)
    return x * x


@distaff.routine
async def numbers(n: int) -> AsyncGenerator[int, None]:
    """Yield 0..n-1."""
    for i in range(n):
        yield i


@distaff.routine
async def fail_or_hang(x: int, bad: int, marks: str, hangers: int) -> int:
    """``bad`` raises once ``hangers`` others run; the others hang, marking their ``finally``."""
    folder = pathlib.Path(marks)
    if x == bad:
        while len(list(folder.glob("*.started"))) < hangers:
            await asyncio.sleep(0.01)
        raise ValueError(f"item {x} is bad")
    (folder / f"{x}.started").touch()
    try:
        await asyncio.sleep(3600)
    finally:
        (folder / f"{x}.finished").touch()
    return x


@distaff.routine
def nap(seconds: float) -> int:
    """Block the thread for ``seconds`` (a plain def: off the event loop)."""
    time.sleep(seconds)
    return os.getpid()


@distaff.routine
async def hog(seconds: float) -> int:
    """Block the worker's event loop for ``seconds`` (the mistake the monitor reports)."""
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose)
    return os.getpid()


@distaff.routine
def plain_task_info() -> tuple[str, int]:
    """The current task's id and attempt, read inside a plain def's thread."""
    task = distaff.current_task()
    assert task is not None
    return task.id, task.attempt


class Scaler:
    """Plain-def and async methods as routines."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @distaff.routine
    def scale(self, x: int) -> int:
        return self.factor * x

    @distaff.routine
    async def scale_async(self, x: int) -> int:
        return self.factor * x


@distaff.routine(retries=3, retry_on=(ConnectionError,), backoff=0.01)
async def flaky(failures: int) -> int:
    """Raise ConnectionError on the first ``failures`` attempts; return the attempt."""
    task = distaff.current_task()
    assert task is not None
    if task.attempt < failures:
        raise ConnectionError(f"attempt {task.attempt} failed")
    return task.attempt


@distaff.routine(retries=5, retry_on=(ConnectionError,), backoff=0.05, timeout=1.0)
async def always_flaky() -> None:
    """Always fail after a pause: only the deadline stops the retries."""
    await asyncio.sleep(0.2)
    raise ConnectionError("still failing")


@distaff.routine(retries=2, backoff=0.01)
async def die_on_first_attempt(log: str) -> tuple[int, int]:
    """Attempt 0 logs and SIGKILLs its worker; later attempts return (attempt, pid)."""
    task = distaff.current_task()
    assert task is not None
    (pathlib.Path(log) / f"{task.attempt}-{os.getpid()}").touch()
    if task.attempt == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return task.attempt, os.getpid()


@distaff.routine(retries=2, backoff=0.01)
async def stream_dying_first(log: str) -> AsyncGenerator[tuple[int, int], None]:
    """Like ``die_on_first_attempt``, as a generator: dies before its first item."""
    task = distaff.current_task()
    assert task is not None
    (pathlib.Path(log) / f"{task.attempt}-{os.getpid()}").touch()
    if task.attempt == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    yield task.attempt, os.getpid()
    yield task.attempt, os.getpid()


@distaff.routine(retries=2, backoff=0.01)
async def stream_dying_after_first(log: str) -> AsyncGenerator[int, None]:
    """Yield one item, then SIGKILL the worker: not retried (the item was seen)."""
    yield 1
    (pathlib.Path(log) / str(os.getpid())).touch()
    os.kill(os.getpid(), signal.SIGKILL)
    yield 2


@distaff.routine
async def hog_again(seconds: float) -> int:
    """Another routine that blocks the loop (a second name for the monitor)."""
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose)
    return os.getpid()


# Each routine below is called by one test only: a caller warns once per
# routine per process, and the tests share one process.


@distaff.routine
async def block_until_return(seconds: float) -> int:
    """Block the loop until it returns (reported as the call ends)."""
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose)
    return os.getpid()


@distaff.routine
async def block_then_await(seconds: float) -> int:
    """Block the loop, then await for a while (reported while the call still runs)."""
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose)
    await asyncio.sleep(0.3)
    return os.getpid()


@distaff.routine
async def block_nested(seconds: float) -> int:
    """Block the loop of the worker a nested call reached."""
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose)
    return os.getpid()


@distaff.routine
async def call_block_nested(seconds: float) -> int:
    """Call ``block_nested`` from a worker: its report must reach the first caller."""
    return await block_nested(seconds)


@distaff.routine
def sleep_plain(seconds: float) -> int:
    """Sleep in a plain def: a worker thread, never the loop (no report)."""
    time.sleep(seconds)
    return os.getpid()

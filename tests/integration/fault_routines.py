"""Routines (and small helpers) for the reliability and security tests.

Workers import this module by reference, so it stays free of pytest and of
anything heavy at import time.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import threading
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any

import distaff
from distaff.runtime.context import remaining

from .routines import echo as echo
from .routines import pid as pid
from .routines import stream_then_mark

# how many times ``token``/``slow_token`` ran in this process (read by ``executed``)
_executions = 0


@distaff.routine
async def token(i: int) -> tuple[int, str, int]:
    """Return ``i`` with a token unique to this execution, and the PID."""
    global _executions
    _executions += 1
    return i, uuid.uuid4().hex, os.getpid()


@distaff.routine
async def slow_token(i: int, seconds: float) -> tuple[int, str, int]:
    """Sleep, then behave like ``token``: calls stay in flight a while."""
    global _executions
    _executions += 1
    await asyncio.sleep(seconds)
    return i, uuid.uuid4().hex, os.getpid()


@distaff.routine
async def logged_token(i: int, log: str, seconds: float) -> tuple[int, str, int]:
    """Append ``i`` to this process's file under ``log`` (it survives a SIGKILL),
    sleep, then behave like ``token``."""
    _append(f"{log}/{os.getpid()}", f"{i}\n")
    if seconds:
        await asyncio.sleep(seconds)
    return i, uuid.uuid4().hex, os.getpid()


def _append(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


@distaff.routine
async def log_then_die(log: str) -> None:
    """Log this run under ``log``, then SIGKILL the worker running it."""
    _append(f"{log}/{os.getpid()}", "ran\n")
    os.kill(os.getpid(), signal.SIGKILL)


@distaff.routine
async def executed() -> int:
    """How many ``token``/``slow_token`` executions this worker ran."""
    return _executions


# yields 0, 1, 2, ... and writes its PID to the marker from ``finally``
yield_forever = stream_then_mark


def _mark(path: str) -> None:
    """Write this process's PID to ``path`` (a marker the test waits for)."""
    pathlib.Path(path).write_text(str(os.getpid()))


async def _block(marker: str, seconds: float) -> str:
    try:
        _mark(marker + ".started")
        await asyncio.sleep(seconds)
        return "finished"
    finally:
        _mark(marker)


@distaff.routine
async def block(marker: str, seconds: float) -> str:
    """Write the PID to ``marker.started``, sleep, write it to ``marker`` in ``finally``."""
    return await _block(marker, seconds)


@distaff.routine(timeout=0.5)
async def block_with_default_timeout(marker: str, seconds: float) -> str:
    """``block`` with a per-routine default timeout of 0.5 s."""
    return await _block(marker, seconds)


@distaff.routine
async def call_block(marker: str, seconds: float) -> str:
    """Call ``block`` from a worker: a nested call that inherits the deadline."""
    return await block(marker, seconds)


@distaff.routine
async def remaining_time() -> float | None:
    """The time left before this call's deadline, as the worker sees it."""
    return remaining()


@distaff.routine
async def remaining_time_nested() -> tuple[float | None, float | None]:
    """This call's time left, and what a nested call sees a moment later."""
    return remaining(), await remaining_time()


@distaff.routine
async def yield_then_block(marker: str) -> AsyncGenerator[int, None]:
    """Yield once, then block (``marker.blocked`` says so); ``finally`` writes ``marker``."""
    try:
        yield 1
        _mark(marker + ".blocked")
        await asyncio.sleep(3600)
        yield 2
    finally:
        _mark(marker)


@distaff.routine
async def write_marker(path: str) -> int:
    """Write the PID to ``path``; return it."""
    _mark(path)
    return os.getpid()


# bad input


@distaff.routine
async def return_lock() -> threading.Lock:
    """Return something that cannot be pickled."""
    return threading.Lock()


@distaff.routine
async def yield_lock() -> AsyncGenerator[Any, None]:
    """Yield a picklable value, then one that cannot be pickled."""
    yield 1
    yield threading.Lock()


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


@distaff.routine
async def raise_locked() -> None:
    """Raise an exception that cannot be pickled."""
    raise LockedError("the vault is locked")


def _refuse(reason: str) -> None:
    raise RuntimeError(reason)


class Unloadable:
    """Pickles fine, but refuses to be unpickled."""

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _refuse, ("Unloadable refuses to load",)


@distaff.routine
async def return_unloadable() -> Unloadable:
    """Return a value that pickles on the worker and fails to load in the caller."""
    return Unloadable()


class Blob(bytes):
    """Bytes with a short repr: tracebacks of failed tests stay readable (and fast)."""

    def __repr__(self) -> str:
        return f"Blob(<{len(self)} bytes>)"


@distaff.routine
async def length(data: bytes) -> int:
    """Return ``len(data)``."""
    return len(data)


@distaff.routine
async def make_blob(size: int) -> Blob:
    """Return ``size`` zero bytes."""
    return Blob(size)


# helpers for the tests (not routines)


def namespace() -> str:
    """A fresh discovery namespace, so tests never see each other's workers."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def alive(pid: int) -> bool:
    """True if ``pid`` runs (exists and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for {pid}")


def body_of(routine: Callable[..., Any]) -> Callable[..., Any]:
    """The ``async def`` a routine wraps (what a Task carries)."""
    body: Callable[..., Any] = getattr(routine, "__wrapped__")  # noqa: B009
    return body


async def call_at(address: str, routine: Callable[..., Any], *args: Any) -> Any:
    """Run coroutine ``routine`` on the worker at ``address``, bypassing discovery."""
    connection = distaff.WorkerConnection(address)
    try:
        task = distaff.Task(callable=body_of(routine), args=args)
        stream = await connection.dispatch(task, timeout=10)
        try:
            return await anext(stream)
        finally:
            await stream.aclose()
    finally:
        await connection.aclose()

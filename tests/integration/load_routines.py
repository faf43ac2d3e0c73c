"""Routines for the load-balancing tests (importable by workers)."""

from __future__ import annotations

import asyncio
import os
import time

import distaff


@distaff.routine
async def nap(seconds: float) -> int:
    """Sleep without blocking the loop; return the worker's pid."""
    await asyncio.sleep(seconds)
    return os.getpid()


_one_at_a_time: asyncio.Semaphore | None = None


@distaff.routine
async def take_turns(seconds: float) -> int:
    """Sleep ``seconds`` once the worker's single slot is free."""
    global _one_at_a_time
    if _one_at_a_time is None:
        _one_at_a_time = asyncio.Semaphore(1)
    async with _one_at_a_time:
        await asyncio.sleep(seconds)
    return os.getpid()


@distaff.routine
async def hog(seconds: float) -> int:
    """Block the worker's event loop (a CPU-bound body written as async def)."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point of this routine
    return os.getpid()


_running_now = 0


@distaff.routine
async def count_running(seconds: float) -> int:
    """Sleep ``seconds``; return how many of these ran on the worker at once, this one included."""
    global _running_now
    _running_now += 1
    try:
        most = _running_now
        await asyncio.sleep(seconds)
        return max(most, _running_now)
    finally:
        _running_now -= 1

"""The distaff routines the workloads call (importable by the workers)."""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import AsyncIterator
from typing import Any

import distaff


@distaff.routine
async def noop() -> None:
    """Do nothing: the per-call overhead alone."""
    return None


@distaff.routine
async def echo(data: bytes) -> bytes:
    """Return the argument: a payload both ways."""
    return data


@distaff.routine
async def count(n: int) -> AsyncIterator[int]:
    """Yield 0 .. n-1: a stream of small items."""
    for i in range(n):
        yield i


@distaff.routine(window=256)
async def count_ahead(n: int) -> AsyncIterator[int]:
    """Yield 0 .. n-1 with a read-ahead window of 256 items (W4W)."""
    for i in range(n):
        yield i


def double(x: int) -> int:
    """Twice x: the trivial item of W7, for ProcessPoolExecutor.map."""
    return 2 * x


@distaff.routine
def double_plain(x: int) -> int:
    """Twice x, as a plain-def routine (runs in a worker thread): W7."""
    return 2 * x


@distaff.routine
async def double_async(x: int) -> int:
    """Twice x, as a coroutine routine: W7's second distaff figure."""
    return 2 * x


@distaff.actor
class NoopActor:
    """An actor with a no-op method: WA's actor call (default turns: one at a time)."""

    async def noop(self) -> None:
        """Do nothing: an actor call's overhead alone."""
        return None


@distaff.actor(concurrency=None)
class FreeNoopActor:
    """WA's actor for the W2 shape: calls may interleave, as the routine's do."""

    async def noop(self) -> None:
        """Do nothing: an actor call's overhead alone."""
        return None


_profiler: Any = None


@distaff.routine
async def profile_start() -> None:
    """Start cProfile on the worker this runs on (``bench.actor_profile``)."""
    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()


@distaff.routine
async def profile_stop() -> dict[str, float]:
    """Stop the worker's cProfile; its own time (s) by function."""
    _profiler.disable()
    return own_times(_profiler)


def own_times(profiler: cProfile.Profile) -> dict[str, float]:
    """Seconds spent in each function itself, keyed ``file:line(name)``."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {f"{f.rsplit('/', 1)[-1]}:{n}({fn})": row[2] for (f, n, fn), row in stats.items()}

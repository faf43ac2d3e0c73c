"""The distaff routines the workloads call (importable by the workers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

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

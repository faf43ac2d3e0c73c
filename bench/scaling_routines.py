"""SCALE's routines (importable by the workers)."""

from __future__ import annotations

import asyncio

import distaff


@distaff.routine
async def noop() -> None:
    """Do nothing."""
    return None


@distaff.routine
async def fan(n: int) -> int:
    """Make ``n`` nested no-op calls from this worker, 16 at a time; return ``n``."""
    limit = asyncio.Semaphore(16)

    async def one() -> None:
        async with limit:
            await noop()

    async with asyncio.TaskGroup() as group:
        for _ in range(n):
            group.create_task(one())
    return n

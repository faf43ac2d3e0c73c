"""W6's routine and its random-choice balancer (importable by the workers)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncGenerator
from typing import Any

import distaff

_one_at_a_time: asyncio.Semaphore | None = None


@distaff.routine
async def task(seconds: float, slow_pid: int) -> None:
    """Hold this worker's single slot for ``seconds`` (4x on the slow worker)."""
    global _one_at_a_time
    if _one_at_a_time is None:
        _one_at_a_time = asyncio.Semaphore(1)
    if os.getpid() == slow_pid:
        seconds *= 4
    async with _one_at_a_time:
        await asyncio.sleep(seconds)


class RandomLoadBalancer:
    """Offers untried workers in random order: randomness without load awareness."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())

    async def delegate(self, *, context: Any) -> AsyncGenerator[Any, Any]:
        """Random order, each worker once."""
        workers = list(context.workers.items())
        random.shuffle(workers)
        for candidate in workers:
            try:
                winner = yield candidate
            except Exception:
                continue
            if winner is not None:
                return

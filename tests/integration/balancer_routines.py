"""Balancers and routines the balancer integration tests ship to real workers.

Workers import this module by name, so each process (caller or worker) has
its own ``offers``: what a routine returns from it was recorded where the
routine ran.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any

import distaff

# (pid of the process that chose, uid of the worker offered), per process
offers: list[tuple[int, str]] = []


class RecordingBalancer:
    """Round robin by call count; records every offer in this process's offers."""

    def __init__(self) -> None:
        self.calls = 0

    async def delegate(
        self, *, context: distaff.LoadBalancerContextView
    ) -> AsyncGenerator[tuple[distaff.WorkerMetadata, distaff.WorkerConnection], Any]:
        workers = list(context.workers.items())
        start, self.calls = self.calls, self.calls + 1
        for step in range(len(workers)):
            metadata, connection = workers[(start + step) % len(workers)]
            offers.append((os.getpid(), metadata.uid))
            try:
                yield metadata, connection
            except Exception:
                continue
            return


class LegacyBalancer:
    """Implements only the deprecated DispatchingLoadBalancerLike: dispatches itself."""

    def __init__(self) -> None:
        self.dispatched = 0

    async def dispatch(
        self,
        task: distaff.Task,
        *,
        context: distaff.LoadBalancerContextLike,
        timeout: float | None = None,
    ) -> Any:
        connections = list(context.workers.values())
        connection = connections[self.dispatched % len(connections)]
        self.dispatched += 1
        return await connection.dispatch(task, timeout=timeout)


@distaff.routine
async def where() -> int:
    """Return the serving process's PID."""
    return os.getpid()


@distaff.routine
async def where_nested() -> tuple[int, int, list[tuple[int, str]]]:
    """Call ``where`` from a worker; return (our PID, its PID, our offers)."""
    inner = await where()
    return os.getpid(), inner, list(offers)

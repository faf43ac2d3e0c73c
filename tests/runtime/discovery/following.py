"""Helpers for tests of the address-following discoveries: workers and a recorder."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from distaff import DiscoveryEvent, DiscoveryEventType
from distaff.runtime.worker.process import WorkerProcess
from distaff.runtime.worker.server import WorkerConfig

ADDED = DiscoveryEventType.WORKER_ADDED
DROPPED = DiscoveryEventType.WORKER_DROPPED


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def workers() -> AsyncIterator[Callable[..., Any]]:
    """Yields ``start(host, port, **config)``; every worker started is stopped at the end."""
    started: list[WorkerProcess] = []

    async def start(host: str, port: int, **config: Any) -> WorkerProcess:
        process = WorkerProcess(WorkerConfig(host=host, port=port, grace=1.0, **config))
        started.append(process)
        await process.start()
        return process

    try:
        yield start
    finally:
        await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
        await asyncio.gather(*(p.kill() for p in started), return_exceptions=True)


class Recorder:
    """Follows a subscription in a task; tests wait on what it has seen."""

    def __init__(self, subscription: Any) -> None:
        self.events: list[DiscoveryEvent] = []
        self._changed = asyncio.Event()
        self._subscription = subscription
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for event in self._subscription:
            self.events.append(event)
            self._changed.set()

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def seen(self, kind: DiscoveryEventType, uid: str) -> bool:
        return any(e.type is kind and e.metadata.uid == uid for e in self.events)

    @property
    def members(self) -> set[str]:
        """Uids added and not dropped since."""
        live: set[str] = set()
        for event in self.events:
            (live.add if event.type is ADDED else live.discard)(event.metadata.uid)
        return live

    async def wait(self, kind: DiscoveryEventType, uid: str, timeout: float = 10.0) -> float:
        """Wait for the event; return the loop time it was seen at."""
        async with asyncio.timeout(timeout):
            while not self.seen(kind, uid):
                if self._task is not None and self._task.done():
                    self._task.result()
                self._changed.clear()
                await self._changed.wait()
        return asyncio.get_running_loop().time()

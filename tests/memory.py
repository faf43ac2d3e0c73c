"""An in-memory channel: a caller's WorkerConnection joined to a WorkerService.

The service runs in the test's own event loop, so a test can see the remote
side directly (what ran, what was cancelled) in milliseconds. Only the gRPC
byte pipe is replaced; both session state machines and both drivers are the
real ones. Closing the caller's end cancels the serving task, as gRPC does
when a caller goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from distaff.proxy.connection import WorkerConnection
from distaff.runtime.worker.proxies import ProxyRegistry
from distaff.runtime.worker.service import WorkerService
from distaff.serialization.wire import Envelope

_EOF = None


class _CallerEnd:
    def __init__(self, worker: MemoryWorker) -> None:
        self._to_worker: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._to_caller: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._serving = worker.group.create_task(
            worker.service.serve(_ServerEnd(self._to_worker, self._to_caller))
        )
        self._serving.add_done_callback(lambda _: self._to_caller.put_nowait(_EOF))
        worker.sessions.append(self._serving)

    async def read(self) -> Envelope | None:
        return await self._to_caller.get()

    async def write(self, envelope: Envelope) -> None:
        self._to_worker.put_nowait(envelope)

    async def done_writing(self) -> None:
        self._to_worker.put_nowait(_EOF)

    def close(self) -> None:
        self._serving.cancel()


class _ServerEnd:
    def __init__(
        self, incoming: asyncio.Queue[Envelope | None], outgoing: asyncio.Queue[Envelope | None]
    ) -> None:
        self._incoming = incoming
        self._outgoing = outgoing

    async def read(self) -> Envelope | None:
        return await self._incoming.get()

    async def write(self, envelope: Envelope) -> None:
        self._outgoing.put_nowait(envelope)


class MemoryWorker:
    """A worker service in this process; ``connect()`` gives a caller connection to it."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self.group = group
        self.service = WorkerService(ProxyRegistry(), on_stop=lambda: None, worker="memory")
        self.service.address = "memory:0"
        self.sessions: list[asyncio.Task[None]] = []

    def connect(self) -> WorkerConnection:
        return WorkerConnection("memory:0", transport=lambda: _CallerEnd(self))


@contextlib.asynccontextmanager
async def memory_worker() -> AsyncIterator[MemoryWorker]:
    """Run a MemoryWorker for the block; its sessions are cancelled at the end."""
    async with asyncio.TaskGroup() as group:
        worker = MemoryWorker(group)
        try:
            yield worker
        finally:
            for session in worker.sessions:
                session.cancel()

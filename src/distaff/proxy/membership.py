"""Membership: follows a discovery subscription into a LoadBalancerContext.

One membership lives from a proxy's ``start`` to its ``stop``; a restarted
proxy gets a fresh one, so nothing (workers, errors) leaks across restarts.
It runs in one owned task whose TaskGroup also holds the evictions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from ..serialization.metadata import WorkerMetadata
from . import observe
from .connection import WorkerConnection
from .context import LoadBalancerContext
from .discovery import DiscoveryEventType, DiscoverySubscriberLike

log = logging.getLogger(__name__)

# resubscribing after a failed subscription backs off from the first to the last
_BACKOFF_FIRST = 0.05
_BACKOFF_LAST = 5.0


class Membership:
    """The workers of one pool, as discovery reports them, with their connections.

    Args:
        discovery: the subscription to follow.
        admits: whether a worker may join (tags, security).
        lease: the most workers to admit (None: no cap).
        connect: opens the connection to an admitted worker.
        forget: told of every worker that leaves, so admission can judge it
            afresh if it comes back.
    """

    def __init__(
        self,
        discovery: DiscoverySubscriberLike,
        *,
        admits: Callable[[WorkerMetadata], bool],
        lease: int | None,
        connect: Callable[[WorkerMetadata], WorkerConnection],
        forget: Callable[[WorkerMetadata], None] = lambda _: None,
    ) -> None:
        self.context = LoadBalancerContext()
        self.changed = asyncio.Event()
        self.error: Exception | None = None  # the last subscription failure, if any
        self._discovery = discovery
        self._admits = admits
        self._lease = lease
        self._connect = connect
        self._forget = forget
        self._group: asyncio.TaskGroup | None = None
        self._closed = False
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            await self._follow()

    async def _follow(self) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            try:
                async for event in self._discovery:
                    self._apply(event.type, event.metadata)
                    self.error = None
                    backoff = _BACKOFF_FIRST
                    self._signal()
                raise RuntimeError("the discovery subscription ended")
            except Exception as exc:
                if self.error is None or str(self.error) != str(exc):
                    log.warning(
                        "discovery %r failed (%s: %s); resubscribing with back-off",
                        self._discovery,
                        type(exc).__name__,
                        exc,
                    )
                self.error = exc
                self._signal()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, _BACKOFF_LAST)

    def _signal(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def _apply(self, kind: DiscoveryEventType, metadata: WorkerMetadata) -> None:
        known = self.context.find(metadata.uid) is not None
        if kind is DiscoveryEventType.WORKER_DROPPED or (known and not self._admits(metadata)):
            self.evict(metadata)
        elif known:
            self.context.update_worker(metadata)
        elif self._admits(metadata) and (
            self._lease is None or len(self.context.workers) < self._lease
        ):
            self.context.add_worker(metadata, self._connect(metadata))
            log.info("admitted worker %s at %s", metadata.uid[:8], metadata.address)
            if observe.current is not None:
                observe.current.admitted(1)

    def evict(self, metadata: WorkerMetadata) -> None:
        """Remove a worker; its connection closes once its calls are done."""
        self._forget(metadata)
        connection = self.context.remove_worker(metadata)
        if connection is None:
            return
        if observe.current is not None:
            observe.current.admitted(-1)
        log.info("dropped worker %s at %s", metadata.uid[:8], metadata.address)
        self._signal()
        if self._group is None or self._closed:
            return
        # calls already running there finish; only new ones go elsewhere
        self._group.create_task(_close_when_idle(connection))

    async def aclose(self) -> None:
        """Stop following; close every connection at once. Idempotent."""
        if self._closed:
            return
        self._closed = True
        connections = list(self.context.workers.values())
        if observe.current is not None and connections:
            observe.current.admitted(-len(connections))
        self._runner.cancel()  # evictions in its TaskGroup close their connections now
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)


async def _close_when_idle(connection: WorkerConnection) -> None:
    try:
        await connection.aclose_when_idle()
    except Exception:  # a failed close must not take the membership down
        log.debug("closing %r failed", connection, exc_info=True)

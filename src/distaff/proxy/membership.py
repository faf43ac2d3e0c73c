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
from .departures import Departures
from .discovery import DiscoveryEvent, DiscoveryEventType, DiscoverySubscriberLike

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
        subset: prefer this many of the admitted workers (None: all). The
            pool's balancer sees only ``preferred``: a random subset, the
            same for as long as its members stay, so a process talks to a
            bounded number of workers. ``context`` still holds every admitted
            worker (its connection dials only when used), for calls pinned to
            one worker and for lookups across the pool.
        departures: where to record why workers leave (the proxy keeps it
            across restarts); None: a record of this membership's own.
    """

    def __init__(
        self,
        discovery: DiscoverySubscriberLike,
        *,
        admits: Callable[[WorkerMetadata], bool],
        lease: int | None,
        connect: Callable[[WorkerMetadata], WorkerConnection],
        forget: Callable[[WorkerMetadata], None] = lambda _: None,
        subset: int | None = None,
        departures: Departures | None = None,
    ) -> None:
        self.context = LoadBalancerContext()
        self.departures = departures if departures is not None else Departures()
        self.preferred = self.context if subset is None else LoadBalancerContext()
        self._subset = subset
        self._seed = random.getrandbits(64)
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
                    self._apply(event)
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

    def _apply(self, event: DiscoveryEvent) -> None:
        kind, metadata = event.type, event.metadata
        known = self.context.find(metadata.uid) is not None
        if kind is DiscoveryEventType.WORKER_DROPPED:
            self.evict(metadata, withdrawn=event.withdrawn)
        elif known and not self._admits(metadata):
            self.evict(metadata, departed=False)
        elif known:
            self.context.update_worker(metadata)
            if self.preferred is not self.context:
                self.preferred.update_worker(metadata)
        elif self._admits(metadata) and (
            self._lease is None or len(self.context.workers) < self._lease
        ):
            connection = self._connect(metadata)
            self.context.add_worker(metadata, connection)
            self.departures.returned(metadata.uid)
            self._prefer(metadata, connection)
            log.info("admitted worker %s at %s", metadata.uid[:8], metadata.address)
            if observe.current is not None:
                observe.current.admitted(1)

    def _score(self, metadata: WorkerMetadata) -> int:
        return hash((self._seed, metadata.uid))

    def _prefer(self, metadata: WorkerMetadata, connection: WorkerConnection) -> None:
        """Put a newcomer in the subset if it is not full or it outranks the last member."""
        if self._subset is None:
            return
        preferred = self.preferred.workers
        if len(preferred) >= self._subset:
            last = max(preferred, key=self._score)
            if self._score(last) <= self._score(metadata):
                return
            self.preferred.remove_worker(last)  # stays admitted, and connected if it was
        self.preferred.add_worker(metadata, connection)

    def _refill(self) -> None:
        """Fill the subset back up from the best-ranked admitted workers outside it."""
        assert self._subset is not None
        preferred = self.preferred.workers
        missing = self._subset - len(preferred)
        if missing <= 0:
            return
        others = [m for m in self.context.workers if m not in preferred]
        for metadata in sorted(others, key=self._score)[:missing]:
            self.preferred.add_worker(metadata, self.context.workers[metadata])

    def evict(
        self, metadata: WorkerMetadata, *, withdrawn: bool = False, departed: bool = True
    ) -> None:
        """Remove a worker; its connection closes once its calls are done.

        ``departed``: it left (not merely stopped matching the pool), so
        record why: ``withdrawn`` (discovery says it took itself out while
        alive) or a drain its connection saw make it drained, else lost.
        """
        self._forget(metadata)
        connection = self.context.remove_worker(metadata)
        if departed:
            self.departures.left(metadata.uid, withdrawn=withdrawn, connection=connection)
        if connection is None:
            return
        if observe.current is not None:
            observe.current.admitted(-1)
        log.info("dropped worker %s at %s", metadata.uid[:8], metadata.address)
        if (
            self.preferred is not self.context
            and self.preferred.remove_worker(metadata) is not None
        ):
            self._refill()
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

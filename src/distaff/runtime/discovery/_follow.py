"""Following a set of worker addresses that the platform publishes (DNS, a list).

The subscription resolves the addresses every ``refresh`` seconds (with
jitter), describes each new address once (``Describe``: uid, versions,
draining), admits it once its health stream has said SERVING, and watches
that stream:

* a worker whose health leaves SERVING (a drain), or whose stream breaks
  (it died), is dropped at once; after a break the addresses are resolved
  again half a second later, so a new uid behind the same address (a
  restarted container) is added anew without waiting for the refresh;
* an address missing from ``misses`` consecutive resolutions (NXDOMAIN, a
  timeout, a record removed) is dropped only if a health check fails too, so
  one bad DNS answer never empties a healthy pool;
* a draining or unreachable new address is skipped and tried again on the
  next refresh; one uid reachable at two addresses is admitted once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc.aio

from ...serialization.metadata import WorkerMetadata
from ._dial import Dial, Draining
from .base import DiscoveryEvent, DiscoveryEventType

logger = logging.getLogger("distaff.discovery")

Resolve = Callable[[], Awaitable[list[str] | None]]
"""Returns the current ``host:port`` addresses, or None when resolution failed."""

_MIN_INTERVAL = 0.2  # seconds between two resolutions, however often woken
_REWAKE = 0.5  # seconds from a broken health stream to the next resolution


def _describe_timeout(refresh: float) -> float:
    return min(max(refresh, 1.0), 5.0)


@dataclasses.dataclass
class _Known:
    metadata: WorkerMetadata
    dial: Dial
    misses: int = 0
    watch: asyncio.Task[None] | None = None


class _Follower:
    def __init__(self, resolve: Resolve, refresh: float, misses: int, credentials: Any) -> None:
        self._resolve = resolve
        self._refresh = refresh
        self._misses = misses
        self._credentials = credentials
        self._known: dict[str, _Known] = {}
        self._wake = asyncio.Event()
        self._rewake: asyncio.TimerHandle | None = None
        self.events: asyncio.Queue[DiscoveryEvent] = asyncio.Queue()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    started = time.monotonic()
                    await self._round(group)
                    await self._pause(started)
        finally:
            if self._rewake is not None:
                self._rewake.cancel()
            dials = [k.dial for k in self._known.values()]
            self._known.clear()
            await asyncio.gather(*(d.aclose() for d in dials), return_exceptions=True)

    async def _pause(self, started: float) -> None:
        delay = self._refresh * random.uniform(0.8, 1.2)
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            return
        self._wake.clear()
        await asyncio.sleep(max(0.0, started + _MIN_INTERVAL - time.monotonic()))

    async def _round(self, group: asyncio.TaskGroup) -> None:
        addresses = await self._resolve()
        current = set(addresses or ())
        missing = [k for a, k in self._known.items() if a not in current]
        for known in self._known.values():
            known.misses = 0 if known.metadata.address in current else known.misses + 1
        new = [a for a in dict.fromkeys(addresses or ()) if a not in self._known]
        await asyncio.gather(
            *(self._expire(k) for k in missing), *(self._describe(a, group) for a in new)
        )

    async def _expire(self, known: _Known) -> None:
        if known.misses < self._misses:
            return
        if not await known.dial.serving(timeout=min(self._refresh, 3.0)):
            await self._drop(known, withdrawn=False)

    async def _describe(self, address: str, group: asyncio.TaskGroup) -> None:
        dial = Dial(address, self._credentials)
        try:
            metadata = await dial.describe(timeout=_describe_timeout(self._refresh))
        except (grpc.aio.AioRpcError, Draining) as exc:
            logger.debug("not admitting %s: %r", address, exc)
            await dial.aclose()
            return
        if address in self._known or any(
            k.metadata.uid == metadata.uid for k in self._known.values()
        ):
            await dial.aclose()
            return
        # admitted once its health stream has said SERVING: a drain from then on
        # arrives there as NOT_SERVING (withdrawn), never as a stream the
        # stopping server refused (which reads as a death)
        known = self._known[address] = _Known(metadata, dial)
        serving: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        known.watch = group.create_task(self._watch(known, serving))
        try:
            async with asyncio.timeout(_describe_timeout(self._refresh)):
                await asyncio.wait([serving, known.watch], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        if not serving.done():
            logger.debug("not admitting %s: its health stream never said SERVING", address)
            await self._forget(known)
            return
        self.events.put_nowait(DiscoveryEvent(DiscoveryEventType.WORKER_ADDED, metadata))

    async def _watch(self, known: _Known, serving: asyncio.Future[None]) -> None:
        broken = await known.dial.watch(serving)
        known.watch = None
        if not serving.done():
            return  # never admitted: _describe forgets it
        await self._drop(known, withdrawn=not broken)  # left SERVING: a drain
        if broken and self._rewake is None:
            # maybe a new worker behind this address (a restarted container):
            # look soon, but not into the stopping server's last milliseconds
            self._rewake = asyncio.get_running_loop().call_later(_REWAKE, self._rewake_now)

    async def _forget(self, known: _Known) -> None:
        """Stop following ``known`` (no event): its watch, its channel."""
        if self._known.get(known.metadata.address) is known:
            del self._known[known.metadata.address]
        if known.watch is not None:
            known.watch.cancel()
        await known.dial.aclose()

    def _rewake_now(self) -> None:
        self._rewake = None
        self._wake.set()

    async def _drop(self, known: _Known, *, withdrawn: bool) -> None:
        if self._known.get(known.metadata.address) is not known:
            return
        self.events.put_nowait(
            DiscoveryEvent(DiscoveryEventType.WORKER_DROPPED, known.metadata, withdrawn)
        )
        await self._forget(known)


async def follow_addresses(
    resolve: Resolve, *, refresh: float, misses: int = 2, credentials: Any = None
) -> AsyncIterator[DiscoveryEvent]:
    """Yield ADDED/DROPPED events for the workers behind ``resolve()``'s addresses.

    Args:
        resolve: returns the current addresses, or None if resolution failed.
        refresh: mean seconds between resolutions (each wait is jittered by 20 %).
        misses: consecutive resolutions an address must be missing from
            before a failed health check may drop it.
        credentials: ``WorkerCredentials`` to dial workers with; None: plaintext.
    """
    follower = _Follower(resolve, refresh, misses, credentials)
    runner = asyncio.ensure_future(follower.run())
    try:
        while True:
            getter = asyncio.ensure_future(follower.events.get())
            try:
                await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()
                continue
            runner.result()  # a failure of the follower surfaces in the subscription
            raise RuntimeError("the address follower stopped")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

"""Proxies fed with workers through the public discovery path."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import distaff

# Nothing listens on port 1: a real connection to it fails at once with a
# transient UNAVAILABLE. No test here needs a live worker.
UNREACHABLE = "127.0.0.1:1"


@dataclasses.dataclass(frozen=True)
class StaticDiscovery:
    """A pickle-safe subscriber: announces ``events``, then stays subscribed."""

    events: tuple[distaff.DiscoveryEvent, ...]

    def __aiter__(self) -> AsyncIterator[distaff.DiscoveryEvent]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[distaff.DiscoveryEvent]:
        for event in self.events:
            yield event
        await asyncio.Event().wait()  # until the proxy stops following


def announce(*uids: str) -> StaticDiscovery:
    """A subscriber announcing one unreachable worker per uid, in order."""
    added = distaff.DiscoveryEventType.WORKER_ADDED
    return StaticDiscovery(
        tuple(
            distaff.DiscoveryEvent(added, distaff.WorkerMetadata(uid=uid, address=UNREACHABLE))
            for uid in uids
        )
    )


NewProxy = Callable[..., distaff.WorkerProxy]
StartProxy = Callable[..., Awaitable[distaff.WorkerProxy]]


@pytest.fixture
async def new_proxy() -> AsyncIterator[NewProxy]:
    """Build (unstarted) proxies over announced workers; stop them all at teardown."""
    proxies: list[distaff.WorkerProxy] = []

    def build(balancer: object, *uids: str, wait: float = 5.0) -> distaff.WorkerProxy:
        proxy = distaff.WorkerProxy(announce(*uids), loadbalancer=balancer, wait=wait)  # type: ignore[arg-type]
        proxies.append(proxy)
        return proxy

    yield build
    for proxy in proxies:
        await proxy.stop()


@pytest.fixture
def start_proxy(new_proxy: NewProxy) -> StartProxy:
    """Start a proxy and wait until it has admitted every announced worker."""

    async def start(balancer: object, *uids: str) -> distaff.WorkerProxy:
        proxy = new_proxy(balancer, *uids)
        await proxy.start()
        await proxy.wait_for(lambda workers: len(workers) == len(uids), timeout=5.0)
        return proxy

    return start

"""A proxy restored on a worker keeps to a random subset of the pool."""

from __future__ import annotations

import pickle
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import distaff

from .conftest import announce

UIDS = [f"w{i:02d}" for i in range(12)]


async def noop() -> None:
    return None


class Shown(Exception):
    """What the balancer saw: raised from delegate, so it reaches the dispatching test."""

    def __init__(self, uids: set[str]) -> None:
        super().__init__(sorted(uids))
        self.uids = uids


class Revealing:
    """A balancer that offers nobody and reveals the workers it was shown."""

    async def delegate(self, *, context: Any) -> AsyncGenerator[Any, Any]:
        raise Shown({m.uid for m in context.workers})
        yield


async def shown(proxy: distaff.WorkerProxy) -> set[str]:
    """The workers the pool's balancer sees on one dispatch."""
    with pytest.raises(Shown) as caught:
        await proxy.dispatch(distaff.Task(callable=noop))
    return caught.value.uids


@pytest.fixture
async def proxies() -> AsyncIterator[list[distaff.WorkerProxy]]:
    made: list[distaff.WorkerProxy] = []
    yield made
    for proxy in made:
        await proxy.stop()


async def start(
    proxies: list[distaff.WorkerProxy], proxy: distaff.WorkerProxy, count: int
) -> distaff.WorkerProxy:
    proxies.append(proxy)
    await proxy.start()
    await proxy.wait_for(lambda workers: len(workers) == count, timeout=5.0)
    return proxy


async def restored(
    proxies: list[distaff.WorkerProxy], subset: int | None, discovery: Any = None
) -> distaff.WorkerProxy:
    """A proxy as a worker gets it: pickled with the task, restored, started."""
    original = distaff.WorkerProxy(
        discovery or announce(*UIDS), loadbalancer=Revealing(), subset=subset
    )
    return await start(proxies, pickle.loads(pickle.dumps(original)), len(UIDS))


async def test_a_restored_proxy_offers_its_balancer_a_subset_but_admits_everyone(
    proxies: list[distaff.WorkerProxy],
) -> None:
    proxy = await restored(proxies, subset=4)

    offered = await shown(proxy)

    assert len(offered) == 4
    assert offered <= set(UIDS)
    assert {m.uid for m in proxy.workers} == set(UIDS)  # pinned calls can reach any
    assert await shown(proxy) == offered  # stable while its members stay


async def test_subsets_are_chosen_at_random_per_proxy(
    proxies: list[distaff.WorkerProxy],
) -> None:
    subsets = {frozenset(await shown(await restored(proxies, subset=4))) for _ in range(6)}
    assert len(subsets) > 1, "every restored proxy chose the same workers"


async def test_the_caller_s_own_proxy_and_subset_none_offer_every_worker(
    proxies: list[distaff.WorkerProxy],
) -> None:
    caller = distaff.WorkerProxy(announce(*UIDS), loadbalancer=Revealing(), subset=4)
    await start(proxies, caller, len(UIDS))
    everyone = await restored(proxies, subset=None)

    assert await shown(caller) == set(UIDS)
    assert await shown(everyone) == set(UIDS)


async def test_a_member_that_leaves_is_replaced_by_a_worker_outside(
    proxies: list[distaff.WorkerProxy], tmp_path: Path
) -> None:
    discovery = distaff.LocalDiscovery("subset", root=str(tmp_path))
    added, dropped = (
        distaff.DiscoveryEventType.WORKER_ADDED,
        distaff.DiscoveryEventType.WORKER_DROPPED,
    )
    workers = [distaff.WorkerMetadata(uid=uid, address="127.0.0.1:1") for uid in UIDS]
    async with discovery.publisher() as publisher:
        for metadata in workers:
            await publisher.publish(distaff.DiscoveryEvent(added, metadata))
        proxy = await restored(proxies, len(UIDS) - 1, discovery.subscriber())
        before = await shown(proxy)
        (outside,) = set(UIDS) - before
        member = sorted(before)[0]

        await publisher.publish(distaff.DiscoveryEvent(dropped, workers[UIDS.index(member)]))
        await proxy.wait_for(lambda now: len(now) == len(UIDS) - 1, timeout=5.0)

        assert await shown(proxy) == before - {member} | {outside}

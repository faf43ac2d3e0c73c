"""The load-aware balancers and the conformance check, without processes."""

from __future__ import annotations

import collections
import pickle
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import distaff
from distaff.testing import FakeConnection, check_load_balancer

BALANCERS = [
    distaff.RoundRobinLoadBalancer,
    distaff.LeastLoadedLoadBalancer,
    distaff.LatencyAwareLoadBalancer,
]


def pool(loads: list[int], latencies: list[float] | None = None) -> distaff.LoadBalancerContext:
    context = distaff.LoadBalancerContext()
    for i, load in enumerate(loads):
        latency = latencies[i] if latencies else 0.0
        metadata = distaff.WorkerMetadata(uid=f"w{i}", address=f"127.0.0.1:{20_000 + i}")
        connection = FakeConnection(metadata.address, in_flight=load, latency=latency)
        context.add_worker(metadata, connection)  # type: ignore[arg-type]
    return context


async def first_offer(balancer: Any, context: distaff.LoadBalancerContext) -> str:
    candidates = balancer.delegate(context=context)
    try:
        metadata, _ = await anext(candidates)
        return str(metadata.uid)
    finally:
        await candidates.aclose()


@pytest.mark.parametrize("factory", BALANCERS)
def test_built_in_balancers_pass_the_conformance_check(factory: Any) -> None:
    check_load_balancer(factory())


class YieldsAfterSuccess:
    async def delegate(self, *, context: Any) -> AsyncGenerator[Any, Any]:
        for candidate in list(context.workers.items()):
            try:
                yield candidate
            except Exception:
                continue


class OffersTwice:
    async def delegate(self, *, context: Any) -> AsyncGenerator[Any, Any]:
        for candidate in list(context.workers.items())[:1]:
            for _ in range(2):
                try:
                    winner = yield candidate
                except Exception:
                    continue
                if winner is not None:
                    return


class HoldsALock(distaff.LeastLoadedLoadBalancer):
    def __init__(self) -> None:
        import threading

        super().__init__()
        self.lock = threading.Lock()

    def __reduce__(self) -> Any:
        return object.__reduce__(self)


@pytest.mark.parametrize(
    ("balancer", "complaint"),
    [
        (YieldsAfterSuccess(), "after asend"),
        (OffersTwice(), "twice"),
        (HoldsALock(), "does not pickle"),
        (object(), "not a delegating balancer"),
    ],
)
def test_the_conformance_check_names_the_broken_rule(balancer: Any, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_load_balancer(balancer)


async def test_least_loaded_offers_the_idlest_worker_first() -> None:
    balancer = distaff.LeastLoadedLoadBalancer()

    assert await first_offer(balancer, pool([3, 1, 0, 2])) == "w2"


async def test_least_loaded_breaks_ties_at_random() -> None:
    balancer = distaff.LeastLoadedLoadBalancer()
    context = pool([0, 5, 0, 0])

    picks = collections.Counter([await first_offer(balancer, context) for _ in range(600)])

    assert set(picks) == {"w0", "w2", "w3"}
    assert min(picks.values()) > 120  # about 200 each


async def test_least_loaded_moves_to_the_next_idlest_on_failure() -> None:
    balancer = distaff.LeastLoadedLoadBalancer()
    context = pool([2, 0, 1])
    candidates = balancer.delegate(context=context)

    offered = [(await anext(candidates))[0].uid]
    offered.append((await candidates.athrow(ConnectionError()))[0].uid)
    offered.append((await candidates.athrow(ConnectionError()))[0].uid)
    with pytest.raises(StopAsyncIteration):
        await candidates.athrow(ConnectionError())

    assert offered == ["w1", "w2", "w0"]


async def test_above_the_exact_size_best_of_two_still_avoids_loaded_workers() -> None:
    balancer = distaff.LeastLoadedLoadBalancer(exact_up_to=16)
    loads = [i % 10 for i in range(200)]
    context = pool(loads)

    chosen = [int((await first_offer(balancer, context))[1:]) for _ in range(2000)]

    mean_chosen = sum(loads[i] for i in chosen) / len(chosen)
    assert mean_chosen < 0.8 * (sum(loads) / len(loads))  # best of two beats random (4.5)


async def test_latency_aware_prefers_the_faster_of_two() -> None:
    balancer = distaff.LatencyAwareLoadBalancer()
    context = pool([0, 0], latencies=[0.5, 0.01])

    picks = collections.Counter([await first_offer(balancer, context) for _ in range(100)])

    assert picks["w1"] == 100


async def test_latency_aware_weighs_queues_by_time_per_call() -> None:
    # One worker 4x slower: with one call queued it costs 2 x 40 ms, more
    # than a quick worker with two queued (3 x 10 ms), and even idle it
    # loses to a quick worker with two (40 ms against 30 ms); it wins only
    # once the quick ones hold three or more
    balancer = distaff.LatencyAwareLoadBalancer()
    slow_busy = pool([1, 2, 2, 3], latencies=[0.04, 0.01, 0.01, 0.01])
    slow_idle = pool([0, 2, 2, 2], latencies=[0.04, 0.01, 0.01, 0.01])
    all_queued = pool([0, 4, 4, 4], latencies=[0.04, 0.01, 0.01, 0.01])

    picks = collections.Counter([await first_offer(balancer, slow_busy) for _ in range(50)])
    assert set(picks) == {"w1", "w2"}
    assert await first_offer(balancer, slow_idle) != "w0"
    assert await first_offer(balancer, all_queued) == "w0"


async def test_latency_aware_scans_small_pools_exactly_and_compares_two_above() -> None:
    latencies = [0.01 * (i + 1) for i in range(40)]
    exact = distaff.LatencyAwareLoadBalancer(exact_up_to=40)
    sampled = distaff.LatencyAwareLoadBalancer(exact_up_to=16)
    context = pool([0] * 40, latencies=latencies)

    assert {await first_offer(exact, context) for _ in range(50)} == {"w0"}
    sampled_picks = {await first_offer(sampled, context) for _ in range(200)}
    assert len(sampled_picks) > 5  # best of two random ones: not always the best


async def test_a_snapshot_follows_changes_of_the_context() -> None:
    balancer = distaff.LeastLoadedLoadBalancer()
    context = pool([1, 1])
    assert await first_offer(balancer, context) in {"w0", "w1"}

    idle = distaff.WorkerMetadata(uid="idle", address="127.0.0.1:1")
    context.add_worker(idle, FakeConnection(idle.address))  # type: ignore[arg-type]

    assert await first_offer(balancer, context) == "idle"


@given(
    loads=st.lists(st.integers(0, 5), min_size=1, max_size=40),
    factory=st.sampled_from(BALANCERS[1:]),
)
async def test_every_worker_is_offered_once_before_the_call_gives_up(
    loads: list[int], factory: Any
) -> None:
    balancer = factory()
    context = pool(loads)
    candidates = balancer.delegate(context=context)
    offered = []
    try:
        metadata, _ = await anext(candidates)
        while True:
            offered.append(metadata.uid)
            metadata, _ = await candidates.athrow(ConnectionError())
    except StopAsyncIteration:
        pass

    assert sorted(offered) == sorted(m.uid for m in context.workers)


@pytest.mark.parametrize("factory", BALANCERS[1:])
def test_balancers_pickle_as_configuration(factory: Any) -> None:
    restored = pickle.loads(pickle.dumps(factory(exact_up_to=3)))

    assert type(restored) is factory
    assert restored.exact_up_to == 3
    assert repr(restored) == f"{factory.__name__}(exact_up_to=3)"

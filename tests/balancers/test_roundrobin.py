"""RoundRobinLoadBalancer: a pure cycling generator driven by anext / athrow / asend."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import distaff

Candidates = Any  # the async generator delegate() returns


def meta(uid: str) -> distaff.WorkerMetadata:
    return distaff.WorkerMetadata(uid=uid, address="127.0.0.1:1")


def pool(*uids: str) -> distaff.LoadBalancerContext:
    """A context with these workers, in order. The balancer never touches a
    connection, so a plain object stands in for each."""
    context = distaff.LoadBalancerContext()
    for uid in uids:
        context.add_worker(meta(uid), object())  # type: ignore[arg-type]
    return context


def unavailable() -> distaff.TransientRpcError:
    return distaff.TransientRpcError("UNAVAILABLE", "worker down", "127.0.0.1:1")


async def call(
    balancer: distaff.RoundRobinLoadBalancer, context: distaff.LoadBalancerContext, failures: int
) -> list[str]:
    """Drive one call as the proxy would: fail ``failures`` candidates, then
    report the next one as the winner. Return the uids offered."""
    candidates = balancer.delegate(context=context)
    offered: list[str] = []
    try:
        metadata, _ = await anext(candidates)
        offered.append(metadata.uid)
        for _ in range(failures):
            metadata, _ = await candidates.athrow(unavailable())
            offered.append(metadata.uid)
        await candidates.asend(metadata)
    except StopAsyncIteration:
        pass
    finally:
        await candidates.aclose()
    return offered


class TestRoundRobinLoadBalancer:
    def test_is_a_delegating_balancer_only(self) -> None:
        # Arrange
        balancer = distaff.RoundRobinLoadBalancer()

        # Act / Assert
        assert isinstance(balancer, distaff.DelegatingLoadBalancerLike)
        assert not isinstance(balancer, distaff.DispatchingLoadBalancerLike)

    async def test_delegate_on_empty_context_ends_at_once(self) -> None:
        # Arrange
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=pool())

        # Act / Assert
        with pytest.raises(StopAsyncIteration):
            await anext(candidates)

    async def test_first_candidate_is_first_worker_with_its_connection(self) -> None:
        # Arrange
        context = pool("a", "b", "c")
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=context)

        # Act
        metadata, connection = await anext(candidates)

        # Assert
        assert metadata == meta("a")
        assert connection is context.workers[meta("a")]
        await candidates.aclose()

    async def test_next_call_starts_after_the_previous_winner(self) -> None:
        # Arrange
        balancer, context = distaff.RoundRobinLoadBalancer(), pool("a", "b", "c")
        assert await call(balancer, context, failures=0) == ["a"]

        # Act
        offered = await call(balancer, context, failures=0)

        # Assert
        assert offered == ["b"]

    async def test_failure_moves_on_to_the_next_worker(self) -> None:
        # Arrange
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=pool("a", "b", "c"))
        await anext(candidates)

        # Act
        metadata, _ = await candidates.athrow(unavailable())

        # Assert
        assert metadata == meta("b")
        await candidates.aclose()

    @pytest.mark.parametrize(
        "error",
        [distaff.RpcError("INTERNAL", "broke"), ValueError("not a transport error")],
        ids=["rpc-error", "any-exception"],
    )
    async def test_non_transient_failure_also_moves_on(self, error: Exception) -> None:
        # Arrange
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=pool("a", "b"))
        await anext(candidates)

        # Act
        metadata, _ = await candidates.athrow(error)

        # Assert
        assert metadata == meta("b")
        await candidates.aclose()

    async def test_delegate_ends_after_full_cycle_of_failures(self) -> None:
        # Arrange
        balancer, context = distaff.RoundRobinLoadBalancer(), pool("a", "b", "c")
        await call(balancer, context, failures=0)  # the position is now at "b"

        # Act
        offered = await call(balancer, context, failures=10)

        # Assert: every worker once, from the position, then the end
        assert offered == ["b", "c", "a"]

    async def test_full_cycle_of_failures_leaves_position_after_last_offered(self) -> None:
        # Arrange
        balancer, context = distaff.RoundRobinLoadBalancer(), pool("a", "b", "c")
        await call(balancer, context, failures=10)

        # Act
        offered = await call(balancer, context, failures=0)

        # Assert
        assert offered == ["a"]

    async def test_eviction_between_yields_still_offers_each_remaining_worker_once(
        self,
    ) -> None:
        # Arrange
        context = pool("a", "b", "c", "d")
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=context)
        offered = []

        # Act: like the proxy, evict each failed worker before throwing in
        try:
            metadata, _ = await anext(candidates)
            while True:
                offered.append(metadata.uid)
                context.remove_worker(metadata)
                metadata, _ = await candidates.athrow(distaff.RpcError("INTERNAL", "broke"))
        except StopAsyncIteration:
            pass

        # Assert
        assert sorted(offered) == ["a", "b", "c", "d"]
        assert dict(context.workers) == {}

    async def test_call_ends_once_every_untried_worker_is_evicted(self) -> None:
        # Arrange
        context = pool("a", "b", "c")
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=context)
        await anext(candidates)  # "a"

        # Act
        context.remove_worker(meta("b"))
        context.remove_worker(meta("c"))

        # Assert: "a" (still there, failed transiently) is not offered twice
        with pytest.raises(StopAsyncIteration):
            await candidates.athrow(unavailable())

    async def test_worker_admitted_during_a_call_is_offered(self) -> None:
        # Arrange
        context = pool("a")
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=context)
        await anext(candidates)

        # Act
        context.add_worker(meta("b"), object())  # type: ignore[arg-type]
        metadata, _ = await candidates.athrow(unavailable())

        # Assert
        assert metadata == meta("b")
        await candidates.aclose()

    async def test_asend_of_winner_ends_the_generator(self) -> None:
        # Arrange
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=pool("a", "b"))
        metadata, _ = await anext(candidates)

        # Act / Assert
        with pytest.raises(StopAsyncIteration):
            await candidates.asend(metadata)

    async def test_cancellation_thrown_in_propagates(self) -> None:
        # Arrange
        candidates = distaff.RoundRobinLoadBalancer().delegate(context=pool("a", "b"))
        await anext(candidates)

        # Act / Assert: cancellation is not a worker failure; no next candidate
        with pytest.raises(asyncio.CancelledError):
            await candidates.athrow(asyncio.CancelledError())

    async def test_concurrent_calls_start_on_distinct_workers(self) -> None:
        # Arrange
        balancer, context = distaff.RoundRobinLoadBalancer(), pool("a", "b", "c")
        drivers = [balancer.delegate(context=context) for _ in range(6)]

        # Act: every call takes its first candidate before any reports success
        firsts = [(await anext(driver))[0] for driver in drivers]
        for driver, winner in zip(drivers, firsts, strict=True):
            with pytest.raises(StopAsyncIteration):
                await driver.asend(winner)

        # Assert
        assert [m.uid for m in firsts] == ["a", "b", "c", "a", "b", "c"]

    async def test_contexts_keep_separate_positions(self) -> None:
        # Arrange
        balancer = distaff.RoundRobinLoadBalancer()
        first, second = pool("a", "b"), pool("a", "b")
        await call(balancer, first, failures=0)

        # Act
        offered = await call(balancer, second, failures=0)

        # Assert
        assert offered == ["a"]

    async def test_contexts_taken_in_turn_each_go_on_from_their_own_position(self) -> None:
        # Arrange: the balancer remembers the context asked for last apart
        # from the others; switching back and forth must not lose a position
        balancer = distaff.RoundRobinLoadBalancer()
        first, second = pool("a", "b", "c"), pool("x", "y")

        # Act
        offered = [
            (await call(balancer, context, failures=0))[0]
            for context in (first, second, first, second, second, first)
        ]

        # Assert
        assert offered == ["a", "x", "b", "y", "x", "c"]

    async def test_a_context_without_a_version_still_takes_turns(self) -> None:
        # Arrange: a context of the balancer protocol, not LoadBalancerContext
        class Plain:
            def __init__(self, context: distaff.LoadBalancerContext) -> None:
                self.workers = context.workers

        balancer, context = distaff.RoundRobinLoadBalancer(), Plain(pool("a", "b"))

        # Act
        offered = [(await call(balancer, context, failures=0))[0] for _ in range(3)]  # type: ignore[arg-type]

        # Assert
        assert offered == ["a", "b", "a"]

    async def test_pickled_balancer_starts_from_first_worker(self) -> None:
        # Arrange
        balancer, context = distaff.RoundRobinLoadBalancer(), pool("a", "b", "c")
        assert await call(balancer, context, failures=0) == ["a"]
        assert await call(balancer, context, failures=0) == ["b"]

        # Act
        restored = pickle.loads(pickle.dumps(balancer))

        # Assert: the copy starts over; the original carries on
        assert await call(restored, context, failures=0) == ["a"]
        assert await call(balancer, context, failures=0) == ["c"]

    @given(
        size=st.integers(min_value=1, max_value=6),
        failures=st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=25),
    )
    async def test_calls_offer_workers_in_round_robin_order(
        self, size: int, failures: list[int]
    ) -> None:
        # Arrange
        uids = [f"w{i}" for i in range(size)]
        balancer, context = distaff.RoundRobinLoadBalancer(), pool(*uids)
        position = 0

        for count in failures:
            # Act: ``count`` failures, then a success (or the end, after a full cycle)
            offered = await call(balancer, context, failures=count)

            # Assert: each call continues the cycle where the last one stopped
            expected = [uids[(position + i) % size] for i in range(min(count + 1, size))]
            assert offered == expected
            position += len(offered)

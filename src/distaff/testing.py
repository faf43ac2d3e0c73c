"""Tools for testing code built on distaff.

``check_load_balancer`` runs a balancer through the delegating protocol as
the proxy would, on fake connections (no processes, no network), and raises
``AssertionError`` naming the first rule it breaks.
"""

from __future__ import annotations

import asyncio
import math
import pickle
from collections.abc import AsyncGenerator, Callable
from typing import Any

from .balancers.base import ConnectionStatistics, DelegatingLoadBalancerLike
from .proxy.context import LoadBalancerContext
from .serialization.metadata import WorkerMetadata

__all__ = ["FakeConnection", "check_load_balancer"]


class FakeConnection:
    """A stand-in for a worker connection: load figures a test sets by hand."""

    def __init__(
        self,
        target: str,
        *,
        in_flight: int = 0,
        latency: float = 0.0,
        service_time: float | None = None,
    ) -> None:
        self.target = target
        self._in_flight = in_flight
        self._latency = latency
        self._service_time = latency if service_time is None else service_time

    @property
    def in_flight(self) -> int:
        """Calls in flight (as set by the test)."""
        return self._in_flight

    @property
    def load(self) -> float:
        """Same as ``in_flight``."""
        return float(self._in_flight)

    @property
    def latency(self) -> float:
        """Latency (as set by the test)."""
        return self._latency

    @property
    def service_time(self) -> float:
        """Time per call queued (as set by the test; by default the latency)."""
        return self._service_time

    def statistics(self) -> ConnectionStatistics:
        """The figures above."""
        return ConnectionStatistics(
            self._in_flight, 0, 0, self._latency, service_time=self._service_time
        )

    async def dispatch(self, task: Any, *, timeout: float | None = None) -> Any:
        """Fake connections never dispatch: balancers must not call this."""
        raise AssertionError("a delegating balancer must not dispatch; the proxy does")


def _pool(size: int) -> LoadBalancerContext:
    context = LoadBalancerContext()
    for i in range(size):
        metadata = WorkerMetadata(uid=f"w{i}", address=f"127.0.0.1:{10_000 + i}")
        context.add_worker(metadata, FakeConnection(metadata.address, in_flight=i % 3))  # type: ignore[arg-type]
    return context


def check_load_balancer(balancer: Any, *, sizes: tuple[int, ...] = (0, 1, 2, 5, 40)) -> None:
    """Check that ``balancer`` follows the delegating load-balancer protocol.

    It must: be a ``DelegatingLoadBalancerLike``; end at once on an empty
    pool; offer only workers of the pool, with their own connections; never
    offer a worker twice in one call, nor one evicted during the call; end
    after a failure of every worker; end after ``asend`` of the winner;
    release its state when closed at any point; and pickle to a balancer that
    passes the same checks.

    Raises:
        AssertionError: naming the rule broken and the pool size.
    """
    assert isinstance(balancer, DelegatingLoadBalancerLike), (
        f"{type(balancer).__qualname__} has no delegate(*, context): not a delegating balancer"
    )
    asyncio.run(_check(balancer, sizes))
    try:
        restored = pickle.loads(pickle.dumps(balancer))
    except Exception as exc:
        raise AssertionError(
            f"{type(balancer).__qualname__} does not pickle ({exc}); balancers ship "
            "with every task and must pickle as configuration"
        ) from exc
    asyncio.run(_check(restored, sizes))


async def _check(balancer: Any, sizes: tuple[int, ...]) -> None:
    for size in sizes:
        steps = [_fail_everyone]
        if size:
            steps += [_win_first, _evict_during_call, _close_midway, _many_concurrent]
        for step in steps:
            try:
                await step(balancer, _pool(size), size)
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(
                    f"pool of {size}, {step.__name__.strip('_').replace('_', ' ')}: the "
                    f"balancer raised {exc!r}; a failure thrown in must move it on to the "
                    "next worker (or end it), and it must end by returning"
                ) from exc


def _offer_check(context: LoadBalancerContext, size: int) -> Callable[[Any], str]:
    def check(candidate: Any) -> str:
        if not (isinstance(candidate, tuple) and len(candidate) == 2):
            raise AssertionError(
                f"pool of {size}: delegate yielded {candidate!r}, not (metadata, connection)"
            )
        metadata, connection = candidate
        assert context.workers.get(metadata) is connection, (
            f"pool of {size}: offered {metadata.uid!r} with a connection that is not its own "
            "in the context (or a worker not in the pool)"
        )
        return str(metadata.uid)

    return check


async def _fail_everyone(balancer: Any, context: LoadBalancerContext, size: int) -> None:
    check = _offer_check(context, size)
    candidates: AsyncGenerator[Any, Any] = balancer.delegate(context=context)
    offered: list[str] = []
    try:
        candidate = await anext(candidates)
        while True:
            uid = check(candidate)
            assert uid not in offered, f"pool of {size}: offered {uid!r} twice in one call"
            offered.append(uid)
            assert len(offered) <= size, f"pool of {size}: offered more workers than exist"
            candidate = await candidates.athrow(ConnectionError("refused (a check)"))
    except StopAsyncIteration:
        pass
    finally:
        await candidates.aclose()
    assert len(offered) == size, (
        f"pool of {size}: gave up after {len(offered)} failures; offer every worker once"
    )


async def _win_first(balancer: Any, context: LoadBalancerContext, size: int) -> None:
    check = _offer_check(context, size)
    candidates: AsyncGenerator[Any, Any] = balancer.delegate(context=context)
    try:
        metadata, _ = await anext(candidates)
        check((metadata, context.workers[metadata]))
        try:
            extra = await candidates.asend(metadata)
        except StopAsyncIteration:
            return
        raise AssertionError(
            f"pool of {size}: yielded {extra!r} after asend() reported the winner; "
            "a delegate must return once it hears of a success"
        )
    finally:
        await candidates.aclose()


async def _evict_during_call(balancer: Any, context: LoadBalancerContext, size: int) -> None:
    check = _offer_check(context, size)
    candidates: AsyncGenerator[Any, Any] = balancer.delegate(context=context)
    evicted: set[str] = set()
    try:
        candidate = await anext(candidates)
        while True:
            uid = check(candidate)
            assert uid not in evicted, f"pool of {size}: offered {uid!r} after its eviction"
            evicted.add(uid)
            context.remove_worker(candidate[0])  # as the proxy does before athrow
            candidate = await candidates.athrow(RuntimeError("evicted (a check)"))
    except StopAsyncIteration:
        pass
    finally:
        await candidates.aclose()
    assert not context.workers, f"pool of {size}: ended with untried workers left"


async def _close_midway(balancer: Any, context: LoadBalancerContext, size: int) -> None:
    candidates: AsyncGenerator[Any, Any] = balancer.delegate(context=context)
    await anext(candidates)
    await candidates.aclose()  # the proxy closes it on every path
    await _fail_everyone(balancer, context, size)  # and nothing stuck from it


async def _many_concurrent(balancer: Any, context: LoadBalancerContext, size: int) -> None:
    async def one() -> None:
        candidates: AsyncGenerator[Any, Any] = balancer.delegate(context=context)
        try:
            metadata, _ = await anext(candidates)
            await asyncio.sleep(0)
            try:
                await candidates.asend(metadata)
            except StopAsyncIteration:
                return
            raise AssertionError(f"pool of {size}: yielded after asend() under concurrency")
        finally:
            await candidates.aclose()

    async with asyncio.TaskGroup() as group:
        for _ in range(max(4, int(math.sqrt(size)) * 4)):
            group.create_task(one())

"""WorkerProxy's dispatch loop: the proxy dispatches, retries and evicts; balancers choose.

Workers reach the proxy through discovery (see conftest). A transient failure
is real: nothing listens at their address. Other outcomes (a specific
non-transient error, a hang, a result stream to spy on) can't be produced by a
real worker on demand, so those tests replace the ``dispatch`` of the live
connections the balancer finds in its view: see ``inject``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest

import distaff

from .conftest import NewProxy, StartProxy


async def noop() -> None:
    """The routine body of every task here; no test runs it."""


def new_task() -> distaff.Task:
    return distaff.Task(callable=noop)


class SpyStream:
    """A result stream that records being closed."""

    def __init__(self) -> None:
        self.aclose_calls = 0

    def __aiter__(self) -> SpyStream:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.aclose_calls += 1


class FakeDispatch:
    """A stand-in for one connection's ``dispatch``: returns, raises or hangs."""

    def __init__(
        self,
        *,
        returns: SpyStream | None = None,
        raises: Exception | None = None,
        hangs: bool = False,
    ) -> None:
        self.returns = returns
        self.raises = raises
        self.hangs = hangs
        self.calls: list[tuple[distaff.Task, float | None]] = []
        self.entered = asyncio.Event()

    async def __call__(self, task: distaff.Task, *, timeout: float | None = None) -> Any:
        self.calls.append((task, timeout))
        self.entered.set()
        if self.hangs:
            await asyncio.Event().wait()
        if self.raises is not None:
            raise self.raises
        return self.returns


def inject(context: distaff.LoadBalancerContextView, faults: Mapping[str, FakeDispatch]) -> None:
    """Fault injection: make the named workers' live connections dispatch via a fake."""
    for metadata, connection in context.workers.items():
        if metadata.uid in faults:
            connection.dispatch = faults[metadata.uid]  # type: ignore[method-assign]


def uids(workers: Any) -> list[str]:
    return [metadata.uid for metadata in workers]


class InOrderBalancer:
    """Offers the workers in admission order and records what the proxy signals."""

    def __init__(self, **faults: FakeDispatch) -> None:
        self.faults = faults
        self.offered: list[str] = []
        # (failed uid, error thrown in, the pool's uids when it arrived)
        self.failures: list[tuple[str, Exception, list[str]]] = []
        self.winners: list[distaff.WorkerMetadata | None] = []
        self.connections: list[distaff.WorkerConnection] = []

    async def delegate(
        self, *, context: distaff.LoadBalancerContextView
    ) -> AsyncGenerator[tuple[distaff.WorkerMetadata, distaff.WorkerConnection], Any]:
        inject(context, self.faults)
        for metadata, connection in list(context.workers.items()):
            self.offered.append(metadata.uid)
            self.connections.append(connection)
            try:
                winner = yield metadata, connection
            except Exception as exc:
                self.failures.append((metadata.uid, exc, uids(context.workers)))
                continue
            self.winners.append(winner)
            return


class DeclinesEveryCall(InOrderBalancer):
    """A delegate that returns before yielding anything."""

    async def delegate(
        self, *, context: distaff.LoadBalancerContextView
    ) -> AsyncGenerator[tuple[distaff.WorkerMetadata, distaff.WorkerConnection], Any]:
        inject(context, self.faults)
        return
        yield  # unreachable: makes this an async generator


class YieldsAfterSuccess(InOrderBalancer):
    """Malformed: offers the first worker again after being told it won."""

    async def delegate(
        self, *, context: distaff.LoadBalancerContextView
    ) -> AsyncGenerator[tuple[distaff.WorkerMetadata, distaff.WorkerConnection], Any]:
        inject(context, self.faults)
        candidate = next(iter(context.workers.items()))
        self.winners.append((yield candidate))
        yield candidate


class SlowBookkeeping(InOrderBalancer):
    """Records each win in a bookkeeping step that never finishes."""

    def __init__(self, **faults: FakeDispatch) -> None:
        super().__init__(**faults)
        self.bookkeeping = asyncio.Event()

    async def delegate(
        self, *, context: distaff.LoadBalancerContextView
    ) -> AsyncGenerator[tuple[distaff.WorkerMetadata, distaff.WorkerConnection], Any]:
        inject(context, self.faults)
        self.winners.append((yield next(iter(context.workers.items()))))
        self.bookkeeping.set()
        await asyncio.Event().wait()


class LegacyBalancer:
    """Implements only the deprecated DispatchingLoadBalancerLike: dispatches itself."""

    def __init__(self, **faults: FakeDispatch) -> None:
        self.faults = faults
        self.calls: list[tuple[distaff.Task, list[str], float | None]] = []

    async def dispatch(
        self,
        task: distaff.Task,
        *,
        context: distaff.LoadBalancerContextLike,
        timeout: float | None = None,
    ) -> Any:
        inject(context, self.faults)
        self.calls.append((task, uids(context.workers), timeout))
        connection = next(iter(context.workers.values()))
        return await connection.dispatch(task, timeout=timeout)


class MigratingBalancer(InOrderBalancer):
    """Implements both protocols, as a balancer does mid-migration."""

    def __init__(self, **faults: FakeDispatch) -> None:
        super().__init__(**faults)
        self.legacy_calls = 0

    async def dispatch(self, task: distaff.Task, *, context: Any, timeout: Any = None) -> Any:
        self.legacy_calls += 1
        raise AssertionError("the proxy must prefer delegate()")


def deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]


class TestWorkerProxyDelegateDispatch:
    async def test_transient_failure_skips_worker_without_evicting_it(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange: "a" is really unreachable (transient); "b" accepts
        stream = SpyStream()
        balancer = InOrderBalancer(b=FakeDispatch(returns=stream))
        proxy = await start_proxy(balancer, "a", "b")

        # Act
        result = await proxy.dispatch(new_task())

        # Assert
        assert result is stream
        [(failed, error, pool_at_throw)] = balancer.failures
        assert failed == "a"
        assert isinstance(error, distaff.TransientRpcError)
        assert pool_at_throw == ["a", "b"]
        assert uids(proxy.workers) == ["a", "b"]
        assert uids(balancer.winners) == ["b"]

    @pytest.mark.parametrize(
        "error",
        [distaff.RpcError("INTERNAL", "handshake broke"), ValueError("not a transport error")],
        ids=["rpc-error", "any-exception"],
    )
    async def test_non_transient_failure_evicts_worker_before_balancer_hears_of_it(
        self, start_proxy: StartProxy, error: Exception
    ) -> None:
        # Arrange
        stream = SpyStream()
        balancer = InOrderBalancer(a=FakeDispatch(raises=error), b=FakeDispatch(returns=stream))
        proxy = await start_proxy(balancer, "a", "b")

        # Act
        result = await proxy.dispatch(new_task())

        # Assert: when athrow arrived, "a" was already gone from the view
        assert result is stream
        assert balancer.failures == [("a", error, ["b"])]
        assert uids(proxy.workers) == ["b"]

    async def test_dispatch_raises_no_workers_when_delegate_yields_nothing(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange
        a, b = FakeDispatch(returns=SpyStream()), FakeDispatch(returns=SpyStream())
        proxy = await start_proxy(DeclinesEveryCall(a=a, b=b), "a", "b")

        # Act
        with pytest.raises(distaff.NoWorkersAvailable) as raised:
            await proxy.dispatch(new_task())

        # Assert
        assert raised.value.__cause__ is None
        assert a.calls == b.calls == []
        assert uids(proxy.workers) == ["a", "b"]

    async def test_dispatch_raises_no_workers_when_pool_stays_empty(
        self, new_proxy: NewProxy
    ) -> None:
        # Arrange
        balancer = distaff.RoundRobinLoadBalancer()
        proxy = new_proxy(balancer, wait=0.1)
        await proxy.start()

        # Act / Assert
        with pytest.raises(distaff.NoWorkersAvailable):
            await proxy.dispatch(new_task())

    async def test_dispatch_raises_no_workers_when_last_candidate_fails_and_is_evicted(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange
        error = distaff.RpcError("INTERNAL", "handshake broke")
        balancer = InOrderBalancer(a=FakeDispatch(raises=error))
        proxy = await start_proxy(balancer, "a")

        # Act
        with pytest.raises(distaff.NoWorkersAvailable) as raised:
            await proxy.dispatch(new_task())

        # Assert
        assert raised.value.__cause__ is error
        assert balancer.failures == [("a", error, [])]
        assert proxy.workers == []

    async def test_dispatch_raises_no_workers_when_last_candidate_fails_transiently(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange: the only worker is really unreachable
        balancer = InOrderBalancer()
        proxy = await start_proxy(balancer, "a")

        # Act
        with pytest.raises(distaff.NoWorkersAvailable) as raised:
            await proxy.dispatch(new_task())

        # Assert
        assert isinstance(raised.value.__cause__, distaff.TransientRpcError)
        assert uids(proxy.workers) == ["a"]

    async def test_success_is_reported_to_balancer_with_winner_metadata(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange
        stream = SpyStream()
        fake = FakeDispatch(returns=stream)
        balancer = InOrderBalancer(a=fake)
        proxy = await start_proxy(balancer, "a", "b")
        task = new_task()

        # Act
        result = await proxy.dispatch(task, timeout=3.0)

        # Assert
        assert result is stream
        assert stream.aclose_calls == 0
        assert [sent for sent, _ in fake.calls] == [task]
        assert 0 < fake.calls[0][1] <= 3.0  # this attempt's share of the budget
        assert balancer.winners == [proxy.workers[0]]
        assert balancer.offered == ["a"]

    async def test_balancer_yielding_after_success_is_a_runtime_error_and_stream_is_closed(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange
        stream = SpyStream()
        balancer = YieldsAfterSuccess(a=FakeDispatch(returns=stream))
        proxy = await start_proxy(balancer, "a")

        # Act
        with pytest.raises(RuntimeError, match="protocol violation"):
            await proxy.dispatch(new_task())

        # Assert
        assert uids(balancer.winners) == ["a"]
        assert stream.aclose_calls == 1
        assert uids(proxy.workers) == ["a"]

    async def test_cancel_during_connection_dispatch_propagates_without_eviction_or_retry(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange
        hang, spare = FakeDispatch(hangs=True), FakeDispatch(returns=SpyStream())
        balancer = InOrderBalancer(a=hang, b=spare)
        proxy = await start_proxy(balancer, "a", "b")

        # Act
        async with asyncio.TaskGroup() as group:
            call = group.create_task(proxy.dispatch(new_task()))
            async with asyncio.timeout(5):
                await hang.entered.wait()
            call.cancel()

        # Assert
        assert call.cancelled()
        assert balancer.failures == []
        assert spare.calls == []
        assert uids(proxy.workers) == ["a", "b"]

    async def test_cancel_during_success_bookkeeping_closes_stream_and_propagates(
        self, start_proxy: StartProxy
    ) -> None:
        # Arrange
        stream = SpyStream()
        balancer = SlowBookkeeping(a=FakeDispatch(returns=stream))
        proxy = await start_proxy(balancer, "a")

        # Act
        async with asyncio.TaskGroup() as group:
            call = group.create_task(proxy.dispatch(new_task()))
            async with asyncio.timeout(5):
                await balancer.bookkeeping.wait()
            call.cancel()

        # Assert
        assert call.cancelled()
        assert stream.aclose_calls == 1
        assert uids(proxy.workers) == ["a"]

    async def test_legacy_balancer_warns_once_at_start(self, new_proxy: NewProxy) -> None:
        # Arrange
        proxy = new_proxy(LegacyBalancer(), "a")

        # Act
        with pytest.warns(DeprecationWarning, match="DelegatingLoadBalancerLike") as caught:
            await proxy.start()
        await proxy.start()  # already started: would fail the test if it warned again

        # Assert
        assert len(deprecations(caught.list)) == 1

    async def test_legacy_balancer_dispatches_through_its_own_dispatch(
        self, new_proxy: NewProxy
    ) -> None:
        # Arrange
        stream = SpyStream()
        balancer = LegacyBalancer(a=FakeDispatch(returns=stream))
        proxy = new_proxy(balancer, "a")
        with pytest.warns(DeprecationWarning, match="DelegatingLoadBalancerLike"):
            await proxy.start()
        await proxy.wait_for(bool, timeout=5.0)
        task = new_task()

        # Act
        result = await proxy.dispatch(task, timeout=2.0)

        # Assert
        assert result is stream
        assert balancer.calls == [(task, ["a"], 2.0)]

    async def test_balancer_with_both_protocols_takes_delegating_path_without_warning(
        self, new_proxy: NewProxy
    ) -> None:
        # Arrange
        stream = SpyStream()
        balancer = MigratingBalancer(a=FakeDispatch(returns=stream))
        proxy = new_proxy(balancer, "a")

        # Act
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await proxy.start()
            await proxy.wait_for(bool, timeout=5.0)
            result = await proxy.dispatch(new_task())

        # Assert
        assert deprecations(caught) == []
        assert result is stream
        assert balancer.offered == ["a"]
        assert balancer.legacy_calls == 0


class TestWorkerProxyEviction:
    async def test_evicted_worker_connection_is_closed_even_if_proxy_stops_at_once(
        self, new_proxy: NewProxy
    ) -> None:
        # Arrange
        balancer = InOrderBalancer(a=FakeDispatch(raises=distaff.RpcError("INTERNAL", "broke")))
        proxy = new_proxy(balancer, "a")
        await proxy.start()
        await proxy.wait_for(bool, timeout=5.0)
        with pytest.raises(distaff.NoWorkersAvailable):
            await proxy.dispatch(new_task())
        [evicted] = balancer.connections

        # Act
        await proxy.stop()

        # Assert: the connection's own dispatch (not the injected fake) refuses
        with pytest.raises(distaff.RpcError, match="closed"):
            await distaff.WorkerConnection.dispatch(evicted, new_task())


class CountsDelegate(distaff.RoundRobinLoadBalancer):
    """Round robin whose ``delegate`` is its own: the proxy must drive the protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.delegations = 0

    async def delegate(
        self, *, context: distaff.LoadBalancerContextView
    ) -> AsyncGenerator[tuple[distaff.WorkerMetadata, distaff.WorkerConnection], Any]:
        self.delegations += 1
        offers = super().delegate(context=context)
        try:
            offer = await anext(offers)
            while True:
                try:
                    winner = yield offer
                except Exception as exc:
                    offer = await offers.athrow(exc)
                else:
                    await offers.asend(winner)
        except StopAsyncIteration:
            return


BUILT_IN = [
    distaff.RoundRobinLoadBalancer,
    distaff.LeastLoadedLoadBalancer,
    distaff.LatencyAwareLoadBalancer,
    CountsDelegate,
]


class TestBuiltInBalancersMatchTheProtocol:
    """The proxy runs the seed's loop inline for built-in balancers (no async
    generator per call); a subclass overriding ``delegate`` goes through the
    protocol. Both must skip, evict and give up alike."""

    @pytest.mark.parametrize("balancer_type", BUILT_IN, ids=lambda t: t.__name__)
    async def test_transient_failure_skips_and_faulty_worker_is_evicted(
        self, start_proxy: StartProxy, balancer_type: type
    ) -> None:
        # Arrange: "a" is really unreachable (transient), "b" breaks, "c" accepts
        balancer = balancer_type()
        proxy = await start_proxy(balancer, "a", "b", "c")
        stream = SpyStream()
        broken = FakeDispatch(raises=distaff.RpcError("INTERNAL", "broke"))
        inject(proxy.context, {"b": broken, "c": FakeDispatch(returns=stream)})

        # Act: call until "b" has been offered (three calls for round robin;
        # the load-aware balancers break ties at random, so it may take more),
        # then three more calls
        results = []
        while not broken.calls and len(results) < 100:
            results.append(await proxy.dispatch(new_task()))
        results += [await proxy.dispatch(new_task()) for _ in range(3)]

        # Assert
        assert results == [stream] * len(results)
        assert len(broken.calls) == 1  # evicted at its first failure, never offered again
        assert uids(proxy.workers) == ["a", "c"]
        if isinstance(balancer, CountsDelegate):
            assert balancer.delegations == len(results)

    @pytest.mark.parametrize("balancer_type", BUILT_IN, ids=lambda t: t.__name__)
    async def test_every_worker_failing_raises_no_workers_with_the_last_error(
        self, start_proxy: StartProxy, balancer_type: type
    ) -> None:
        # Arrange
        error = distaff.RpcError("INTERNAL", "broke")
        proxy = await start_proxy(balancer_type(), "a", "b")
        inject(proxy.context, {"a": FakeDispatch(raises=error), "b": FakeDispatch(raises=error)})

        # Act
        with pytest.raises(distaff.NoWorkersAvailable, match="every worker failed") as raised:
            await proxy.dispatch(new_task())

        # Assert
        assert raised.value.__cause__ is error
        assert proxy.workers == []

    @pytest.mark.parametrize("balancer_type", BUILT_IN, ids=lambda t: t.__name__)
    async def test_unreachable_workers_time_out_within_the_dispatch_timeout(
        self, start_proxy: StartProxy, balancer_type: type
    ) -> None:
        # Arrange: both really unreachable; each attempt fails transiently
        proxy = await start_proxy(balancer_type(), "a", "b")

        # Act
        with pytest.raises(distaff.NoWorkersAvailable) as raised:
            await proxy.dispatch(new_task(), timeout=2.0)

        # Assert: transient failures evict nobody
        assert isinstance(raised.value.__cause__, distaff.TransientRpcError)
        assert uids(proxy.workers) == ["a", "b"]

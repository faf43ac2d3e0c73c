"""The balancer protocols are runtime-checkable and structural: no inheritance needed."""

from __future__ import annotations

import typing
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest

import distaff


class WithWorkers:
    @property
    def workers(self) -> Mapping[distaff.WorkerMetadata, distaff.WorkerConnection]:
        return {}


class Empty:
    pass


class Dispatching:
    async def dispatch(
        self, task: distaff.Task, *, context: Any, timeout: float | None = None
    ) -> Any:
        raise NotImplementedError


class Delegating:
    async def delegate(
        self, *, context: distaff.LoadBalancerContextView
    ) -> AsyncGenerator[tuple[distaff.WorkerMetadata, distaff.WorkerConnection], Any]:
        for candidate in context.workers.items():
            yield candidate


class Both(Delegating, Dispatching):
    """A balancer mid-migration: still has dispatch, already has delegate."""


class TestLoadBalancerContextView:
    def test_object_with_workers_property_is_a_view(self) -> None:
        assert isinstance(WithWorkers(), distaff.LoadBalancerContextView)

    def test_object_without_workers_is_not_a_view(self) -> None:
        assert not isinstance(Empty(), distaff.LoadBalancerContextView)

    def test_load_balancer_context_is_a_view(self) -> None:
        assert isinstance(distaff.LoadBalancerContext(), distaff.LoadBalancerContextView)

    def test_read_only_view_is_not_a_mutable_context(self) -> None:
        assert not isinstance(WithWorkers(), distaff.LoadBalancerContextLike)


class TestDispatchingLoadBalancerLike:
    def test_object_with_dispatch_is_dispatching(self) -> None:
        assert isinstance(Dispatching(), distaff.DispatchingLoadBalancerLike)

    def test_object_without_dispatch_is_not_dispatching(self) -> None:
        assert not isinstance(Delegating(), distaff.DispatchingLoadBalancerLike)

    def test_subclassing_the_deprecated_protocol_warns(self) -> None:
        with pytest.warns(DeprecationWarning, match="DelegatingLoadBalancerLike"):

            class Nominal(distaff.DispatchingLoadBalancerLike):
                pass


class TestDelegatingLoadBalancerLike:
    def test_object_with_async_generator_delegate_is_delegating(self) -> None:
        assert isinstance(Delegating(), distaff.DelegatingLoadBalancerLike)

    def test_object_without_delegate_is_not_delegating(self) -> None:
        assert not isinstance(Dispatching(), distaff.DelegatingLoadBalancerLike)


class TestLoadBalancerLike:
    def test_union_is_delegating_or_dispatching(self) -> None:
        # Act
        members = typing.get_args(distaff.LoadBalancerLike)

        # Assert
        assert set(members) == {
            distaff.DelegatingLoadBalancerLike,
            distaff.DispatchingLoadBalancerLike,
        }

    @pytest.mark.parametrize(
        "balancer", [Delegating(), Dispatching()], ids=["delegating", "dispatching"]
    )
    def test_either_protocol_satisfies_the_union(self, balancer: object) -> None:
        assert isinstance(balancer, distaff.LoadBalancerLike)

    def test_object_with_neither_method_is_not_a_balancer(self) -> None:
        assert not isinstance(Empty(), distaff.LoadBalancerLike)

    def test_class_with_both_methods_satisfies_both_protocols(self) -> None:
        # Arrange
        balancer = Both()

        # Act / Assert: the proxy then takes the delegating path (see test_proxy)
        assert isinstance(balancer, distaff.DelegatingLoadBalancerLike)
        assert isinstance(balancer, distaff.DispatchingLoadBalancerLike)
        assert isinstance(balancer, distaff.LoadBalancerLike)

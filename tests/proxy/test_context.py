"""LoadBalancerContext: the proxy's live, ordered membership; balancers see it read-only."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import distaff


def meta(uid: str, **changes: Any) -> distaff.WorkerMetadata:
    return dataclasses.replace(distaff.WorkerMetadata(uid=uid, address="127.0.0.1:1"), **changes)


# The context never touches a connection, so any object stands in for one.
def connection() -> Any:
    return object()


class TestLoadBalancerContext:
    def test_new_context_has_no_workers(self) -> None:
        # Arrange / Act
        context = distaff.LoadBalancerContext()

        # Assert
        assert dict(context.workers) == {}

    def test_workers_keep_admission_order(self) -> None:
        # Arrange
        context = distaff.LoadBalancerContext()
        a, b, c = connection(), connection(), connection()

        # Act
        context.add_worker(meta("c"), c)
        context.add_worker(meta("a"), a)
        context.add_worker(meta("b"), b)

        # Assert
        assert list(context.workers.items()) == [(meta("c"), c), (meta("a"), a), (meta("b"), b)]

    def test_workers_view_is_live_and_read_only(self) -> None:
        # Arrange
        context = distaff.LoadBalancerContext()
        view = context.workers

        # Act
        context.add_worker(meta("a"), connection())

        # Assert
        assert [m.uid for m in view] == ["a"]
        with pytest.raises(TypeError):
            view[meta("b")] = connection()  # type: ignore[index]

    def test_adding_a_known_uid_replaces_its_entry(self) -> None:
        # Arrange
        context = distaff.LoadBalancerContext()
        context.add_worker(meta("a"), connection())
        fresh = connection()

        # Act
        context.add_worker(meta("a", address="127.0.0.1:2"), fresh)

        # Assert
        assert list(context.workers.items()) == [(meta("a", address="127.0.0.1:2"), fresh)]

    def test_update_replaces_metadata_in_place_and_keeps_connection(self) -> None:
        # Arrange
        context = distaff.LoadBalancerContext()
        a, b = connection(), connection()
        context.add_worker(meta("a"), a)
        context.add_worker(meta("b"), b)

        # Act
        context.update_worker(meta("a", tags=frozenset({"gpu"})))

        # Assert
        assert list(context.workers.items()) == [
            (meta("a", tags=frozenset({"gpu"})), a),
            (meta("b"), b),
        ]

    def test_update_of_unknown_uid_changes_nothing(self) -> None:
        # Arrange
        context = distaff.LoadBalancerContext()
        context.add_worker(meta("a"), connection())

        # Act
        context.update_worker(meta("zzz"))

        # Assert
        assert [m.uid for m in context.workers] == ["a"]

    def test_remove_returns_connection_of_worker_with_that_uid(self) -> None:
        # Arrange
        context = distaff.LoadBalancerContext()
        a = connection()
        context.add_worker(meta("a"), a)
        context.add_worker(meta("b"), connection())

        # Act: matched by uid, not by the whole metadata
        removed = context.remove_worker(meta("a", address="elsewhere:9"))

        # Assert
        assert removed is a
        assert [m.uid for m in context.workers] == ["b"]

    def test_remove_of_unknown_uid_returns_none(self) -> None:
        # Arrange
        context = distaff.LoadBalancerContext()

        # Act
        removed = context.remove_worker(meta("a"))

        # Assert
        assert removed is None

    def test_context_satisfies_both_the_view_and_the_mutable_protocol(self) -> None:
        # Arrange / Act
        context = distaff.LoadBalancerContext()

        # Assert
        assert isinstance(context, distaff.LoadBalancerContextView)
        assert isinstance(context, distaff.LoadBalancerContextLike)

"""@actor at decoration time: what becomes remote, what is refused."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest

import distaff


def test_async_methods_become_remote_and_the_class_stays_local() -> None:
    @distaff.actor
    class Store:
        def __init__(self) -> None:
            self.items: list[int] = []

        async def put(self, item: int) -> None:
            self.items.append(item)

        async def scan(self) -> AsyncGenerator[int, None]:
            for item in self.items:
                yield item

        def _helper(self) -> int:  # private plain def: fine, it is not remote
            return len(self.items)

        @property
        def size(self) -> int:
            return len(self.items)

    store = Store()

    assert store.size == 0
    assert callable(Store.spawn)  # type: ignore[attr-defined]
    assert Store.__distaff_actor__.methods == {"put": False, "scan": True}  # type: ignore[attr-defined]
    assert Store.__distaff_actor__.concurrency == 1  # type: ignore[attr-defined]


def test_a_public_plain_def_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"Blocking\.compute is a plain 'def'"):

        @distaff.actor
        class Blocking:
            def compute(self) -> int:
                return 1


@pytest.mark.parametrize("name", ["spawn", "close"])
def test_a_class_defining_spawn_or_close_is_refused(name: str) -> None:
    async def method(self: Any) -> None:
        return None

    cls = type("Clash", (), {name: method})

    with pytest.raises(TypeError, match=f"Clash.*{name}"):
        distaff.actor(cls)


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True, "2"])
def test_a_bad_concurrency_is_refused(concurrency: Any) -> None:
    with pytest.raises(ValueError, match="concurrency must be a positive int or None"):
        distaff.actor(concurrency=concurrency)


def test_only_classes_can_be_actors() -> None:
    async def not_a_class() -> None:
        return None

    with pytest.raises(TypeError, match="decorates a class"):
        distaff.actor(not_a_class)  # type: ignore[arg-type]


def test_a_subclass_of_an_actor_can_be_an_actor_with_other_turns() -> None:
    @distaff.actor
    class Base:
        async def get(self) -> int:
            return 1

    @distaff.actor(concurrency=None)
    class Derived(Base):
        async def put(self) -> None:
            return None

    assert Derived.__distaff_actor__.methods == {"get": False, "put": False}  # type: ignore[attr-defined]
    assert Derived.__distaff_actor__.concurrency is None  # type: ignore[attr-defined]

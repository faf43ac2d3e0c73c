"""distaff.ContextVar: values travel to the routine and back, as with a local await."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

import distaff

from . import context_routines as cr


@pytest.fixture
async def pool() -> AsyncIterator[distaff.WorkerPool]:
    async with distaff.WorkerPool(spawn=2) as pool:
        yield pool


@pytest.fixture(autouse=True)
def clean_context() -> None:
    # each test starts from the defaults: run it in a fresh context copy
    cr.request_id.set("none")
    cr.hops.set(0)


async def test_the_caller_value_is_seen_by_the_routine(pool: distaff.WorkerPool) -> None:
    cr.request_id.set("req-1")

    assert await cr.read() == "req-1"


# each parity test runs the async def routine and its plain def twin
async_or_plain = pytest.mark.parametrize("plain", [False, True], ids=["async", "plain"])


@async_or_plain
async def test_a_value_set_by_the_routine_comes_back_like_a_local_await(
    pool: distaff.WorkerPool, plain: bool
) -> None:
    cr.request_id.set("req-2")

    before = await (cr.set_and_return_plain if plain else cr.set_and_return)("from-worker")

    assert before == "req-2"
    assert cr.request_id.get() == "from-worker"


@async_or_plain
async def test_values_set_before_a_failure_come_back_with_the_error(
    pool: distaff.WorkerPool, plain: bool
) -> None:
    with pytest.raises(KeyError):
        await (cr.set_then_fail_plain if plain else cr.set_then_fail)("set-then-raised")

    assert cr.request_id.get() == "set-then-raised"


@async_or_plain
async def test_a_value_the_routine_set_and_reset_does_not_come_back(
    pool: distaff.WorkerPool, plain: bool
) -> None:
    cr.request_id.set("req-4")

    between = await (cr.set_and_reset_plain if plain else cr.set_and_reset)("transient")

    assert between == "transient"
    assert cr.request_id.get() == "req-4"


async def test_plain_defs_between_nested_calls_three_deep_return_their_values(
    pool: distaff.WorkerPool,
) -> None:
    cr.request_id.set("req-5")

    seen = await cr.nest_plain(3)

    assert seen == [("req-5", 0), ("req-5", 1), ("req-5", 2)]
    assert cr.hops.get() == 3


async def test_concurrent_plain_calls_keep_their_own_values(pool: distaff.WorkerPool) -> None:
    async def one(i: int) -> tuple[str, str]:
        cr.request_id.set(f"req-{i}")
        before = await cr.set_and_return_plain(f"done-{i}")
        return before, cr.request_id.get()

    results = await asyncio.gather(*(one(i) for i in range(20)))

    assert results == [(f"req-{i}", f"done-{i}") for i in range(20)]
    assert cr.request_id.get() == "none"


async def test_nested_calls_three_deep_see_and_return_values(pool: distaff.WorkerPool) -> None:
    cr.request_id.set("req-3")

    seen = await cr.nest(3)

    assert seen == [("req-3", 0), ("req-3", 1), ("req-3", 2)]
    assert cr.hops.get() == 3


async def test_concurrent_calls_keep_their_own_values(pool: distaff.WorkerPool) -> None:
    async def one(i: int) -> tuple[str, str]:
        cr.request_id.set(f"req-{i}")  # each task has its own context copy
        seen = await cr.read()
        await cr.set_and_return(f"done-{i}")
        return seen, cr.request_id.get()

    results = await asyncio.gather(*(one(i) for i in range(20)))

    assert results == [(f"req-{i}", f"done-{i}") for i in range(20)]
    assert cr.request_id.get() == "none"  # the parent context is untouched


async def test_a_generator_reports_values_after_each_step(pool: distaff.WorkerPool) -> None:
    seen = [(i, cr.hops.get()) async for i in cr.count_steps(3)]

    assert seen == [(0, 0), (1, 1), (2, 2)]


async def test_an_unpicklable_value_is_named_at_the_call_site(pool: distaff.WorkerPool) -> None:
    cr.request_id.set(threading.Lock())  # type: ignore[arg-type]

    with pytest.raises(distaff.SerializationError, match="ContextVar 'test-request-id'"):
        await cr.read()


def test_a_name_means_one_variable() -> None:
    again: distaff.ContextVar[str] = distaff.ContextVar("test-request-id")

    assert again is cr.request_id

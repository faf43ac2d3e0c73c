"""The core path end to end: real worker processes, real gRPC."""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading
import traceback
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import Any

import pytest

import distaff
from distaff.serialization.task import new_task_id
from tests.conftest import worker_children

from ..waiting import wait_until
from . import routines as r


@pytest.fixture
async def pool() -> AsyncGenerator[distaff.WorkerPool, None]:
    async with distaff.WorkerPool(spawn=2) as pool:
        yield pool


async def test_call_returns_value_computed_in_a_worker_process(pool: distaff.WorkerPool) -> None:
    value = await r.echo({"a": [1, 2.5, None]})
    served_by = await r.pid()

    assert value == {"a": [1, 2.5, None]}
    assert served_by in pool.pids
    assert served_by != os.getpid()


async def test_calls_are_spread_over_the_workers(pool: distaff.WorkerPool) -> None:
    pids = {await r.pid() for _ in range(10)}

    assert pids == set(pool.pids)


async def test_two_thousand_concurrent_calls_lose_and_misroute_nothing(
    pool: distaff.WorkerPool,
) -> None:
    results = await asyncio.gather(*(r.echo(i) for i in range(2000)))

    assert results == list(range(2000))


async def test_current_task_is_none_in_the_caller_and_set_on_the_worker(
    pool: distaff.WorkerPool,
) -> None:
    task_id, caller, _ = await r.task_info()

    assert distaff.current_task() is None
    assert task_id[:16] == new_task_id()[:16]  # made here, with this process's prefix
    assert task_id[16:].isdigit()
    assert caller is None


async def test_nested_call_dispatches_again_and_names_its_caller(
    pool: distaff.WorkerPool,
) -> None:
    outer_id, (inner_id, inner_caller, inner_pid), outer_pid = await r.nested_info()

    assert inner_caller == outer_id
    assert inner_id != outer_id
    assert {inner_pid, outer_pid} <= set(pool.pids)


async def test_nested_call_tree_uses_every_worker(pool: distaff.WorkerPool) -> None:
    assert await r.fib(10) == 55


async def test_routine_defined_in_a_local_scope_travels_by_value(
    pool: distaff.WorkerPool,
) -> None:
    offset = 7

    @distaff.routine
    async def shifted(x: int) -> tuple[int, int]:
        return x + offset, os.getpid()

    value, served_by = await shifted(1)

    assert value == 8
    assert served_by in pool.pids


async def test_methods_run_remotely(pool: distaff.WorkerPool) -> None:
    counter = r.Counter(10)

    assert (await counter.add(5))[0] == 15
    assert (await counter.add(5))[1] in pool.pids
    assert await r.Counter.make(3) == ("Counter", 3)
    assert await r.Counter.double(21) == 42
    assert await counter.double(2) == 4
    assert [i async for i in counter.upto(13)] == [10, 11, 12]


async def test_a_method_routine_works_on_a_copy_of_self_per_call(
    pool: distaff.WorkerPool,
) -> None:
    # documented (README, routine docstring): self travels pickled with each call
    counter = r.Counter(0)

    results = [await counter.increment() for _ in range(3)]

    assert results == [1, 1, 1]
    assert counter.start == 0


async def test_an_open_file_argument_arrives_as_a_snapshot_of_its_contents(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    # documented (README): cloudpickle sends an open text file as its contents
    path = tmp_path / "notes.txt"
    path.write_text("first line\nsecond line\n")
    with path.open() as f:
        assert f.readline() == "first line\n"

        kind, rest = await r.read_rest(f)

    assert (kind, rest) == ("StringIO", "second line\n")


def test_plain_generator_is_rejected_at_decoration_with_the_fix() -> None:
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="'async def' with 'yield'"):
        distaff.routine(numbers)


def test_classmethod_inside_routine_is_rejected_with_the_fix() -> None:
    async def body(cls: type) -> None: ...

    with pytest.raises(TypeError, match="outermost"):
        distaff.routine(classmethod(body))  # type: ignore[arg-type]


async def test_calling_outside_a_pool_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="WorkerPool"):
        await r.echo(1)


async def drive(gen: Any) -> list[Any]:
    """The same asend/athrow/aclose script against any async generator."""
    seen = [await gen.asend(None), await gen.asend(5), await gen.asend("x")]
    seen.append(await gen.athrow(ValueError("boom")))
    seen.append(await gen.asend(None))
    seen.append(await gen.asend(4))
    try:
        await gen.asend("stop")
    except StopAsyncIteration:
        seen.append("stopped")
    await gen.aclose()
    return seen


async def test_generator_asend_athrow_match_a_local_run(pool: distaff.WorkerPool) -> None:
    local = await drive(r._accumulate(1))
    remote = await drive(r.accumulate(1))

    assert remote == local
    assert local[-1] == "stopped"


async def test_generator_exception_from_athrow_propagates_like_locally(
    pool: distaff.WorkerPool,
) -> None:
    gen = r.countdown(3)
    assert await anext(gen) == 3

    with pytest.raises(KeyError, match="thrown"):
        await gen.athrow(KeyError("thrown"))
    with pytest.raises(StopAsyncIteration):
        await anext(gen)


async def test_generator_streams_all_items(pool: distaff.WorkerPool) -> None:
    assert [i async for i in r.countdown(5)] == [5, 4, 3, 2, 1]


async def test_generator_aclose_runs_the_remote_finally(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "closed"
    gen = r.stream_then_mark(str(marker))
    assert [await anext(gen) for _ in range(3)] == [0, 1, 2]

    await gen.aclose()

    await wait_until(marker.exists)
    assert int(marker.read_text()) in pool.pids


async def local_failure() -> BaseException:
    try:
        await r._fail("bolts")
    except r.StockError as exc:
        return exc
    raise AssertionError("did not raise")


async def test_remote_exception_matches_a_local_one(pool: distaff.WorkerPool) -> None:
    local = await local_failure()

    with pytest.raises(r.StockError) as caught:
        await r.fail("bolts")
    remote = caught.value

    assert type(remote) is type(local)
    assert remote.args == local.args
    assert (remote.item, remote.missing) == ("bolts", 3)
    assert remote.__notes__ == local.__notes__
    assert type(remote.__cause__) is KeyError
    assert remote.__cause__.args == local.__cause__.args  # type: ignore[union-attr]
    remote_frames = [f.name for f in traceback.extract_tb(remote.__traceback__)]
    assert "_fail" in remote_frames
    assert any("routines.py" in f.filename for f in traceback.extract_tb(remote.__traceback__))


async def test_unpicklable_argument_fails_at_the_call_site_naming_it(
    pool: distaff.WorkerPool,
) -> None:
    before = [c.statistics() for c in pool.proxy.context.workers.values()]

    with pytest.raises(distaff.SerializationError, match=r"keyword argument 'lock'.*lock"):
        await call_with_lock()

    after = [c.statistics() for c in pool.proxy.context.workers.values()]
    assert after == before  # no worker was contacted


async def call_with_lock() -> None:
    @distaff.routine
    async def takes(value: int, *, lock: Any) -> None: ...

    await takes(1, lock=threading.Lock())


async def test_cancelling_the_caller_cancels_the_routine_on_the_worker(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "marker"
    call = asyncio.ensure_future(r.sleep_then_mark(str(marker), 60))
    await wait_until(pathlib.Path(str(marker) + ".started").exists)

    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_until(marker.exists)
    assert int(marker.read_text()) in pool.pids


async def test_cancelling_a_generator_consumer_mid_stream_closes_it_remotely(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "marker"

    received: list[int] = []

    async def consume() -> None:
        async for item in r.stream_then_mark(str(marker)):
            received.append(item)  # noqa: PERF401 (the test watches it grow)

    consumer = asyncio.ensure_future(consume())
    await wait_until(lambda: len(received) >= 3)  # mid-stream
    consumer.cancel()

    with pytest.raises(asyncio.CancelledError):
        await consumer
    await wait_until(marker.exists)


async def test_pool_leaves_no_worker_after_a_clean_exit() -> None:
    async with distaff.WorkerPool(spawn=2) as pool:
        pids = pool.pids
        assert set(pids) <= worker_children()

    assert not set(pids) & worker_children()


async def test_pool_leaves_no_worker_when_the_block_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        async with distaff.WorkerPool(spawn=2) as pool:
            pids = pool.pids
            await r.echo(1)
            _ = 1 / 0

    assert not set(pids) & worker_children()


async def test_pool_runs_a_routine_coroutine_factory(pool: distaff.WorkerPool) -> None:
    factories: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        lambda: r.echo(1),
        lambda: r.Counter.double(2),
    ]

    assert [await f() for f in factories] == [1, 4]


async def test_leaving_the_pool_lets_calls_in_flight_finish(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "marker"
    async with distaff.WorkerPool(spawn=2, grace=10):
        call = asyncio.ensure_future(r.sleep_then_mark(str(marker), 1.0))
        await wait_until(pathlib.Path(str(marker) + ".started").exists)

    assert await call == "finished"


async def test_leaving_the_pool_cancels_calls_past_the_grace_with_a_clear_error(
    tmp_path: pathlib.Path,
) -> None:
    marker = tmp_path / "marker"
    async with distaff.WorkerPool(spawn=1, grace=0.5):
        call = asyncio.ensure_future(r.sleep_then_mark(str(marker), 60))
        await wait_until(pathlib.Path(str(marker) + ".started").exists)

    with pytest.raises(distaff.RpcError, match="stopped before the call finished"):
        await call
    assert marker.exists()  # the routine's finally ran on the worker


async def test_a_shipped_proxy_idle_on_a_worker_is_stopped_and_restarts_on_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTAFF_PROXY_IDLE", "0.3")  # read by the spawned workers
    async with distaff.WorkerPool(spawn=1):
        await r.nested_info()  # the worker's proxy starts for the nested call
        assert await r.proxy_started()

        async with asyncio.timeout(10):
            while await r.proxy_started():  # proxy_started itself dispatches nothing
                await asyncio.sleep(0.05)

        outer, (_, inner_caller, _), _ = await r.nested_info()  # restarts on demand
        assert inner_caller == outer

"""Plain def routines run in worker threads; blocking async routines are reported."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator

import pytest

import distaff

from . import fanout_routines as f


@pytest.fixture
async def pool() -> AsyncGenerator[distaff.WorkerPool, None]:
    async with distaff.WorkerPool(spawn=2) as pool:
        yield pool


async def test_quick_calls_do_not_wait_for_a_sleeping_plain_function(
    pool: distaff.WorkerPool,
) -> None:
    sleeper = asyncio.ensure_future(f.nap(3))
    try:
        async with asyncio.timeout(10):
            while pool.proxy.in_flight() < 1:
                await asyncio.sleep(0.01)
        started = time.monotonic()

        results = await asyncio.gather(*(f.square(i) for i in range(40)))

        elapsed = time.monotonic() - started
        assert results == [i * i for i in range(40)]
        assert elapsed < 2.0  # half of them went to the sleeper's worker
        assert not sleeper.done()
        assert await sleeper in pool.pids
    finally:
        sleeper.cancel()
        await asyncio.gather(sleeper, return_exceptions=True)


async def test_plain_function_runs_in_a_worker_thread_and_sees_its_task(
    pool: distaff.WorkerPool,
) -> None:
    value, thread = await f.square_plain(7)
    task_id, attempt = await f.plain_task_info()

    assert value == 49
    assert thread.startswith("distaff-plain")
    assert len(task_id) == 32
    assert attempt == 0


async def test_plain_and_async_methods_are_routines(pool: distaff.WorkerPool) -> None:
    scaler = f.Scaler(3)

    assert await scaler.scale(5) == 15
    assert await scaler.scale_async(5) == 15


async def test_cancelling_a_running_plain_function_returns_promptly(
    pool: distaff.WorkerPool,
) -> None:
    call = asyncio.ensure_future(f.nap(5))
    async with asyncio.timeout(10):
        while pool.proxy.in_flight() < 1:
            await asyncio.sleep(0.01)
    started = time.monotonic()

    call.cancel()
    await asyncio.gather(call, return_exceptions=True)

    assert call.cancelled()
    assert time.monotonic() - started < 1.0  # the thread sleeps on; the caller does not wait
    assert await f.square(3) == 9


async def test_a_routine_blocking_the_loop_is_named_in_one_warning(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with distaff.WorkerPool(spawn=1):
        await f.hog(0.3)
        await f.hog(0.3)
        await f.hog_again(0.3)
        seen = ""
        async with asyncio.timeout(10):
            while "'hog_again'" not in seen:
                await asyncio.sleep(0.02)
                seen += capfd.readouterr().err

    hog_lines = [line for line in seen.splitlines() if "routine 'hog' " in line]
    assert len(hog_lines) == 1
    assert "fanout_routines.py" in hog_lines[0]
    assert re.search(r"blocked the event loop for \d+\.\d\d s", hog_lines[0])

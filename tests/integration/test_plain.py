"""Plain def routines run in worker threads; blocking async routines are reported."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator

import pytest

import distaff
from distaff.serialization.task import new_task_id

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
    assert task_id[:16] == new_task_id()[:16]  # made here, with this process's prefix
    assert task_id[16:].isdigit()
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
    # without forwarded output the caller cannot be told: the worker says it
    async with distaff.WorkerPool(spawn=1, forward_output=False):
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
    assert re.search(r"blocked the event loop .* for \d+\.\d\d s", hog_lines[0])


def _blocking_warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "distaff" and r.levelno == logging.WARNING and f"'{name}'" in r.getMessage()
    ]


async def test_the_caller_is_warned_once_of_a_routine_blocking_the_loop(
    pool: distaff.WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distaff")

    pids = {await f.block_until_return(0.3) for _ in range(5)}
    await f.sleep_plain(0.3)

    warnings = _blocking_warnings(caplog, "block_until_return")
    assert len(pids) == 2  # both workers blocked, and each told the caller
    assert len(warnings) == 1
    assert "fanout_routines.py" in warnings[0]
    assert re.search(
        r"blocked the event loop of distaff worker pid \d+ .* for 0\.\d\d s", warnings[0]
    )
    assert _blocking_warnings(caplog, "sleep_plain") == []


async def test_a_call_still_running_after_blocking_is_reported_too(
    pool: distaff.WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distaff")

    for _ in range(3):  # one is enough; more make a watchdog starved of CPU harmless
        await f.block_then_await(0.3)

    assert len(_blocking_warnings(caplog, "block_then_await")) == 1


async def test_a_nested_call_blocking_a_loop_warns_the_first_caller(
    pool: distaff.WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distaff")

    for _ in range(3):
        await f.call_block_nested(0.3)

    assert len(_blocking_warnings(caplog, "block_nested")) == 1
    assert _blocking_warnings(caplog, "call_block_nested") == []

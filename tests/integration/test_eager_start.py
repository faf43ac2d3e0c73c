"""A call's first step runs as its own task, whether or not it starts eagerly.

On Python 3.12+ a worker runs each call's first step in the turn that read
its Start (``asyncio.eager_task_factory``); on 3.11 it schedules the task.
Either way a routine must see what a local ``await`` gives it: its own task,
its own context, timeouts and cancellation that work from the first line.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

import distaff
from distaff.runtime.worker import service

from . import routines as r


async def test_start_task_runs_the_first_step_now_on_3_12_and_later() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def no_await() -> None:
        seen.append("ran")

    async def awaits() -> None:
        seen.append("first step")
        await asyncio.sleep(0)
        seen.append("second step")

    quick = service._start_task(loop, no_await())
    eager = sys.version_info >= (3, 12)
    assert quick.done() is eager
    assert seen == (["ran"] if eager else [])
    slow = service._start_task(loop, awaits())
    assert seen == (["ran", "first step"] if eager else [])
    assert not slow.done()
    await asyncio.gather(quick, slow)
    assert seen == ["ran", "first step", "second step"]


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_each_call_is_its_own_task_with_its_own_context(event_loop: str) -> None:
    pytest.importorskip("uvloop")
    async with distaff.WorkerPool(spawn=1, event_loop=event_loop):
        # at once: the Starts share envelopes, so first steps run back to back
        answers = await asyncio.gather(
            *(r.own_task(f"call {n}", 0.05 if n % 2 else 0.0) for n in range(8))
        )
        assert len({name for _, name, _, _ in answers}) == 8  # eight tasks
        for n, (coroutine, _, found, after) in enumerate(answers):
            assert coroutine == "WorkerService._run"  # not the session's reader
            assert found == "unset"  # no other call's context leaked in
            assert after == f"call {n}"
        assert await r.times_out_in_first_step(0.05) == "timed out"

"""Load-aware balancing and workers that say "busy", on real pools."""

from __future__ import annotations

import asyncio
import collections
import pathlib

import pytest

import distaff

from . import fault_routines as fr
from . import load_routines as lr


async def test_a_burst_in_one_tick_spreads_evenly_over_idle_workers() -> None:
    async with distaff.WorkerPool(spawn=4, loadbalancer=distaff.LeastLoadedLoadBalancer):
        pids = await asyncio.gather(*(lr.nap(0.3) for _ in range(100)))

    counts = collections.Counter(pids)
    assert len(counts) == 4
    assert all(24 <= n <= 26 for n in counts.values()), counts


async def test_least_loaded_keeps_quick_calls_off_a_stuck_worker() -> None:
    """One worker of two blocked for 2 s: quick calls go to the other one."""
    balancer = distaff.LeastLoadedLoadBalancer
    async with distaff.WorkerPool(spawn=2, loadbalancer=balancer) as pool:
        stuck = asyncio.create_task(lr.hog(2.0))
        async with asyncio.timeout(10):
            while pool.proxy.in_flight() < 1:  # the hog was handed to a worker
                await asyncio.sleep(0.001)
        quick = [await lr.nap(0.01) for _ in range(40)]
        hog_pid = await stuck

    assert sum(pid != hog_pid for pid in quick) == 40


async def test_a_busy_worker_refuses_and_the_call_waits_for_a_free_one(
    tmp_path: pathlib.Path,
) -> None:
    markers = [tmp_path / "first", tmp_path / "second"]
    started = [pathlib.Path(f"{marker}.started") for marker in markers]

    def running() -> set[int]:
        """PIDs of the workers the two blocks run on, once both have started."""
        texts = [path.read_text() if path.exists() else "" for path in started]
        return {int(text) for text in texts} if all(texts) else set()

    async with distaff.WorkerPool(spawn=2, max_concurrency=1) as pool:
        blocks = [asyncio.create_task(fr.block(str(marker), 2.0)) for marker in markers]
        # both run on a worker: handed over is not enough, since a later call
        # could reach a worker ahead of one still on its way, run, and be gone
        await fr.wait_until(lambda: bool(running()) or any(b.done() for b in blocks))
        pids = running()
        assert len(pids) == 2, blocks  # one each: the limit is one call per worker

        third = await lr.nap(0.0)  # every worker is busy: it waits, then runs

        assert await asyncio.gather(*blocks) == ["finished", "finished"]
        assert third in pids
        refused = sum(c.statistics().failed for c in pool.proxy.context.workers.values())
        assert refused >= 1  # at least one busy refusal happened on the way


async def test_a_call_that_finds_every_worker_busy_times_out_within_its_dispatch_timeout(
    tmp_path: pathlib.Path,
) -> None:
    marker = tmp_path / "running"
    async with distaff.WorkerPool(spawn=1, max_concurrency=1):
        running = asyncio.create_task(fr.block(str(marker), 3.0))
        # the call runs on the worker (handed over is not enough: a call still
        # on its way could lose the worker to the next one)
        started = pathlib.Path(f"{marker}.started")
        await fr.wait_until(lambda: started.exists() or running.done())
        assert not running.done(), running

        with pytest.raises(TimeoutError), distaff.RuntimeContext(dispatch_timeout=0.3):
            await lr.nap(0.0)

        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_the_limit_holds_for_calls_that_arrive_in_one_message() -> None:
    """Eight calls sent in one tick reach the worker together (one message,
    or a few); it runs two at a time and refuses the rest, which wait and
    come back. The limit is checked against calls started earlier in the
    same message, whether their tasks start eagerly (3.12+) or not."""
    async with distaff.WorkerPool(spawn=1, max_concurrency=2):
        await lr.nap(0.0)  # connect first: the eight go out together
        most = await asyncio.gather(*(lr.count_running(0.2) for _ in range(8)))

    assert max(most) == 2


async def test_workers_report_their_load_on_replies() -> None:
    async with distaff.WorkerPool(spawn=1, max_concurrency=8) as pool:
        await lr.nap(0.0)
        (connection,) = pool.proxy.context.workers.values()

        stats = connection.statistics()

    assert stats.reported_capacity == 8
    assert stats.reported_running is not None
    assert stats.latency > 0


async def test_service_time_divides_each_call_by_the_calls_queued_ahead_of_it() -> None:
    """A worker that runs one call at a time: four calls sent at once end at
    0.1, 0.2, 0.3 and 0.4 s; the latency average peaks at the last, while the
    time per call stays near 0.1 s."""
    async with distaff.WorkerPool(spawn=1) as pool:
        await lr.nap(0.0)  # connect first: the four go out together
        await asyncio.gather(*(lr.take_turns(0.1) for _ in range(4)))
        (connection,) = pool.proxy.context.workers.values()

        stats = connection.statistics()

    assert stats.latency >= 0.35
    assert 0.08 <= stats.service_time <= 0.2
    assert stats.service_time == connection.service_time

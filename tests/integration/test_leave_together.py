"""A pool's workers stop together: drain, report, and exit at the parent's word.

Ending every worker-to-worker session one by one is most of the cost of
stopping a large pool that made nested calls; workers that stop with their
whole pool skip it, but only once nothing is owed to anyone waiting.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
from typing import Any

import grpc.aio
import pytest

import distaff
from distaff.runtime.worker.process import WorkerProcess
from distaff.runtime.worker.server import WorkerConfig
from distaff.runtime.worker.supervisor import WorkerSupervisor
from distaff.serialization.rpc import call_describe

from ..waiting import wait_until
from . import routines as r
from .fault_routines import alive
from .test_session_regressions import proxy_to

_BULK = 4 << 20  # each nested answer: 4 MiB


async def test_a_worker_asked_to_leave_drains_reports_and_waits_for_the_word_to_go(
    tmp_path: pathlib.Path,
) -> None:
    process = WorkerProcess(WorkerConfig(grace=10.0))
    try:
        metadata = await process.start()
        async with proxy_to(metadata):
            marker = str(tmp_path / "m")
            call = asyncio.ensure_future(r.sleep_then_mark(marker, 1.0))
            await wait_until(pathlib.Path(marker + ".started").exists)

            assert process.leave_together()
            drained = asyncio.ensure_future(process.drained())
            await asyncio.sleep(0)
            assert not drained.done()  # its call has most of a second to go

            assert await call == "finished"  # the drain lets it finish; its answer arrives
            async with asyncio.timeout(10):
                await drained
            # drained, and serving until the word: it answers, and says it drains
            channel = grpc.aio.insecure_channel(metadata.address)
            try:
                assert (await call_describe(channel, timeout=5)).draining
            finally:
                await channel.close()

            process.go()
            async with asyncio.timeout(10):
                assert await process.wait() == 0
    finally:
        await process.kill()


async def test_nested_calls_in_flight_when_a_pool_exits_finish_on_every_worker(
    tmp_path: pathlib.Path,
) -> None:
    # every worker drains, and none exits before all have: the naps' answers
    # (large, so that they are still being written when the naps end) reach
    # the worker that waits for them, and its answer reaches the caller
    marker = str(tmp_path / "m")
    async with distaff.WorkerPool(spawn=4, grace=10) as pool:
        pids = set(pool.pids)
        call = asyncio.ensure_future(r.naps_elsewhere(marker, 8, 1.5, _BULK))
        await wait_until(pathlib.Path(marker + ".started").exists)

    outer, inner, received = await call
    assert outer in pids
    assert len(inner) == 8
    assert set(inner) <= pids
    assert received == 8 * _BULK


@pytest.mark.parametrize("own_discovery", [True, False])
async def test_only_a_pool_with_its_own_discovery_stops_its_workers_together(
    own_discovery: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    # observed, not replaced: the real stop runs either way
    seen: list[Any] = []
    stop = WorkerSupervisor.stop

    async def observed(self: WorkerSupervisor, **kwargs: Any) -> None:
        seen.append(kwargs.get("answered"))
        await stop(self, **kwargs)

    monkeypatch.setattr(WorkerSupervisor, "stop", observed)
    options: dict[str, Any] = {}
    if not own_discovery:  # others may follow it, and call the workers
        options["discovery"] = distaff.LocalDiscovery("together", root=str(tmp_path))
    async with distaff.WorkerPool(spawn=2, **options):
        assert await r.echo(1) == 1

    assert len(seen) == 1
    assert (seen[0] is not None) is own_discovery


async def test_a_worker_that_dies_while_its_pool_stops_together_does_not_hold_the_stop(
    tmp_path: pathlib.Path,
) -> None:
    marker = tmp_path / "m"

    async def kill_once_the_other_drains(busy: int, other: str) -> None:
        # both are asked to leave at once; the idle one drains at once
        channel = grpc.aio.insecure_channel(other)
        try:
            async with asyncio.timeout(10):
                while not (await call_describe(channel, timeout=5)).draining:
                    await asyncio.sleep(0.01)
        finally:
            await channel.close()
        os.kill(busy, signal.SIGKILL)  # its call had most of a minute of grace to go

    async with asyncio.timeout(40):  # not the grace: the death is the dead worker's report
        async with distaff.WorkerPool(spawn=2, grace=60) as pool:
            call = asyncio.ensure_future(r.nap_marking_pid(str(marker), 60))
            await wait_until(lambda: marker.exists() and marker.read_text() != "")
            busy = int(marker.read_text())
            (other,) = [w for w in pool.proxy.workers if w.pid != busy]
            killer = asyncio.ensure_future(kill_once_the_other_drains(busy, other.address))
        await killer

    with pytest.raises(distaff.RpcError):
        await call
    assert not any(alive(pid) for pid in (busy, other.pid))

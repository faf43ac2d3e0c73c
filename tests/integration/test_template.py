"""Spawned workers fork from one warm template per pool; none outlives the pool or its caller."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap

import pytest

import distaff
from distaff.runtime.worker.process import worker_process_environment
from distaff.runtime.worker.template import WorkerTemplate

from . import routines as r
from .durable import ROOT
from .fault_routines import alive

OWNER = textwrap.dedent(
    """
    import asyncio
    import distaff

    async def main():
        async with distaff.WorkerPool(spawn=3) as pool:
            print(*pool.pids, flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


async def until_gone(pids: list[int], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while any(alive(pid) for pid in pids):
            await asyncio.sleep(0.02)


@pytest.mark.skipif(sys.platform != "linux", reason="templates are Linux only")
async def test_a_pool_forks_its_workers_from_one_template_that_goes_with_it() -> None:
    async with distaff.WorkerPool(spawn=3) as pool:
        pids = pool.pids
        (template,) = {parent_of(pid) for pid in pids}
        assert template != os.getpid()
        assert b"distaff.runtime.worker._template" in cmdline(template)
        assert {await r.pid() for _ in range(30)} == set(pids)
    assert not any(alive(pid) for pid in [*pids, template])


@pytest.mark.skipif(sys.platform != "linux", reason="templates are Linux only")
async def test_a_killed_caller_leaves_neither_workers_nor_template() -> None:
    caller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OWNER, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert caller.stdout is not None
        async with asyncio.timeout(60):
            pids = [int(p) for p in (await caller.stdout.readline()).split()]
        template = parent_of(pids[0])
        caller.send_signal(signal.SIGKILL)  # no chance to clean up
    finally:
        if caller.returncode is None:
            caller.kill()
        await caller.wait()
    await until_gone([*pids, template])  # each sees its lifeline close and stops


@pytest.mark.skipif(sys.platform != "linux", reason="templates are Linux only")
async def test_the_exit_status_of_a_forked_worker_reaches_the_supervisor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="distaff.pool")
    async with distaff.WorkerPool(spawn=2) as pool:
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        async with asyncio.timeout(20):
            while victim in pool.pids or len(pool.pids) < 2:
                await asyncio.sleep(0.02)
    assert any(f"pid {victim}) was killed by SIGKILL" in m for m in caplog.messages)


@pytest.mark.skipif(sys.platform != "linux", reason="templates are Linux only")
async def test_workers_that_die_at_once_are_all_reaped_and_reported() -> None:
    # Many SIGCHLDs at once while the template waits for its next request:
    # each child must be reaped and its exit reported now, not at the next
    # fork (with restart=False no fork follows). A pool's workers that stop
    # together exit like this.
    for _ in range(3):
        async with distaff.WorkerPool(spawn=8, restart=False) as pool:
            pids = pool.pids
            assert len(pids) == 8
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                while pool.pids:  # the template's exit reports
                    await asyncio.sleep(0.01)
        assert not any(alive(pid) for pid in pids)


@pytest.mark.skipif(sys.platform != "linux", reason="templates are Linux only")
async def test_a_template_that_does_not_go_when_closed_is_killed_and_reaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    template = WorkerTemplate()
    await template.start(sys.path, worker_process_environment())
    process = template._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # the template we started: it never sees the end
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        async with asyncio.timeout(20):
            await template.aclose()  # waits its 5 s, then SIGKILL
    assert process.returncode == -signal.SIGKILL
    assert not alive(process.pid)
    assert not [r for r in caplog.records if r.name == "asyncio"]

"""A pool leaves nothing in the local discovery root, even when its caller is killed."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys
import textwrap

import pytest

import distaff
from distaff.runtime.discovery.local import LocalDiscovery

from .durable import ROOT
from .fault_routines import alive

OWNER = textwrap.dedent(
    """
    import asyncio, sys
    import distaff

    async def main():
        async with distaff.WorkerPool(spawn=1) as pool:
            print(pool.discovery.directory, *pool.pids, flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def until_gone(pid: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while alive(pid):
            await asyncio.sleep(0.02)


async def test_a_pool_removes_its_private_namespace_on_exit() -> None:
    async with distaff.WorkerPool(spawn=2) as pool:
        assert isinstance(pool.discovery, LocalDiscovery)
        directory = pathlib.Path(pool.discovery.directory)
        assert directory.name.startswith("pool-")
        assert len(list(directory.glob("*.worker"))) == 2

    assert not directory.exists()


async def test_a_pool_whose_workers_fail_to_start_removes_its_private_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONHOME", "/nonexistent-distaff-test")  # no interpreter starts
    pool = distaff.WorkerPool(spawn=1)
    directory = pathlib.Path(pool.discovery.directory)  # type: ignore[attr-defined]

    with pytest.raises(distaff.WorkerStartError):
        async with pool:
            pass

    assert not directory.exists()


async def test_the_namespace_of_a_killed_caller_is_removed_by_the_next_pool() -> None:
    caller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OWNER, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert caller.stdout is not None
        async with asyncio.timeout(60):
            directory, worker = (await caller.stdout.readline()).decode().split()
        caller.send_signal(signal.SIGKILL)  # no chance to clean up
    finally:
        if caller.returncode is None:
            caller.kill()
        await caller.wait()
    await until_gone(int(worker))  # it sees its parent go and stops
    assert os.path.isdir(directory)

    async with distaff.WorkerPool(spawn=1):
        assert not os.path.exists(directory)

"""What a pool costs when idle and when large: sockets let go, a quiet prompt teardown."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import distaff

from ..waiting import wait_until
from . import routines as r
from .sockets import accepted_ipc, established

ROOT = pathlib.Path(__file__).resolve().parents[2]


def callers_ipc_sessions(pool: distaff.WorkerPool) -> int:
    membership = pool.proxy._membership
    assert membership is not None
    return sum(
        c.via_ipc and c._driver is not None and c._driver.error is None
        for c in membership.context.workers.values()
    )


async def test_an_idle_shipped_proxy_closes_its_connections_with_no_further_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTAFF_PROXY_IDLE", "0.5")  # read by the spawned workers
    async with distaff.WorkerPool(spawn=2) as pool:
        await asyncio.gather(*(r.nested_info() for _ in range(4)))

        def only_the_callers() -> bool:
            # each of the caller's sessions ends in one worker socket: TCP, or
            # accepted on the worker's Unix socket
            held = sum(established(pid) + accepted_ipc(pid) for pid in pool.pids)
            return held == established(os.getpid()) + callers_ipc_sessions(pool)

        assert not only_the_callers()  # the nested calls' connections are open
        # nothing is dispatched from here on: the workers let go by themselves
        await wait_until(only_the_callers)


BIG_POOL_NESTED = """
    import asyncio, os, distaff

    @distaff.routine
    async def one() -> int:
        return 1

    @distaff.routine
    async def fan(n: int) -> int:
        return sum(await asyncio.gather(*(one() for _ in range(n))))

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    async def main() -> None:
        async with distaff.WorkerPool(spawn=32) as pool:
            pids = pool.pids
            done = await asyncio.gather(*(fan(32) for _ in range(32)))
            assert sum(done) == 32 * 32, done
        print([pid for pid in pids if alive(pid)])

    asyncio.run(main())
"""


@pytest.mark.slow  # 32 workers
def test_a_32_worker_pool_left_right_after_nested_calls_is_gone_and_quiet() -> None:
    # every worker's shipped proxy is connected when the block exits; CPU
    # contention on a shared machine would make the loop monitor warn about
    # the calls (not what this test is about), so it is off
    env = dict(os.environ, DISTAFF_LOOP_BLOCK_THRESHOLD="0")
    script = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BIG_POOL_NESTED)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert (script.returncode, script.stderr) == (0, "")
    assert script.stdout.strip() == "[]"  # no worker outlived the block

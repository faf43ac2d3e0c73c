"""A pool replaces the spawned workers that die, within a restart limit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

import distaff

from . import routines as r
from .fault_routines import alive


async def served_by(pid: int, timeout: float = 20.0) -> None:
    """Call until a call runs on ``pid`` (the worker is admitted and serves)."""
    async with asyncio.timeout(timeout):
        while await r.pid() != pid:
            pass


async def until(condition: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_a_sigkilled_spawned_worker_is_replaced_and_calls_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with distaff.WorkerPool(spawn=2) as pool:
        victim, survivor = pool.pids

        os.kill(victim, signal.SIGKILL)

        await until(lambda: len(pool.pids) == 2 and victim not in pool.pids)
        (replacement,) = set(pool.pids) - {survivor}
        await served_by(replacement)
        assert {await r.pid() for _ in range(20)} == {replacement, survivor}
        assert len(pool.proxy.workers) == 2
    assert not alive(replacement)
    assert any(f"pid {victim}" in m and "restarting" in m for m in caplog.messages)


async def test_a_pool_without_restart_shrinks_when_a_worker_dies() -> None:
    async with distaff.WorkerPool(spawn=2, restart=False) as pool:
        victim, survivor = pool.pids

        os.kill(victim, signal.SIGKILL)

        await until(lambda: pool.pids == [survivor])
        await pool.proxy.wait_for(lambda ws: [m.pid for m in ws] == [survivor], timeout=10)
        assert {await r.pid() for _ in range(10)} == {survivor}
        await asyncio.sleep(0.5)  # a restart would have come by now (backoff 0.1 s)
        assert pool.pids == [survivor]


async def test_a_worker_that_keeps_crashing_at_start_is_given_up_with_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="distaff.pool")
    async with distaff.WorkerPool(spawn=1) as pool:
        (victim,) = pool.pids
        # from now on a new worker's interpreter cannot even start
        monkeypatch.setenv("PYTHONHOME", "/nonexistent-distaff-test")

        os.kill(victim, signal.SIGKILL)

        await until(lambda: any("giving up" in m for m in caplog.messages), timeout=30)
        (gave_up,) = [m for m in caplog.messages if "giving up" in m]
        assert "after 5 restarts in a row" in gave_up
        assert "with 0 workers" in gave_up
        restarts = [m for m in caplog.messages if "restarting spawned worker" in m]
        assert len(restarts) == 5
        assert pool.pids == []

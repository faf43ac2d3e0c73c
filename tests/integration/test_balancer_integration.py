"""Balancers with real worker processes: custom, legacy, and a worker that dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

import distaff

from . import balancer_routines as routines


async def exited(pidfd: int, timeout: float = 10.0) -> None:
    """Wait until the process behind ``pidfd`` has exited."""
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await gone
    finally:
        loop.remove_reader(pidfd)


async def test_custom_balancer_routes_nested_calls_on_the_worker() -> None:
    # Arrange
    routines.offers.clear()
    async with distaff.WorkerPool(spawn=2, loadbalancer=routines.RecordingBalancer) as pool:
        uid_of = {m.pid: m.uid for m in pool.proxy.workers}

        # Act
        outer, inner, offers_on_worker = await routines.where_nested()

    # Assert: the caller chose the outer worker; the outer worker's own copy
    # of the balancer chose the inner one
    assert routines.offers == [(os.getpid(), uid_of[outer])]
    assert inner in uid_of
    assert offers_on_worker == [(outer, uid_of[inner])]


async def test_legacy_dispatching_balancer_works_end_to_end_and_warns() -> None:
    # Arrange
    balancer = routines.LegacyBalancer()
    async with contextlib.AsyncExitStack() as stack:
        with pytest.warns(DeprecationWarning, match="DelegatingLoadBalancerLike"):
            pool = await stack.enter_async_context(
                distaff.WorkerPool(spawn=2, loadbalancer=balancer)
            )

        # Act
        served = [await routines.where() for _ in range(4)]

        # Assert
        assert set(served) == set(pool.pids)
    assert balancer.dispatched == 4


async def test_killed_worker_is_passed_over_and_calls_keep_succeeding() -> None:
    async with distaff.WorkerPool(spawn=2) as pool:
        # Arrange: both workers have served, so both connections are open
        victim, survivor = pool.pids
        assert {await routines.where() for _ in range(4)} == {victim, survivor}
        pidfd = os.pidfd_open(victim)
        try:
            # Act
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            await exited(pidfd)
            served, lost = [], 0
            for _ in range(6):
                try:
                    served.append(await routines.where())
                except distaff.RpcError:
                    # at most once: a call sent before the caller saw the
                    # connection die may have run, so it fails, not retries
                    lost += 1
        finally:
            os.close(pidfd)

        # Assert: at most the call racing the death is lost; the rest landed
        # on the survivor; discovery drops the dead one
        assert lost <= 1
        assert served == [survivor] * (6 - lost)
        await pool.proxy.wait_for(lambda ws: all(m.pid != victim for m in ws), timeout=10)

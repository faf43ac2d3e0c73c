"""Regressions from the transport review: each failed before the session redesign."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import uuid
from collections.abc import AsyncIterator

import pytest

import distaff
from distaff.runtime.context import current_proxy_var
from distaff.runtime.worker.process import WorkerProcess
from distaff.runtime.worker.server import WorkerConfig

from . import fault_routines as fr
from . import session_routines as sr
from .durable import DurableWorker, durable_workers, start_worker


async def test_an_unpicklable_balancer_fails_the_call_before_any_worker_runs_it(
    tmp_path: pathlib.Path,
) -> None:
    async with distaff.WorkerPool(spawn=2, loadbalancer=sr.LockedBalancer()) as pool:
        workers = pool.proxy.workers

        with pytest.raises(distaff.SerializationError, match="balancer"):
            await fr.logged_token(1, str(tmp_path), 0)

        assert list(tmp_path.iterdir()) == []  # ran nowhere
        assert pool.proxy.workers == workers  # and evicted nobody


async def test_a_call_slow_to_ack_runs_once_under_a_short_dispatch_timeout(
    tmp_path: pathlib.Path,
) -> None:
    async with distaff.WorkerPool(spawn=2):
        with distaff.RuntimeContext(dispatch_timeout=0.3):
            pid = await sr.slow_first_step(str(tmp_path), 1.0)

    runs = list(tmp_path.iterdir())
    assert len(runs) == 1
    assert runs[0].name.startswith(f"{pid}-")


async def test_proxy_dispatch_never_sends_a_written_call_again(tmp_path: pathlib.Path) -> None:
    async with distaff.WorkerPool(spawn=2) as pool:
        task = distaff.Task(
            callable=sr.slow_first_step.__wrapped__,  # type: ignore[attr-defined]
            args=(str(tmp_path), 1.0),
            proxy=pool.proxy,
        )
        stream = await pool.proxy.dispatch(task, timeout=0.3)
        pid = await anext(stream)

    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == [str(pid)]


@dataclasses.dataclass
class Switchboard:
    """A discovery subscriber the test drives: announce, drop, or fail."""

    events: asyncio.Queue[distaff.DiscoveryEvent | Exception]
    subscriptions: int = 0

    def __reduce__(self) -> tuple[object, ...]:  # ships as an empty board
        return (_empty_board, ())

    def __aiter__(self) -> AsyncIterator[distaff.DiscoveryEvent]:
        self.subscriptions += 1
        return self._follow()

    async def _follow(self) -> AsyncIterator[distaff.DiscoveryEvent]:
        while True:
            item = await self.events.get()
            if isinstance(item, Exception):
                raise item
            yield item


def _empty_board() -> Switchboard:
    return Switchboard(asyncio.Queue())


def event(kind: str, metadata: distaff.WorkerMetadata) -> distaff.DiscoveryEvent:
    return distaff.DiscoveryEvent(distaff.DiscoveryEventType[kind], metadata)


@contextlib.asynccontextmanager
async def proxy_to(
    metadata: distaff.WorkerMetadata,
) -> AsyncIterator[tuple[distaff.WorkerProxy, Switchboard]]:
    """A running proxy, current for routine calls, that has admitted the worker ``metadata``."""
    board = Switchboard(asyncio.Queue())
    proxy = distaff.WorkerProxy(board)
    token = current_proxy_var.set(proxy)
    try:
        await proxy.start()
        board.events.put_nowait(event("WORKER_ADDED", metadata))
        await proxy.wait_for(bool, 5)
        yield proxy, board
    finally:
        current_proxy_var.reset(token)
        await proxy.stop()


async def test_stopping_a_proxy_does_not_wait_for_calls_on_a_dropped_worker(
    tmp_path: pathlib.Path,
) -> None:
    process = WorkerProcess(WorkerConfig(grace=0.5))
    try:
        metadata = await process.start()
        async with proxy_to(metadata) as (proxy, board):
            marker = str(tmp_path / "m")
            call = asyncio.create_task(fr.block(marker, 30))
            async with asyncio.timeout(10):
                while not os.path.exists(marker + ".started"):
                    await asyncio.sleep(0.01)
            board.events.put_nowait(event("WORKER_DROPPED", metadata))
            await proxy.wait_for(lambda workers: not workers, 5)

            async with asyncio.timeout(3):  # the call has 27 s to go
                await proxy.stop()

            with pytest.raises(distaff.RpcError):
                await call
    finally:
        await process.stop()


async def test_a_failed_subscription_is_logged_retried_and_forgotten_on_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = Switchboard(asyncio.Queue())
    proxy = distaff.WorkerProxy(board, wait=0.5)
    metadata = distaff.WorkerMetadata(uid="w1", address="127.0.0.1:1")
    board.events.put_nowait(RuntimeError("directory vanished"))
    with caplog.at_level(logging.WARNING, logger="distaff.proxy.membership"):
        await proxy.start()
        with pytest.raises(distaff.NoWorkersAvailable, match="directory vanished"):
            await proxy.dispatch(distaff.Task(callable=fr.token))
    assert "resubscribing" in caplog.text
    assert board.subscriptions >= 2  # it came back by itself

    await proxy.stop()
    board.events.put_nowait(event("WORKER_ADDED", metadata))
    await proxy.start()
    await proxy.wait_for(bool, 5)  # no stale error from the first run
    assert proxy.workers == [metadata]
    await proxy.stop()


async def test_an_idle_check_never_stops_a_proxy_that_is_dispatching() -> None:
    board = Switchboard(asyncio.Queue())
    proxy = distaff.WorkerProxy(board, wait=5)
    await proxy.start()
    dispatching = asyncio.create_task(proxy.dispatch(distaff.Task(callable=fr.token)))
    await asyncio.sleep(0)  # let it enter and wait for a first worker

    assert not await proxy.stop_if_idle(0)
    assert proxy.started

    dispatching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dispatching
    assert await proxy.stop_if_idle(0)


async def run_lanes(workers: list[DurableWorker], lanes: int, calls: int) -> list[Exception]:
    """``lanes`` loops of 10 ms calls; SIGTERM the first worker a quarter of the way in."""
    done = 0
    failures: list[Exception] = []

    async def lane() -> None:
        nonlocal done
        while done < calls:
            done += 1
            try:
                await fr.slow_token(done, 0.01)
            except Exception as exc:
                failures.append(exc)

    async with asyncio.TaskGroup() as group:
        for _ in range(lanes):
            group.create_task(lane())
        async with asyncio.timeout(30):
            while done < calls // 4:
                await asyncio.sleep(0.005)
        status = group.create_task(workers[0].terminate())
    assert status.result() == 0
    return failures


async def test_a_sigterm_drain_loses_no_call() -> None:
    """Three durable workers, 16 lanes of 10 ms calls, one worker SIGTERMed mid-run; 3 runs."""
    for _ in range(3):
        namespace = f"drain-{uuid.uuid4().hex[:8]}"
        async with durable_workers() as workers:
            for _ in range(3):
                workers.append(
                    await start_worker(
                        "--discovery", "local", "--namespace", namespace, "--grace", "10"
                    )
                )
            async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(namespace)) as pool:
                await pool.proxy.wait_for(lambda w: len(w) == 3, 10)

                failures = await run_lanes(workers, lanes=16, calls=600)

            assert failures == []

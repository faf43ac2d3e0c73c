"""Faults: dying and frozen workers, cancellation, deadlines, graceful drain."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import time
import traceback
from collections.abc import AsyncGenerator

import pytest

import distaff

from . import fault_routines as fr
from .durable import durable_workers, start_worker


@pytest.fixture
async def pool() -> AsyncGenerator[distaff.WorkerPool, None]:
    async with distaff.WorkerPool(spawn=2) as pool:
        yield pool


def started(marker: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(f"{marker}.started")


async def pid_once_started(marker: pathlib.Path) -> int:
    """Wait for ``block`` to report it runs; return the PID it runs in."""
    await fr.wait_until(lambda: started(marker).exists() and started(marker).read_text() != "")
    return int(started(marker).read_text())


# a worker that dies


async def test_sigkilled_worker_fails_its_call_promptly_and_leaves_the_pool(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "call"
    call = asyncio.ensure_future(fr.block(str(marker), 3600))
    victim = await pid_once_started(marker)
    (survivor,) = set(pool.pids) - {victim}

    os.kill(victim, signal.SIGKILL)

    async with asyncio.timeout(10):
        with pytest.raises(distaff.WorkerLostError, match="may have run"):
            await call
    await pool.proxy.wait_for(lambda ws: all(m.pid != victim for m in ws), timeout=10)
    assert {await fr.pid() for _ in range(10)} == {survivor}


async def test_a_call_whose_worker_dies_running_it_is_not_run_again(
    tmp_path: pathlib.Path,
) -> None:
    async with distaff.WorkerPool(spawn=2) as pool:
        pids = set(pool.pids)

        async with asyncio.timeout(10):
            with pytest.raises(distaff.WorkerLostError, match="may have run"):
                await fr.log_then_die(str(tmp_path))

        ran_in = {int(path.name) for path in tmp_path.iterdir()}
        assert len(ran_in) == 1
        (survivor,) = pids - ran_in
        await pool.proxy.wait_for(lambda ws: [m.pid for m in ws] == [survivor], timeout=10)


async def test_each_call_lost_with_its_worker_gets_its_own_error(tmp_path: pathlib.Path) -> None:
    async with distaff.WorkerPool(spawn=1) as pool:
        markers = [tmp_path / f"call-{i}" for i in range(3)]
        calls = [asyncio.ensure_future(fr.block(str(m), 3600)) for m in markers]
        for marker in markers:
            await pid_once_started(marker)

        os.kill(pool.pids[0], signal.SIGKILL)
        async with asyncio.timeout(10):
            errors = await asyncio.gather(*calls, return_exceptions=True)

    lost = [e for e in errors if isinstance(e, distaff.RpcError)]
    assert len(lost) == 3
    assert len({id(e) for e in lost}) == 3
    assert len({len(traceback.extract_tb(e.__traceback__)) for e in lost}) == 1


@pytest.mark.slow  # waits for keepalive to notice
async def test_frozen_worker_fails_its_in_flight_call_within_seconds(
    tmp_path: pathlib.Path,
) -> None:
    ns = fr.namespace()
    marker = tmp_path / "call"
    async with durable_workers() as workers:
        worker = await start_worker("--discovery", "local", "--namespace", ns)
        workers.append(worker)
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)):
            call = asyncio.ensure_future(fr.block(str(marker), 3600))
            await pid_once_started(marker)
            os.kill(worker.pid, signal.SIGSTOP)  # like a host gone silent: no FIN, no RST
            try:
                async with asyncio.timeout(12):  # keepalive interval + ping timeout + margin
                    with pytest.raises(distaff.WorkerLostError, match="may have run"):
                        await call
            finally:
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
                os.kill(worker.pid, signal.SIGCONT)


@pytest.mark.slow  # waits for keepalive to notice
async def test_calls_fail_over_from_a_frozen_worker_within_seconds() -> None:
    ns = fr.namespace()
    async with durable_workers() as workers:
        frozen = await start_worker("--discovery", "local", "--namespace", ns)
        healthy = await start_worker("--discovery", "local", "--namespace", ns)
        workers += [frozen, healthy]
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)) as pool:
                await pool.proxy.wait_for(lambda ws: len(ws) == 2, timeout=10)

                async with asyncio.timeout(10):
                    served_by = {await fr.pid() for _ in range(4)}

            assert served_by == {healthy.pid}
        finally:
            os.kill(frozen.pid, signal.SIGCONT)


# cancellation reaches the routine


async def test_cancelling_while_a_generator_awaits_mid_stream_runs_its_finally(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "finally"
    gen = fr.yield_then_block(str(marker))
    assert await anext(gen) == 1
    pending = asyncio.ensure_future(anext(gen))
    await fr.wait_until(pathlib.Path(f"{marker}.blocked").exists)  # the body awaits remotely

    pending.cancel()

    with pytest.raises(asyncio.CancelledError):
        await pending
    await fr.wait_until(marker.exists)
    assert int(marker.read_text()) in pool.pids
    with pytest.raises(StopAsyncIteration):
        await anext(gen)


async def test_athrow_of_an_unhandled_error_mid_stream_runs_the_remote_finally(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "finally"
    gen = fr.yield_forever(str(marker))
    assert [await anext(gen) for _ in range(3)] == [0, 1, 2]

    with pytest.raises(LookupError, match="stop streaming"):
        await gen.athrow(LookupError("stop streaming"))

    await fr.wait_until(marker.exists)
    assert int(marker.read_text()) in pool.pids


async def test_closing_a_generator_left_open_past_its_pool_is_quiet(
    tmp_path: pathlib.Path,
) -> None:
    marker = tmp_path / "finally"
    async with distaff.WorkerPool(spawn=1):
        gen = fr.yield_forever(str(marker))
        assert await anext(gen) == 0

    await fr.wait_until(marker.exists)  # the worker closed it when the session ended
    await gen.aclose()


# deadlines


async def test_runtime_context_timeout_raises_in_time_and_cancels_the_routine(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "call"
    began = time.monotonic()

    with pytest.raises(TimeoutError), distaff.RuntimeContext(timeout=0.5):
        await fr.block(str(marker), 3600)

    assert 0.4 < time.monotonic() - began < 2.0
    await fr.wait_until(marker.exists, timeout=5)


async def test_routine_default_timeout_raises_in_time_and_cancels_the_routine(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "call"
    began = time.monotonic()

    with pytest.raises(TimeoutError):
        await fr.block_with_default_timeout(str(marker), 3600)

    assert 0.4 < time.monotonic() - began < 2.0
    await fr.wait_until(marker.exists, timeout=5)


async def test_routine_default_timeout_is_tightened_by_not_extended_by_the_context(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "call"
    began = time.monotonic()

    with pytest.raises(TimeoutError), distaff.RuntimeContext(timeout=30):
        await fr.block_with_default_timeout(str(marker), 3600)

    assert time.monotonic() - began < 2.0


async def test_nested_call_sees_the_time_remaining_of_the_outer_deadline(
    pool: distaff.WorkerPool,
) -> None:
    with distaff.RuntimeContext(timeout=5):
        outer, inner = await fr.remaining_time_nested()

    assert outer is not None
    assert inner is not None
    assert 0 < inner <= outer < 5


async def test_nested_slow_call_times_out_by_the_outer_deadline(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "inner"
    began = time.monotonic()

    with pytest.raises(TimeoutError), distaff.RuntimeContext(timeout=1.0):
        await fr.call_block(str(marker), 3600)

    assert 0.9 < time.monotonic() - began < 2.5
    await fr.wait_until(marker.exists, timeout=5)  # the inner routine was cancelled too


async def test_dispatch_timeout_with_no_worker_yet_raises_timeout_error() -> None:
    async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(fr.namespace()), wait=30):
        began = time.monotonic()

        with pytest.raises(TimeoutError), distaff.RuntimeContext(dispatch_timeout=0.5):
            await fr.pid()

    assert time.monotonic() - began < 2.0


async def test_dispatch_timeout_with_a_frozen_worker_raises_timeout_error() -> None:
    ns = fr.namespace()
    async with durable_workers() as workers:
        worker = await start_worker("--discovery", "local", "--namespace", ns)
        workers.append(worker)
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)) as pool:
            await pool.proxy.wait_for(bool, timeout=10)
            os.kill(worker.pid, signal.SIGSTOP)  # accepts TCP, never answers
            try:
                began = time.monotonic()
                with pytest.raises(TimeoutError), distaff.RuntimeContext(dispatch_timeout=0.5):
                    await fr.pid()
                elapsed = time.monotonic() - began
            finally:
                os.kill(worker.pid, signal.SIGCONT)

            assert elapsed < 2.0
            assert await fr.pid() == worker.pid  # thawed, it serves again


async def test_unreachable_only_worker_fails_fast_with_no_workers_available() -> None:
    ns = fr.namespace()
    discovery = distaff.LocalDiscovery(ns)
    publisher = discovery.publisher()
    nobody = distaff.WorkerMetadata(uid="nobody", address="127.0.0.1:1", pid=os.getpid())
    try:
        await publisher.publish(
            distaff.DiscoveryEvent(distaff.DiscoveryEventType.WORKER_ADDED, nobody)
        )
        async with distaff.WorkerPool(discovery=discovery) as pool:
            await pool.proxy.wait_for(bool, timeout=10)
            began = time.monotonic()

            with (
                pytest.raises(distaff.NoWorkersAvailable, match="Connection refused"),
                distaff.RuntimeContext(dispatch_timeout=5),
            ):
                await fr.pid()

        assert time.monotonic() - began < 2.0
    finally:
        await publisher.aclose()


# graceful drain


async def test_sigterm_drains_in_flight_calls_and_sends_new_ones_elsewhere(
    tmp_path: pathlib.Path,
) -> None:
    ns = fr.namespace()
    grace = 2.0
    async with durable_workers() as workers:
        draining = await start_worker(
            "--discovery", "local", "--namespace", ns, "--grace", str(grace)
        )
        workers.append(draining)
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)) as pool:
            short_marker, long_marker = tmp_path / "short", tmp_path / "long"
            short = asyncio.ensure_future(fr.block(str(short_marker), 1.0))
            long = asyncio.ensure_future(fr.block(str(long_marker), 3600))
            assert await pid_once_started(short_marker) == draining.pid
            assert await pid_once_started(long_marker) == draining.pid
            other = await start_worker("--discovery", "local", "--namespace", ns)
            workers.append(other)
            await pool.proxy.wait_for(lambda ws: len(ws) == 2, timeout=10)

            began = time.monotonic()
            draining.process.send_signal(signal.SIGTERM)
            await pool.proxy.wait_for(lambda ws: len(ws) == 1, timeout=10)
            served_by = {await fr.pid() for _ in range(10)}
            with pytest.raises(distaff.TransientRpcError, match="draining"):
                await fr.call_at(draining.address, fr.pid)  # refused: safe to retry elsewhere

            assert await short == "finished"
            with pytest.raises(distaff.RpcError, match="stopped before the call finished") as lost:
                await long
            assert lost.value.target == draining.address  # it says which worker
            cancelled_after = time.monotonic() - began
            async with asyncio.timeout(30):
                assert await draining.process.wait() == 0  # one SIGTERM: a clean exit

    assert served_by == {other.pid}
    assert grace - 0.5 < cancelled_after < grace + 3.0
    assert long_marker.exists()  # the routine's finally ran

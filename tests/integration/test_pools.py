"""Pool modes over real discovery with durable ``distaff worker`` processes."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import uuid

import pytest

import distaff

from . import routines as r
from .durable import ROOT, durable_workers, start_worker


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def pids_seen(calls: int = 20) -> set[int]:
    return {await r.pid() for _ in range(calls)}


async def until_pids(expected: set[int], timeout: float = 15.0) -> None:
    """Call until exactly ``expected`` PIDs serve (membership settles)."""
    async with asyncio.timeout(timeout):
        while await pids_seen() != expected:
            pass


async def test_discovery_pool_uses_durable_workers_only() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        workers.append(await start_worker("--discovery", "local", "--namespace", ns))
        workers.append(await start_worker("--discovery", "local", "--namespace", ns))
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)) as pool:
            assert pool.pids == []
            await until_pids({w.pid for w in workers})


async def test_hybrid_pool_uses_spawned_and_discovered_workers() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        workers.append(await start_worker("--discovery", "local", "--namespace", ns))
        async with distaff.WorkerPool(spawn=1, discovery=distaff.LocalDiscovery(ns)) as pool:
            await until_pids({workers[0].pid, *pool.pids})


async def test_tags_select_the_workers_a_pool_uses() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        gpu = await start_worker("--discovery", "local", "--namespace", ns, "--tag", "gpu")
        plain = await start_worker("--discovery", "local", "--namespace", ns)
        workers += [gpu, plain]
        async with distaff.WorkerPool("gpu", discovery=distaff.LocalDiscovery(ns)):
            await until_pids({gpu.pid})
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)):
            await until_pids({gpu.pid, plain.pid})


async def test_spawned_workers_carry_the_pool_tags() -> None:
    async with distaff.WorkerPool("fast", "big", spawn=2) as pool:
        assert all({"fast", "big"} <= m.tags for m in pool.proxy.workers)
        assert await pids_seen() == set(pool.pids)


async def test_lease_caps_the_admitted_workers() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        for _ in range(3):
            workers.append(await start_worker("--discovery", "local", "--namespace", ns))
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns), lease=2) as pool:
            await pool.proxy.wait_for(lambda ws: len(ws) == 2, timeout=10)
            assert len(await pids_seen(30)) == 2


async def test_workers_joining_and_leaving_mid_run_are_followed() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        first = await start_worker("--discovery", "local", "--namespace", ns)
        workers.append(first)
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)):
            await until_pids({first.pid})

            second = await start_worker("--discovery", "local", "--namespace", ns)
            workers.append(second)
            await until_pids({first.pid, second.pid})

            assert await first.terminate() == 0  # unpublishes, drains, exits 0
            await until_pids({second.pid})


async def test_a_crashed_worker_disappears_and_calls_go_on() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        a = await start_worker("--discovery", "local", "--namespace", ns)
        b = await start_worker("--discovery", "local", "--namespace", ns)
        workers += [a, b]
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)) as pool:
            await until_pids({a.pid, b.pid})

            os.kill(a.pid, signal.SIGKILL)  # no chance to unpublish

            await pool.proxy.wait_for(lambda ws: all(m.pid != a.pid for m in ws), timeout=10)
            assert await pids_seen() == {b.pid}


async def test_two_namespaces_do_not_see_each_other() -> None:
    ns_a, ns_b = namespace(), namespace()
    async with durable_workers() as workers:
        a = await start_worker("--discovery", "local", "--namespace", ns_a)
        b = await start_worker("--discovery", "local", "--namespace", ns_b)
        workers += [a, b]
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns_a)):
            assert await pids_seen() == {a.pid}
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns_b)):
            assert await pids_seen() == {b.pid}


async def test_pool_without_matching_workers_raises_no_workers_available() -> None:
    async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(namespace()), wait=0.5):
        with pytest.raises(distaff.NoWorkersAvailable, match=r"0\.5 s"):
            await r.echo(1)


async def until_exists(path: pathlib.Path, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.01)


async def test_worker_sigterm_lets_an_in_flight_call_finish(tmp_path: pathlib.Path) -> None:
    ns = namespace()
    marker = tmp_path / "call"
    async with durable_workers() as workers:
        worker = await start_worker("--discovery", "local", "--namespace", ns)
        workers.append(worker)
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)):
            call = asyncio.ensure_future(r.sleep_then_mark(str(marker), 1.0))
            await until_exists(pathlib.Path(f"{marker}.started"))  # in flight now
            status = asyncio.ensure_future(worker.terminate())

            assert await call == "finished"
            assert await status == 0


def test_cli_refuses_a_non_loopback_bind_without_tls() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distaff", "worker", "--host", "0.0.0.0", "--discovery", "none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "--insecure" in result.stderr
    assert "TLS" in result.stderr


def test_cli_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distaff", "worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    for option in (
        "--host",
        "--port",
        "--tag",
        "--discovery",
        "--namespace",
        "--grace",
        "--insecure",
    ):
        assert option in result.stdout
    top = subprocess.run(
        [sys.executable, "-m", "distaff", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "worker" in top.stdout


async def test_stop_call_drains_and_stops_a_worker() -> None:
    async with durable_workers() as workers:
        worker = await start_worker("--discovery", "none")
        workers.append(worker)
        connection = distaff.WorkerConnection(worker.address)
        try:
            cancelled = await connection.stop_worker(grace=1.0, timeout=10)
        finally:
            await connection.aclose()

        assert cancelled == 0
        async with asyncio.timeout(10):
            assert await worker.process.wait() == 0

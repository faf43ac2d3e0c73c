"""Sessions over a worker's Unix socket: used on one host, safe, and as faithful as gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import signal
import socket
import struct
import time

import pytest

import distaff
from distaff.proxy.ipc import IPC_OPTION, socket_address
from distaff.runtime.worker.process import WorkerProcess
from distaff.runtime.worker.server import WorkerConfig

from . import fault_routines as fr
from . import routines
from .durable import durable_workers, start_worker
from .sockets import accepted_ipc
from .test_session_regressions import proxy_to


def ipc_of(metadata: distaff.WorkerMetadata) -> str:
    return dict(metadata.options)[IPC_OPTION]


def connections(pool: distaff.WorkerPool) -> list[distaff.WorkerConnection]:
    membership = pool.proxy._membership
    assert membership is not None
    return list(membership.context.workers.values())


async def test_a_spawned_pools_calls_go_over_the_workers_unix_socket() -> None:
    async with distaff.WorkerPool(spawn=1) as pool:
        [metadata] = pool.proxy.workers
        assert ipc_of(metadata) == f"@distaff-{metadata.uid}"

        with pytest.raises(routines.StockError, match="3 x boom missing"):
            await routines.fail("boom")
        assert [x async for x in routines.countdown(3)] == [3, 2, 1]

        [connection] = connections(pool)
        assert connection.via_ipc
        [pid] = pool.pids
        assert accepted_ipc(pid) == 1  # the session, accepted on the abstract name
        assert await routines.fib(6) == 8  # nested calls: the worker's proxy calls it too
        assert accepted_ipc(pid) == 2


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_nested_calls_from_a_worker_use_the_socket_on_either_loop(event_loop: str) -> None:
    if event_loop == "uvloop":
        pytest.importorskip("uvloop")
    async with distaff.WorkerPool(spawn=2, event_loop=event_loop):
        loop, via_ipc = await routines.nested_transports(8)
    assert loop.startswith(event_loop)
    assert via_ipc
    assert all(via_ipc)


async def test_distaff_ipc_0_keeps_every_session_on_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTAFF_IPC", "0")  # the spawned workers inherit it
    async with distaff.WorkerPool(spawn=1) as pool:
        [metadata] = pool.proxy.workers
        assert IPC_OPTION not in dict(metadata.options)
        assert await routines.echo(2) == 2
        [connection] = connections(pool)
        assert not connection.via_ipc
        assert accepted_ipc(pool.pids[0]) == 0


async def test_large_values_cross_the_socket_both_ways_intact() -> None:
    blob = os.urandom(40 * 1024 * 1024 + 7)  # beyond the read-ahead bound: flow control
    async with distaff.WorkerPool(spawn=1) as pool:
        assert await fr.length(blob) == len(blob)
        assert await routines.echo(blob) == blob
        assert connections(pool)[0].via_ipc


async def test_a_socket_held_by_another_process_than_the_published_pid_is_not_used() -> None:
    process = WorkerProcess(WorkerConfig(ipc=True))
    try:
        metadata = await process.start()
        # the same socket, published as another process's: the caller must
        # not trust it and goes over gRPC instead
        impostor = dataclasses.replace(metadata, pid=os.getpid())
        async with proxy_to(impostor) as (proxy, _):
            assert await routines.echo(42) == 42
            membership = proxy._membership
            assert membership is not None
            [connection] = membership.context.workers.values()
            assert not connection.via_ipc
        assert accepted_ipc(metadata.pid) == 0
    finally:
        await process.stop()


def _connect_as(uid: int, name: str) -> bytes:
    """In a child running as ``uid``: connect, send a frame, return what came back."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(socket_address(name))
            sock.sendall(struct.pack(">BI", 0, 0))
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
            os.write(write, b"closed:" + got)
        except Exception as exc:
            os.write(write, f"error:{exc!r}".encode())
        os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            return pipe.read()
    finally:
        os.waitpid(child, 0)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another user")
async def test_another_user_is_refused_and_the_worker_goes_on() -> None:
    async with distaff.WorkerPool(spawn=1) as pool:
        [metadata] = pool.proxy.workers
        got = await asyncio.to_thread(_connect_as, 65534, ipc_of(metadata))
        # cut without a word (a reset, or an end): no frame was served
        assert got == b"closed:" or got.startswith(
            (b"error:ConnectionResetError", b"error:BrokenPipeError")
        ), got
        assert await routines.echo(3) == 3


async def test_a_malformed_frame_gets_a_status_that_names_it() -> None:
    async with distaff.WorkerPool(spawn=1) as pool:
        [metadata] = pool.proxy.workers
        reader, writer = await asyncio.open_unix_connection(socket_address(ipc_of(metadata)))
        writer.write(struct.pack(">BI", 9, 3) + b"xyz")
        async with asyncio.timeout(10):
            reply = await reader.read()
        writer.close()
        kind, size = struct.unpack(">BI", reply[:5])
        assert kind == 2  # STATUS
        assert reply[5 : 5 + size].decode().startswith("INTERNAL\na malformed frame (kind 9")
        assert await routines.echo(3) == 3  # the worker serves on


async def test_a_worker_killed_mid_call_fails_it_as_lost(tmp_path: pathlib.Path) -> None:
    async with distaff.WorkerPool(spawn=1, restart=False):
        marker = str(tmp_path / "m")
        call = asyncio.ensure_future(fr.block(marker, 3600))
        await fr.wait_until(lambda: os.path.exists(marker + ".started"))
        os.kill(int(pathlib.Path(marker + ".started").read_text()), signal.SIGKILL)
        async with asyncio.timeout(10):
            with pytest.raises(distaff.WorkerLostError, match="may have run"):
                await call


async def test_a_caller_that_abandons_its_session_cancels_its_calls(tmp_path: pathlib.Path) -> None:
    process = WorkerProcess(WorkerConfig(ipc=True))
    try:
        metadata = await process.start()
        connection = distaff.WorkerConnection(
            metadata.address, ipc=(ipc_of(metadata), metadata.pid)
        )
        marker = str(tmp_path / "m")
        task = distaff.Task(callable=fr.body_of(fr.block), args=(marker, 3600))
        await connection.dispatch(task, timeout=10)
        await fr.wait_until(lambda: os.path.exists(marker + ".started"))
        assert connection.via_ipc
        await connection.aclose()  # a call open: the session is cut, not half-closed
        await fr.wait_until(lambda: os.path.exists(marker))  # the routine's finally ran
    finally:
        await process.stop()


@pytest.mark.slow  # waits for two looks at the stopped process
async def test_calls_on_a_stopped_worker_fail_as_lost_within_seconds(
    tmp_path: pathlib.Path,
) -> None:
    async with distaff.WorkerPool(spawn=1, restart=False) as pool:
        marker = str(tmp_path / "m")
        call = asyncio.ensure_future(fr.block(marker, 3600))
        await fr.wait_until(lambda: os.path.exists(marker + ".started"))
        [pid] = pool.pids
        os.kill(pid, signal.SIGSTOP)  # frozen: its socket stays open, nothing comes
        try:
            began = time.monotonic()
            async with asyncio.timeout(15):
                with pytest.raises(distaff.WorkerLostError, match="may have run"):
                    await call
            assert time.monotonic() - began >= 4.0  # not before two looks
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("ipc", [True, False])
async def test_a_durable_worker_offers_its_socket_only_when_asked(ipc: bool) -> None:
    ns = fr.namespace()
    async with durable_workers() as workers:
        flags = ("--ipc",) if ipc else ()
        worker = await start_worker("--discovery", "local", "--namespace", ns, *flags)
        workers.append(worker)
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)) as pool:
            assert await routines.pid() == worker.pid
            [metadata] = pool.proxy.workers
            assert (IPC_OPTION in dict(metadata.options)) is ipc
            assert connections(pool)[0].via_ipc is ipc
            assert accepted_ipc(worker.pid) == int(ipc)

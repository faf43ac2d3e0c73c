"""The worker beyond one LAN: Describe, gRPC health, caller authentication, certificates."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import sys

import cloudpickle
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import distaff
from distaff.serialization import rpc, wire
from distaff.serialization.rpc import call_describe
from distaff.serialization.tasks import encode_arguments, encode_routine
from tests.runtime.discovery.following import free_port

from . import routines as r
from .durable import ROOT, durable_workers, start_worker

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def certs(tmp_path: pathlib.Path) -> pathlib.Path:
    """`distaff certs` output for a worker known as worker.test (dialled by IP)."""
    directory = tmp_path / "certs"
    assert distaff_cli("certs", str(directory), "--host", "worker.test", "--days", "2") == 0
    return directory


def distaff_cli(*args: str) -> int:
    from distaff.cli import main

    return main(list(args))


def tls_args(certs: pathlib.Path) -> list[str]:
    return [
        "--ca",
        str(certs / "ca.pem"),
        "--cert",
        str(certs / "worker.pem"),
        "--key",
        str(certs / "worker-key.pem"),
    ]


async def test_describe_answers_without_running_user_code_and_reports_a_drain(
    tmp_path: pathlib.Path,
) -> None:
    async with durable_workers() as started:
        worker = await start_worker("--discovery", "none", "--tag", "gpu", "--grace", "5")
        started.append(worker)
        async with grpc.aio.insecure_channel(worker.address) as channel:
            reply = await call_describe(channel, timeout=5)
            assert reply.pid == worker.pid
            assert list(reply.tags) == ["gpu"]
            assert reply.protocol == wire.PROTOCOL_VERSION
            assert reply.python == ".".join(map(str, sys.version_info[:3]))
            assert reply.cloudpickle == cloudpickle.__version__
            assert reply.version == distaff.__version__
            assert not reply.draining
            assert not reply.secure

            discovery = distaff.StaticDiscovery([worker.address])
            async with distaff.WorkerPool("gpu", discovery=discovery):
                marker = str(tmp_path / "call")
                call = asyncio.ensure_future(r.sleep_then_mark(marker, 1.0))
                await _exists(marker + ".started")
                stopping = asyncio.ensure_future(rpc.call_stop(channel, 5.0, 10.0))
                async with asyncio.timeout(5):
                    while not (await call_describe(channel, timeout=5)).draining:
                        await asyncio.sleep(0.02)
                assert not call.done()
                assert await call == "finished"
                await stopping
        assert await worker.process.wait() == 0


async def _exists(path: str) -> None:
    async with asyncio.timeout(10):
        while not pathlib.Path(path).exists():
            await asyncio.sleep(0.02)


async def test_health_port_serves_health_alone_and_turns_not_serving_on_sigterm(
    tmp_path: pathlib.Path,
) -> None:
    health_port = free_port()
    async with durable_workers() as started:
        worker = await start_worker(
            "--discovery", "none", "--health-port", str(health_port), "--grace", "10"
        )
        started.append(worker)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as probe:
            health = health_pb2_grpc.HealthStub(probe)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_describe(probe, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

            pool = distaff.WorkerPool(discovery=distaff.StaticDiscovery([worker.address]))
            async with pool:
                marker = str(tmp_path / "call")
                call = asyncio.ensure_future(r.sleep_then_mark(marker, 1.5))
                await _exists(marker + ".started")
                watch = health.Watch(health_pb2.HealthCheckRequest(service="distaff.v1.Worker"))
                assert (await watch.read()).status == SERVING
                worker.process.send_signal(signal.SIGTERM)
                assert (await watch.read()).status == NOT_SERVING
                assert not call.done()  # the in-flight call still has its grace
                assert await call == "finished"
                watch.cancel()
        assert await worker.process.wait() == 0


def test_certs_refuses_to_overwrite_and_bad_hosts(certs: pathlib.Path) -> None:
    assert distaff_cli("certs", str(certs), "--host", "worker.test") == 2
    assert distaff_cli("certs", str(certs / "x"), "--host", "bad host!") == 2
    assert (certs / "worker-key.pem").stat().st_mode & 0o077 == 0


async def test_one_way_tls_on_a_public_address_exits_2_naming_both_options(
    certs: pathlib.Path,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "distaff",
        "worker",
        "--host",
        "0.0.0.0",
        "--discovery",
        "none",
        *tls_args(certs),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert b"--mutual" in err
    assert b"--token-file" in err


@pytest.mark.parametrize("auth", ["mutual", "token"])
async def test_authenticated_pool_by_ip_with_a_certificate_for_a_name(
    certs: pathlib.Path, auth: str
) -> None:
    extra = ["--mutual"] if auth == "mutual" else ["--token-file", str(certs / "token")]
    if auth == "mutual":
        credentials = distaff.WorkerCredentials.from_files(
            certs / "ca.pem",
            certs / "client.pem",
            certs / "client-key.pem",
            mutual=True,
            server_name="worker.test",
        )
    else:
        credentials = distaff.WorkerCredentials.from_files(
            certs / "ca.pem", token_file=certs / "token", server_name="worker.test"
        )
    async with durable_workers() as started:
        for _ in range(2):
            args = [*tls_args(certs), *extra, "--server-name", "worker.test"]
            started.append(await start_worker("--discovery", "none", *args))
        discovery = distaff.StaticDiscovery([w.address for w in started], refresh=0.5)
        async with distaff.WorkerPool(discovery=discovery, credentials=credentials) as pool:
            await pool.proxy.wait_for(lambda ws: len(ws) == 2, timeout=10)
            pids = {await r.pid() for _ in range(4)}
            _, (_, caller, inner), outer = await r.nested_info()
        assert pids == {w.pid for w in started}
        assert caller is not None
        assert {inner, outer} <= pids


async def test_wrong_token_is_refused_before_anything_is_unpickled(
    certs: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "unpickled"
    # unpickling the argument creates the marker: proof of whether the worker read it
    body = r.echo.__wrapped__  # type: ignore[attr-defined]
    start = wire.Envelope()
    start.frames.add().hello.protocol = wire.PROTOCOL_VERSION
    frame = start.frames.add()
    frame.call = 1
    frame.start.task_id = "t"
    frame.start.routine = encode_routine(body)
    frame.start.arguments = encode_arguments((_Touch(str(marker)),), {}, routine="echo")
    ssl = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
    token = (certs / "token").read_text().strip()
    options = (("grpc.ssl_target_name_override", "worker.test"),)

    async def send(bearer: str) -> grpc.StatusCode | None:
        creds = grpc.composite_channel_credentials(ssl, grpc.access_token_call_credentials(bearer))
        async with grpc.aio.secure_channel(worker.address, creds, options=options) as channel:
            session = rpc.open_session(channel)
            try:
                await session.write(start)
                async with asyncio.timeout(10):
                    while await session.read() is not grpc.aio.EOF:
                        if marker.exists():
                            return None
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            finally:
                session.cancel()
        return None

    async with durable_workers() as started:
        args = [*tls_args(certs), "--token-file", str(certs / "token")]
        worker = await start_worker("--discovery", "none", *args)
        started.append(worker)

        # refused at the headers; under load gRPC now and then reports the
        # refusal racing the caller's first write as INTERNAL (seen once in CI)
        refused = await send("not-the-token")
        assert refused in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL)
        assert not marker.exists()
        await send(token)
        assert marker.exists()  # the same bytes with the right token are read


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a PID namespace needs root and unshare (util-linux)",
)
async def test_worker_as_pid_1_of_its_namespace_exits_0_on_sigterm() -> None:
    # as in a container: no shell or init in between, the worker is PID 1
    process = await asyncio.create_subprocess_exec(
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        sys.executable,
        "-m",
        "distaff",
        "worker",
        "--discovery",
        "none",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            assert b"serving on" in await process.stdout.readline()
        (inner,) = (
            pathlib.Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        )
        status = pathlib.Path(f"/proc/{inner}/status").read_text()
        assert status.split("NSpid:")[1].splitlines()[0].split()[-1] == "1"
        os.kill(int(inner), signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_advertise_sets_the_address_published_and_described() -> None:
    async with durable_workers() as started:
        args = (
            "--discovery",
            "none",
            "--host",
            "0.0.0.0",
            "--insecure",
            "--advertise",
            "127.0.0.5",
        )
        worker = await start_worker(*args)
        started.append(worker)
        port = worker.address.rsplit(":", 1)[1]
        assert worker.address == f"127.0.0.5:{port}"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert (await call_describe(channel, timeout=5)).address == worker.address


async def test_a_worker_asked_to_stop_leaves_discovery_before_its_drain(
    tmp_path: pathlib.Path,
) -> None:
    namespace = f"stop-{os.getpid()}-{tmp_path.name}"[:60]
    async with durable_workers() as started:
        worker = await start_worker("--discovery", "local", "--namespace", namespace)
        started.append(worker)
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(namespace)) as pool:
            await pool.proxy.wait_for(lambda ws: len(ws) == 1, timeout=10)
            marker = str(tmp_path / "call")
            call = asyncio.ensure_future(r.sleep_then_mark(marker, 1.5))
            await _exists(marker + ".started")
            async with grpc.aio.insecure_channel(worker.address) as channel:
                stopping = asyncio.ensure_future(rpc.call_stop(channel, 5.0, 10.0))
                await pool.proxy.wait_for(lambda ws: not ws, timeout=1.0)
                assert not call.done()  # gone from the pool while still draining
                assert await call == "finished"
                await stopping
        assert await worker.process.wait() == 0

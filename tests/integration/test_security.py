"""Security: TLS and mutual TLS pools, untrusted workers, bind policy, wire version."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable

import grpc
import grpc.aio
import pytest

import distaff
from distaff._exceptions import InsecureBindError
from distaff.runtime.worker.process import WorkerProcess
from distaff.runtime.worker.server import Worker, WorkerConfig
from distaff.serialization import rpc, wire
from tests import tls

from . import fault_routines as fr
from . import routines as r
from .durable import DurableWorker, durable_workers, start_worker

TLS_WORDS = re.compile(r"(?i)tls|ssl|handshake|certificate")


@pytest.fixture(scope="module")
def ca() -> tls.Authority:
    return tls.make_authority()


async def start_local(ns: str, *args: str) -> DurableWorker:
    return await start_worker("--discovery", "local", "--namespace", ns, *args)


@pytest.mark.parametrize("mutual", [False, True], ids=["one-way", "mutual"])
async def test_tls_pool_runs_calls_and_nested_calls(ca: tls.Authority, mutual: bool) -> None:
    credentials = tls.credentials(ca, mutual=mutual)

    async with distaff.WorkerPool(spawn=2, credentials=credentials) as pool:
        value = await r.echo("over TLS")
        outer_id, (_, inner_caller, inner_pid), outer_pid = await r.nested_info()

        assert value == "over TLS"
        assert inner_caller == outer_id
        assert {inner_pid, outer_pid} <= set(pool.pids)
        assert all(m.secure for m in pool.proxy.workers)


async def test_mutual_tls_worker_runs_nothing_for_a_caller_without_a_client_certificate(
    ca: tls.Authority, tmp_path: pathlib.Path
) -> None:
    ns = fr.namespace()
    server = tls.credentials(ca, mutual=True)
    refused, accepted = tmp_path / "refused", tmp_path / "accepted"
    async with durable_workers() as workers:
        worker = await start_local(ns, *tls.write_files(tmp_path, server), "--mutual")
        workers.append(worker)
        no_client_cert = tls.credentials(ca, mutual=False)

        async with distaff.WorkerPool(
            discovery=distaff.LocalDiscovery(ns), credentials=no_client_cert, wait=10
        ) as pool:
            await pool.proxy.wait_for(bool, timeout=10)
            with pytest.raises(distaff.NoWorkersAvailable) as caught:
                await fr.write_marker(str(refused))

        assert isinstance(caught.value.__cause__, distaff.TransientRpcError)
        assert not refused.exists()
        assert fr.alive(worker.pid)
        # the same worker serves a caller that presents a certificate from its CA
        async with distaff.WorkerPool(
            discovery=distaff.LocalDiscovery(ns), credentials=tls.credentials(ca, mutual=True)
        ):
            assert await fr.write_marker(str(accepted)) == worker.pid


async def test_missing_client_certificate_error_names_the_tls_failure(
    ca: tls.Authority, tmp_path: pathlib.Path
) -> None:
    ns = fr.namespace()
    server = tls.credentials(ca, mutual=True)
    async with durable_workers() as workers:
        workers.append(await start_local(ns, *tls.write_files(tmp_path, server), "--mutual"))
        async with distaff.WorkerPool(
            discovery=distaff.LocalDiscovery(ns), credentials=tls.credentials(ca, mutual=False)
        ) as pool:
            await pool.proxy.wait_for(bool, timeout=10)

            with pytest.raises(distaff.NoWorkersAvailable) as caught:
                await fr.pid()

    assert TLS_WORDS.search(str(caught.value)), str(caught.value)


BAD_CERTIFICATES: dict[str, tuple[Callable[[tls.Authority], distaff.WorkerCredentials], str]] = {
    "other-ca": (lambda ca: tls.credentials(tls.make_authority("another CA")), "certificate"),
    "expired": (lambda ca: tls.credentials(ca, expired=True), "certificate has expired"),
    "wrong-host": (
        lambda ca: tls.credentials(ca, hosts=("example.invalid",)),
        "Hostname Verification",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_CERTIFICATES))
async def test_caller_uses_no_worker_whose_certificate_it_cannot_verify(
    ca: tls.Authority, tmp_path: pathlib.Path, kind: str
) -> None:
    make_bad, expected = BAD_CERTIFICATES[kind]
    ns = fr.namespace()
    async with durable_workers() as workers:
        bad = await start_local(ns, *tls.write_files(tmp_path, make_bad(ca)))
        workers.append(bad)
        async with distaff.WorkerPool(
            discovery=distaff.LocalDiscovery(ns), credentials=tls.credentials(ca)
        ) as pool:
            await pool.proxy.wait_for(bool, timeout=10)

            with pytest.raises(distaff.NoWorkersAvailable, match=re.escape(expected)):
                await fr.pid()

            good = await start_local(ns, *tls.write_files(tmp_path, tls.credentials(ca)))
            workers.append(good)
            await pool.proxy.wait_for(lambda ws: len(ws) == 2, timeout=10)
            served_by = {await fr.pid() for _ in range(10)}

        assert served_by == {good.pid}


async def test_plaintext_and_tls_callers_admit_only_workers_of_their_kind(
    ca: tls.Authority, tmp_path: pathlib.Path
) -> None:
    ns = fr.namespace()
    async with durable_workers() as workers:
        plain = await start_local(ns)
        secure = await start_local(ns, *tls.write_files(tmp_path, tls.credentials(ca)))
        workers += [plain, secure]

        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns)) as pool:
            plain_served = {await fr.pid() for _ in range(10)}
            plain_admitted = {m.pid for m in pool.proxy.workers}
        async with distaff.WorkerPool(
            discovery=distaff.LocalDiscovery(ns), credentials=tls.credentials(ca)
        ) as pool:
            secure_served = {await fr.pid() for _ in range(10)}
            secure_admitted = {m.pid for m in pool.proxy.workers}

    assert plain_served == plain_admitted == {plain.pid}
    assert secure_served == secure_admitted == {secure.pid}


async def test_plaintext_caller_finds_no_worker_in_a_tls_only_pool(
    ca: tls.Authority, tmp_path: pathlib.Path
) -> None:
    ns = fr.namespace()
    async with durable_workers() as workers:
        workers.append(await start_local(ns, *tls.write_files(tmp_path, tls.credentials(ca))))
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(ns), wait=1.0) as pool:
            with pytest.raises(distaff.NoWorkersAvailable, match="no worker joined"):
                await fr.pid()

            assert pool.proxy.workers == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.invalid"])
async def test_worker_refuses_a_non_loopback_bind_without_tls(host: str) -> None:
    worker = Worker(WorkerConfig(host=host))

    with pytest.raises(InsecureBindError, match=r"--insecure.*insecure=True"):
        await worker.run(lambda metadata: None)


async def test_spawned_worker_refusing_an_insecure_bind_reports_why() -> None:
    process = WorkerProcess(WorkerConfig(host="0.0.0.0"))
    try:
        with pytest.raises(distaff.WorkerStartError, match=r"(?s)InsecureBindError.*--insecure"):
            await process.start()
    finally:
        await process.kill()


async def test_insecure_flag_lets_a_worker_bind_every_interface() -> None:
    async with durable_workers() as workers:
        worker = await start_worker("--host", "0.0.0.0", "--insecure", "--discovery", "none")
        workers.append(worker)
        host, port = worker.address.rsplit(":", 1)

        served_by = await fr.call_at(f"127.0.0.1:{port}", fr.pid)

    assert host == "0.0.0.0"
    assert served_by == worker.pid


async def test_protocol_version_mismatch_is_refused_naming_both_versions() -> None:
    async with distaff.WorkerPool(spawn=1) as pool:
        (worker,) = pool.proxy.workers
        hello = wire.Envelope()
        hello.frames.add().hello.protocol = 999

        async with grpc.aio.insecure_channel(worker.address) as channel:
            session = rpc.open_session(channel)
            await session.write(hello)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await session.read()

        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = caught.value.details() or ""
        assert f"worker speaks {wire.PROTOCOL_VERSION}" in details
        assert "caller sent 999" in details
        assert await fr.pid() == worker.pid
        assert pool.proxy.workers == [worker]

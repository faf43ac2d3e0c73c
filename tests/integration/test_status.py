"""``distaff status`` against real durable workers, found through real discovery."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import socket
import sys
import uuid
from typing import Any

import pytest

import distaff
from tests import tls
from tests.dnsserver import DnsServer

from . import output_routines as orr
from . import routines as r
from .durable import ROOT, DurableWorker, durable_workers, start_worker


async def status(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "distaff",
        "status",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def rows(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_local(ns: str, *args: str) -> DurableWorker:
    return await start_worker("--discovery", "local", "--namespace", ns, *args)


def namespace() -> str:
    return f"status-{uuid.uuid4().hex[:8]}"


async def test_one_row_per_worker_with_its_counts_and_metrics_port() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        workers.append(await start_local(ns, "--tag", "gpu", "--metrics-port", "0"))
        workers.append(await start_local(ns, "--tag", "gpu"))
        async with distaff.WorkerPool("gpu", discovery=f"local://{ns}") as pool:
            await pool.proxy.wait_for(lambda w: len(w) == 2, timeout=10)
            await asyncio.gather(*(r.echo(n) for n in range(6)))
            with pytest.raises(ValueError, match="no"):
                await orr.fail("no")
            code, out, err = await status(f"local://{ns}", "--json")
            table_code, table, _ = await status(f"local://{ns}")

    assert (code, err) == (0, "")
    found = rows(out)
    assert sorted(w["address"] for w in found) == sorted(w.address for w in workers)
    assert {w["pid"] for w in found} == {w.pid for w in workers}
    assert all(w["state"] == "serving" and w["tags"] == ["gpu"] for w in found)
    assert sum(w["completed"] for w in found) == 6
    assert sum(w["failed"] for w in found) == 1
    assert all(w["in_flight"] == 0 and w["rss_bytes"] > 1_000_000 for w in found)
    assert all(w["version"] == distaff.__version__ and w["tls"] is False for w in found)
    assert sorted(w["metrics_port"] is None for w in found) == [False, True]
    assert set(found[0]) == {
        "address", "uid", "host", "pid", "version", "tags", "tls", "state", "in_flight",
        "completed", "failed", "uptime_seconds", "rss_bytes", "metrics_port", "error",
    }  # fmt: skip
    assert table_code == 0
    header, *lines, last = table.splitlines()
    assert header.split()[:3] == ["ADDRESS", "UID", "HOST"]
    assert len(lines) == 2
    assert last == "2 workers (2 serving), 0 in flight"


async def test_an_unreachable_worker_is_a_row_saying_why_and_exit_1() -> None:
    async with durable_workers() as workers:
        workers.append(await start_worker("--discovery", "none"))
        dead = f"127.0.0.1:{closed_port()}"
        code, out, err = await status(f"static://{workers[0].address},{dead}", "--json")
        table_code, table, _ = await status(f"static://{workers[0].address},{dead}")

    assert (code, err) == (1, "")
    by_address = {w["address"]: w for w in rows(out)}
    assert by_address[workers[0].address]["state"] == "serving"
    assert by_address[dead]["state"] == "unreachable"
    assert "unavailable" in by_address[dead]["error"]
    assert table_code == 1
    assert f"{dead}: unreachable: unavailable" in table
    assert "Traceback" not in table


async def test_a_draining_worker_shows_as_draining() -> None:
    async with durable_workers() as workers:
        worker = await start_worker("--discovery", "none", "--grace", "20")
        workers.append(worker)
        async with distaff.WorkerPool(discovery=f"static://{worker.address}"):
            sleeping = asyncio.ensure_future(orr.snooze(30))
            try:
                async with asyncio.timeout(20):
                    while (
                        rows((await status(f"static://{worker.address}", "--json"))[1])[0][
                            "in_flight"
                        ]
                        != 1
                    ):
                        await asyncio.sleep(0.05)
                worker.process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    while True:
                        code, out, _ = await status(f"static://{worker.address}", "--json")
                        (row,) = rows(out)
                        if row["state"] == "draining":
                            break
            finally:
                sleeping.cancel()
                await asyncio.gather(sleeping, return_exceptions=True)
    assert code == 0
    assert row["in_flight"] == 1


async def test_a_tls_worker_needs_the_pools_certificates(tmp_path: pathlib.Path) -> None:
    ca = tls.make_authority()
    files = tls.write_files(tmp_path, tls.credentials(ca, mutual=True))
    ns = namespace()
    async with durable_workers() as workers:
        workers.append(await start_local(ns, *files, "--mutual"))
        plain_code, plain, _ = await status(f"local://{ns}", "--json")
        code, out, _ = await status(f"local://{ns}", "--json", *files)

    (refused,) = rows(plain)
    assert plain_code == 1
    assert refused["state"] == "unreachable"
    assert "--ca" in refused["error"]
    assert refused["tls"] is True
    (answered,) = rows(out)
    assert code == 0
    assert (answered["state"], answered["tls"]) == ("serving", True)


@pytest.mark.parametrize(
    "args",
    [["bogus://x"], ["--watch", "0"], ["--timeout", "-1"], ["--cert", "c.pem"], ["--frob"]],
)
async def test_bad_arguments_exit_2(args: list[str]) -> None:
    code, out, err = await status(*args)

    assert code == 2
    assert out == ""
    assert "Traceback" not in err


async def test_no_workers_found_is_exit_1() -> None:
    uri = f"local://{namespace()}"
    code, out, _ = await status(uri)

    assert code == 1
    assert out == f"no workers found through {uri}\n"


async def test_watch_refreshes_with_a_call_rate_until_interrupted() -> None:
    ns = namespace()
    async with durable_workers() as workers:
        workers.append(await start_local(ns))
        # -X faulthandler: if it hangs, SIGABRT makes it print where every thread is
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-X", "faulthandler", "-m", "distaff", "status", f"local://{ns}",
            "--watch", "0.2",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            async with asyncio.timeout(30):
                while b"calls/s" not in await process.stdout.readline():
                    pass
        finally:
            process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(30):
                    _, err = await process.communicate()
            except TimeoutError:
                process.send_signal(signal.SIGABRT)
                _, err = await process.communicate()
                pytest.fail(f"status --watch ignored SIGINT for 30 s:\n{err.decode()}")
    assert process.returncode == 130
    assert b"Traceback" not in err


async def test_dns_names_every_address_even_one_nobody_answers_on() -> None:
    port = closed_port()
    with DnsServer() as dns:
        dns.set({"workers.test.": [["A", "127.0.0.1"], ["A", "127.0.0.2"]]})
        async with durable_workers() as workers:
            workers.append(await start_worker("--discovery", "none", "--port", str(port)))
            uri = f"dns://workers.test:{port}?nameserver={dns.nameserver}"
            code, out, err = await status(uri, "--json", "--timeout", "1")

    assert (code, err) == (1, "")
    states = {row["address"]: row["state"] for row in rows(out)}
    assert states == {f"127.0.0.1:{port}": "serving", f"127.0.0.2:{port}": "unreachable"}

"""A pool found by DNS on a private LAN of network namespaces, as on Kubernetes.

One namespace runs a real DNS server process (``tests/dnsserver.py``, on
``dnslib``; it rereads its zone file on every query, so the test changes
records by rewriting the file), three run ``distaff worker --mutual`` with
certificates from ``distaff certs`` and a health port, and a fifth runs a
caller (this module run with ``python -m``) whose
``WorkerPool(discovery=DnsDiscovery(...), credentials=...)`` learns the
workers from DNS alone. A fourth worker, on the DNS server's host, runs on
another Python minor version and must not be admitted: the interpreter named
by ``DISTAFF_OTHER_PYTHON`` when that is set (one with distaff installed),
else this one with the worker's test-only ``--pretend-python 3.99.1`` option.

Run as a script, this module is that caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import sys
import time
from typing import Any

import pytest

from tests.dnsserver import write_zone

from . import routines as r
from .durable import ROOT, DurableWorker, start_worker
from .netns import Host, IsolatedLan
from .test_multihost import Caller, emit, nested, serve, watch

pytestmark = pytest.mark.netns

NAME = "workers.test."
PORT = 7400
HEALTH = 7401
REFRESH = 1.0
SERVER_NAME = "workers.test"
OTHER_PYTHON = os.environ.get("DISTAFF_OTHER_PYTHON")


@pytest.fixture
def lan5() -> Any:
    from .netns import NetnsUnavailable, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    segment = IsolatedLan(5)
    try:
        segment.create()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield segment
    finally:
        segment.destroy()


def certs_for(directory: pathlib.Path) -> pathlib.Path:
    from distaff.cli import main

    assert main(["certs", str(directory), "--host", SERVER_NAME]) == 0
    return directory


async def start_dns(host: Host, zone: pathlib.Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *host.exec_prefix(),
        sys.executable,
        "-m",
        "tests.dnsserver",
        host.address,
        "53",
        str(zone),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(15):
        assert (await process.stdout.readline()).strip() == b"ready"
    return process


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_dns_pool_admits_uses_and_loses_workers_like_a_headless_service(
    lan5: IsolatedLan, tmp_path: pathlib.Path
) -> None:
    dns_host, h1, h2, h3, caller_host = lan5.hosts
    certs = certs_for(tmp_path / "certs")
    zone = tmp_path / "zone.json"
    figures: dict[str, float] = {}

    def publish(*hosts: Host) -> float:
        write_zone(zone, {NAME: [["A", h.address] for h in hosts]})
        return time.time()

    async with contextlib.AsyncExitStack() as cleanup:  # kills every process, on every path
        cleanup.callback(report, figures)
        publish(h1, h2)
        dns = await start_dns(dns_host, zone)
        cleanup.push_async_callback(_kill, dns)

        async def worker_on(host: Host, *extra: str, python: str = sys.executable) -> DurableWorker:
            worker = await start_worker(
                *worker_args(host, certs), *extra, prefix=host.exec_prefix(), python=python
            )
            cleanup.push_async_callback(worker.kill)
            return worker

        a, b, c = await asyncio.gather(worker_on(h1), worker_on(h2), worker_on(h3))
        if OTHER_PYTHON:
            odd = await worker_on(dns_host, python=OTHER_PYTHON)
        else:
            odd = await worker_on(dns_host, "--pretend-python", "3.99.1")

        env = {**os.environ, "E2E": json.dumps({"ns": dns_host.address, "certs": str(certs)})}
        caller = await start_caller(caller_host, tmp_path / "caller.err", env)
        cleanup.push_async_callback(caller.kill)
        await caller.admitted(a.pid)
        await caller.admitted(b.pid)

        # a record added: the worker is admitted within one refresh
        added = publish(h1, h2, h3)
        seen_c = await caller.admitted(c.pid)
        figures["record added -> admitted"] = seen_c["t"] - added
        assert seen_c["t"] - added < REFRESH * 1.2 + 1.0
        await caller.serve(a.pid, b.pid, c.pid)
        await caller.nested(a.pid, b.pid, c.pid)

        # a worker on another Python minor version is refused, with the table
        publish(h1, h2, h3, dns_host)
        async with asyncio.timeout(10):
            while "not admitting" not in caller.stderr.read_text():
                await asyncio.sleep(0.05)
        refusal = caller.stderr.read_text()
        assert "not admitting an incompatible worker" in refusal
        assert re.search(r"python +3\.\d+\.\d+ +3\.\d+\.\d+", refusal), refusal
        assert not any(e.get("pid") == odd.pid for e in caller.events)

        # "pod deletion": record removed and SIGTERM at the same moment, under load
        load = asyncio.ensure_future(caller.command("load", seconds=4.0, timeout=20))
        cleanup.push_async_callback(_settle, load)
        await caller.wait_event(lambda e: e.get("event") == "loading", 10)
        deleted = publish(h2, h3, dns_host)
        a.process.send_signal(15)
        gone = await caller.removed(a.pid)
        figures["pod deleted -> evicted"] = gone["t"] - deleted
        reply = await load
        assert reply["errors"] == [], reply
        assert reply["calls"] > 0
        assert a.pid in reply["pids"]  # it was serving when deleted
        assert reply["calls"] > 8 * 3  # and the load went on after
        assert await a.process.wait() == 0

        # idle CPU of a caller that follows DNS (refresh 1 s) and watches health
        before, started = cpu_seconds(caller.process.pid), time.monotonic()
        await caller.command("idle", seconds=3.0, timeout=10)
        figures["caller idle CPU (fraction of one core)"] = (
            cpu_seconds(caller.process.pid) - before
        ) / (time.monotonic() - started)

        assert await caller.quit() == 0


def worker_args(host: Host, certs: pathlib.Path) -> list[str]:
    return [
        f"--host={host.address}",
        f"--port={PORT}",
        f"--health-port={HEALTH}",
        "--discovery=none",
        "--grace=10",
        f"--ca={certs / 'ca.pem'}",
        f"--cert={certs / 'worker.pem'}",
        f"--key={certs / 'worker-key.pem'}",
        "--mutual",
        f"--server-name={SERVER_NAME}",
    ]


async def start_caller(host: Host, stderr: pathlib.Path, env: dict[str, str]) -> Caller:
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *host.exec_prefix(),
            sys.executable,
            "-m",
            __name__,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            limit=1 << 20,
        )
    return Caller(process, stderr)


async def _settle(task: asyncio.Future[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


def report(figures: dict[str, float]) -> None:
    lines = "".join(f"\n  {name}: {value:.3f}" for name, value in figures.items())
    print(f"\nDNS discovery figures (seconds, or CPU fraction):{lines}")


# The caller, run in its namespace as ``python -m tests.integration.test_multihost_dns``.


async def load(seconds: float, timeout: float) -> dict[str, Any]:
    """Eight callers in a loop of 0.2 s calls for ``seconds``; every failure is reported.

    "loading" is announced once three workers have served, so calls are in
    flight everywhere from then on.
    """
    errors: list[str] = []
    pids: set[int] = set()
    calls = 0

    async def loop() -> None:
        nonlocal calls
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                pid = await r.nap(0.2)
            except Exception as exc:
                errors.append(repr(exc))
                continue
            calls += 1
            if pid not in pids:
                pids.add(pid)
                if len(pids) == 3:
                    emit(event="loading")

    async with asyncio.TaskGroup() as group:
        for _ in range(8):
            group.create_task(loop())
    return {"errors": errors[:10], "pids": sorted(pids), "calls": calls}


async def idle(seconds: float, timeout: float) -> dict[str, Any]:
    await asyncio.sleep(seconds)  # the measured idle period itself
    return {}


async def caller() -> None:
    import distaff

    config = json.loads(os.environ["E2E"])
    certs = pathlib.Path(config["certs"])
    credentials = distaff.WorkerCredentials.from_files(
        certs / "ca.pem",
        certs / "client.pem",
        certs / "client-key.pem",
        mutual=True,
        server_name=SERVER_NAME,
    )
    discovery = distaff.DnsDiscovery(
        NAME, PORT, refresh=REFRESH, nameservers=[f"{config['ns']}:53"]
    )
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    handlers = {"serve": serve, "nested": nested, "load": load, "idle": idle}
    async with distaff.WorkerPool(discovery=discovery, credentials=credentials) as pool:
        emit(event="ready")
        watcher = asyncio.ensure_future(watch(pool.proxy))
        try:
            while line := await commands.readline():
                command = json.loads(line)
                reply = await handlers[command["cmd"]](**command["args"])
                emit(reply=command["id"], **reply)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(caller())

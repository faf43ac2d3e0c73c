"""What a routine prints and logs on a worker reaches the caller that made the call."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import sys
import time
import uuid

import pytest

import distaff
from tests.integration import output_routines as r
from tests.integration.durable import ROOT, durable_workers, start_worker

HOST = socket.gethostname()


async def test_prints_and_log_records_come_back_prefixed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    async with distaff.WorkerPool(spawn=1):
        pid = await r.chatty("t1")

    out, err = capsys.readouterr()
    assert f"(chatty pid={pid} host={HOST}) hello from t1\n" in out
    assert f"(chatty pid={pid} host={HOST}) complaint from t1\n" in err
    (record,) = [x for x in caplog.records if x.name == "distaff.remote.chatty"]
    assert record.getMessage() == "logged by t1"
    assert record.levelno == logging.WARNING
    assert (record.worker_pid, record.worker_host, record.routine) == (pid, HOST, "chatty")  # type: ignore[attr-defined]


async def test_a_plain_function_in_a_thread_prints_to_its_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with distaff.WorkerPool(spawn=1):
        pid = await r.plain_chatty("p1")

    assert f"(plain_chatty pid={pid} host={HOST}) plain p1\n" in capsys.readouterr().out


async def test_a_generator_prints_before_each_item(capsys: pytest.CaptureFixture[str]) -> None:
    async with distaff.WorkerPool(spawn=1):
        items = [i async for i in r.counting(3)]

    out = capsys.readouterr().out
    assert items == [0, 1, 2]
    assert [line.split(") ", 1)[1] for line in out.splitlines()] == ["item 0", "item 1", "item 2"]


async def test_a_nested_calls_output_reaches_the_top_caller(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    async with distaff.WorkerPool(spawn=2):
        outer_pid, inner_pid = await r.outer("n1")

    out, err = capsys.readouterr()
    assert f"(outer pid={outer_pid} host={HOST}) outer n1\n" in out
    assert f"(chatty pid={inner_pid} host={HOST}) hello from inner n1\n" in out
    assert f"(chatty pid={inner_pid} host={HOST}) complaint from inner n1\n" in err
    assert any(x.getMessage() == "logged by inner n1" for x in caplog.records)


async def test_forward_output_false_keeps_output_on_the_worker(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with distaff.WorkerPool(spawn=1, forward_output=False):
        await r.chatty("quiet")

    # the spawned worker shares this process's file descriptors
    out, err = capfd.readouterr()
    assert "hello from quiet\n" in out
    assert "complaint from quiet\n" in err
    assert "pid=" not in out + err


async def test_a_flood_is_rate_limited_without_slowing_other_calls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = 50_000
    async with distaff.WorkerPool(spawn=1):
        flooding = asyncio.ensure_future(r.flood(lines))
        try:
            latencies = []
            while not flooding.done():
                start = time.monotonic()
                await r.tagged("other", 1)
                latencies.append(time.monotonic() - start)
        finally:
            await flooding

    out, err = capsys.readouterr()
    flood_lines = [line for line in out.splitlines() if ") flood " in line]
    assert 1000 <= len(flood_lines) < lines / 2
    assert "lines suppressed" in err
    suppressed = sum(
        int(line.rsplit("… ", 1)[1].split()[0]) for line in err.splitlines() if "suppressed" in line
    )
    assert len(flood_lines) + suppressed == lines  # every line sent or counted, none merged
    assert sum(1 for line in out.splitlines() if "other line 0" in line) == len(latencies)
    assert max(latencies) < 2.0, latencies


CALLER = """
import asyncio, sys
import distaff
from tests.integration import output_routines as r

async def main():
    async with distaff.WorkerPool(discovery=sys.argv[1]):
        await asyncio.gather(*(r.tagged(sys.argv[2], 20) for _ in range(3)))

asyncio.run(main())
"""


async def test_two_concurrent_callers_each_see_only_their_own_output() -> None:
    ns = f"output-{uuid.uuid4().hex[:8]}"
    async with durable_workers() as workers:
        workers.append(await start_worker("--discovery", "local", "--namespace", ns))
        callers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CALLER,
                f"local://{ns}",
                tag,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for tag in ("alpha", "beta")
        ]
        results = await asyncio.gather(*(c.communicate() for c in callers))

    for (out, err), mine, other in zip(results, ("alpha", "beta"), ("beta", "alpha"), strict=True):
        text = out.decode()
        assert err.decode() == ""
        assert text.count(f") {mine} line") == 60
        assert other not in text


@pytest.mark.parametrize("routine", ["silent", "chatty"])
async def test_a_forwarding_call_leaves_no_reference_cycles_on_the_worker(
    routine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # a cycle per call (the call's task, its context, the call as its output
    # slot) is freed only by the collector: a cost per call that no result shows
    body = r.silent if routine == "silent" else functools.partial(r.chatty, "cycle")
    async with distaff.WorkerPool(spawn=1):
        await r.garbage_watch(True)
        for _ in range(300):
            await body()
        found = await r.garbage_watch(False)

    capsys.readouterr()
    assert found < 100, f"{found} objects in cycles after 300 calls of {routine}"

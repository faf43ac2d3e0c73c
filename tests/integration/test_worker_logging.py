"""``distaff worker --log-level --log-format``: one line per event, each naming the worker."""

from __future__ import annotations

import json
import uuid

import distaff

from . import routines as r
from .durable import durable_workers, start_worker


async def test_json_lines_name_the_worker_and_never_one_per_call() -> None:
    ns = f"logs-{uuid.uuid4().hex[:8]}"
    async with durable_workers() as workers:
        logged = await start_worker(
            "--discovery", "local", "--namespace", ns, "--log-level", "info",
            "--log-format", "json",
        )  # fmt: skip
        workers.append(logged)
        workers.append(await start_worker("--discovery", "local", "--namespace", ns))
        async with distaff.WorkerPool(discovery=f"local://{ns}") as pool:
            await pool.proxy.wait_for(lambda w: len(w) == 2, timeout=10)
            uid = next(m.uid for m in pool.proxy.workers if m.address == logged.address)
            for n in range(40):
                await r.echo(n)
            for _ in range(4):  # nested calls: the worker's own proxy admits its peers
                await r.nested_info()
        assert await logged.terminate() == 0
        assert logged.process.stderr is not None
        lines = (await logged.process.stderr.read()).decode().splitlines()

    entries = [json.loads(line) for line in lines]
    assert {e["worker"] for e in entries} == {uid}
    messages = [e["message"] for e in entries]
    assert messages[0].startswith(f"serving on {logged.address} (pid {logged.pid}")
    assert any(m.startswith("admitted worker ") for m in messages)
    assert any(m.startswith("stopping: leaving discovery") for m in messages)
    assert any(m.startswith("draining: refusing new calls") for m in messages)
    assert messages[-1] == "stopped"
    assert len(entries) < 12  # 44 calls ran: no line per call
    assert all({"time", "level", "logger"} <= set(e) for e in entries)


async def test_text_lines_by_default_level_are_silent_at_info() -> None:
    async with durable_workers() as workers:
        quiet = await start_worker("--discovery", "none")
        chatty = await start_worker("--discovery", "none", "--log-level", "INFO")
        workers += [quiet, chatty]
        for worker in workers:
            assert await worker.terminate() == 0
        outputs = []
        for worker in workers:
            assert worker.process.stderr is not None
            outputs.append((await worker.process.stderr.read()).decode())

    assert outputs[0] == ""
    first, *_, last = outputs[1].splitlines()
    assert " INFO distaff.runtime.worker.server worker=" in first
    assert "serving on" in first
    assert last.endswith(" stopped")

"""``distaff worker --log-level --log-format``: one line per event, each naming the worker."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import grpc.aio

import distaff
from distaff.serialization import rpc, wire

from . import output_routines as orr
from . import routines as r
from .durable import durable_workers, start_worker
from .test_metrics import scrape


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


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
            for _ in range(2):  # on each worker, round robin
                await r.warn_from_a_thread("a library speaks")
        assert await logged.terminate() == 0
        assert logged.process.stderr is not None
        lines = (await logged.process.stderr.read()).decode().splitlines()

    not_json = [line for line in lines if not _is_json(line)]
    assert not_json == [], "\n".join(lines)
    entries = [json.loads(line) for line in lines]
    assert {e["worker"] for e in entries} == {uid}
    messages = [e["message"] for e in entries]
    assert messages[0].startswith(f"serving on {logged.address} (pid {logged.pid}")
    assert any(m.startswith("admitted worker ") for m in messages)
    assert any(m.startswith("stopping: leaving discovery") for m in messages)
    assert any(m.startswith("draining: refusing new calls") for m in messages)
    assert messages[-1] == "stopped"
    assert len(entries) < 16  # 46 calls ran: no line per call
    spoken = [(e["logger"], e["level"]) for e in entries if "a library speaks" in e["message"]]
    assert spoken == [("thirdparty", "WARNING"), ("py.warnings", "WARNING"), ("stderr", "WARNING")]
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


async def test_a_call_refused_while_draining_is_logged_and_counted() -> None:
    async with durable_workers() as workers:
        worker = await start_worker(
            "--discovery", "none", "--grace", "20", "--log-level", "INFO",
            "--metrics-port", "0",
        )  # fmt: skip
        workers.append(worker)
        async with distaff.WorkerPool(discovery=f"static://{worker.address}") as pool:
            await pool.proxy.wait_for(bool, timeout=10)
            port = int(dict(pool.proxy.workers[0].options)["metrics_port"])
            held = asyncio.ensure_future(orr.snooze(30))  # keeps the worker draining
            try:
                async with asyncio.timeout(20):
                    while (await scrape(port))[("distaff_worker_calls_in_flight", ())] != 1:
                        await asyncio.sleep(0.05)
                worker.process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    while not await refused_on_new_session(worker.address):
                        await asyncio.sleep(0.05)
                samples = await scrape(port)
            finally:
                held.cancel()
                await asyncio.gather(held, return_exceptions=True)
        await worker.terminate()
        assert worker.process.stderr is not None
        log = (await worker.process.stderr.read()).decode()

    rejected = (("outcome", "rejected"), ("routine", "unknown"))
    assert samples[("distaff_worker_calls_total", rejected)] >= 1
    assert "refused 1 new call(s): the worker is draining" in log


async def refused_on_new_session(address: str) -> bool:
    """Open a fresh session whose first envelope also starts a call; True if refused."""
    async with grpc.aio.insecure_channel(address) as channel:
        stream = rpc.open_session(channel)
        envelope = wire.Envelope()
        envelope.frames.add().hello.protocol = wire.PROTOCOL_VERSION
        start = envelope.frames.add()
        start.call = 1
        start.start.task_id = "never-runs"
        await stream.write(envelope)
        await stream.done_writing()
        kinds = [f.WhichOneof("kind") async for reply in stream for f in reply.frames]
    return "reject" in kinds

"""Prometheus metrics of workers and callers, scraped over HTTP on loopback."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import distaff
import distaff.metrics
from tests.integration import output_routines as r
from tests.integration import routines
from tests.integration.durable import durable_workers, start_worker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape_blocking(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(port: int) -> Samples:
    return await asyncio.to_thread(_scrape_blocking, port)


def metrics_port(pool: distaff.WorkerPool) -> int:
    (worker,) = pool.proxy.workers
    return int(dict(worker.options)["metrics_port"])


async def test_worker_counts_calls_by_routine_and_outcome() -> None:
    async with distaff.WorkerPool(spawn=1, metrics=True) as pool:
        port = metrics_port(pool)
        for n in range(3):
            await routines.echo(n)
        with pytest.raises(ValueError, match="boom"):
            await r.fail("boom")
        with pytest.raises(TimeoutError), distaff.RuntimeContext(timeout=0.2):
            await r.snooze(5)
        assert [i async for i in routines.countdown(4)] == [4, 3, 2, 1]
        samples = await scrape(port)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("distaff_worker_calls_total", routine="echo", outcome="ok") == 3
    assert value("distaff_worker_calls_total", routine="fail", outcome="error") == 1
    assert value("distaff_worker_calls_total", routine="countdown", outcome="ok") == 1
    assert value("distaff_worker_stream_items_total", routine="countdown") == 4
    assert value("distaff_worker_call_duration_seconds_count", routine="echo") == 3
    assert value("distaff_worker_call_duration_seconds_bucket", routine="echo", le="60.0") == 3
    assert value("distaff_worker_call_duration_seconds_bucket", routine="echo", le="0.0001") <= 3
    # the caller's deadline cancels the remote call, or the worker's timeout fires first
    assert (
        samples.get(("distaff_worker_calls_total", (("outcome", "timeout"), ("routine", "snooze"))))
        or samples.get(
            ("distaff_worker_calls_total", (("outcome", "cancelled"), ("routine", "snooze")))
        )
    ) == 1
    info = [key for key in samples if key[0] == "distaff_worker_info"]
    assert len(info) == 1
    assert ("version", distaff.__version__) in info[0][1]


async def test_metrics_answer_while_a_routine_blocks_the_event_loop() -> None:
    async with distaff.WorkerPool(spawn=1, metrics=True) as pool:
        port = metrics_port(pool)
        blocked = asyncio.ensure_future(r.block_loop(4.0))
        try:
            async with asyncio.timeout(3.5):
                while True:
                    started = time.monotonic()
                    samples = await scrape(port)
                    took = time.monotonic() - started
                    if samples[("distaff_worker_calls_in_flight", ())] == 1:
                        break
        finally:
            await blocked
    assert took < 1.0


async def test_the_routine_label_is_capped_and_the_rest_counted_as_other() -> None:
    ns = f"metrics-{uuid.uuid4().hex[:8]}"
    async with durable_workers() as workers:
        workers.append(
            await start_worker(
                "--discovery", "local", "--namespace", ns, "--metrics-port", "0",
                "--metrics-routines", "1",
            )
        )  # fmt: skip
        async with distaff.WorkerPool(discovery=f"local://{ns}") as pool:
            await pool.proxy.wait_for(bool, timeout=10)
            port = metrics_port(pool)
            await routines.echo(1)
            await routines.pid()
            await routines.task_info()
            samples = await scrape(port)
        await workers[0].terminate()

    labelled = {
        dict(labels)["routine"]: value
        for (name, labels), value in samples.items()
        if name == "distaff_worker_calls_total"
    }
    assert labelled == {"echo": 1, "other": 2}


async def test_caller_metrics_count_dispatches_attempts_and_durations() -> None:
    registry = CollectorRegistry()
    distaff.metrics.enable(registry)
    try:
        async with distaff.WorkerPool(spawn=1):
            assert registry.get_sample_value("distaff_caller_workers_admitted") == 1
            for n in range(5):
                await routines.echo(n)
        empty = f"local://nobody-{uuid.uuid4().hex[:8]}"
        async with distaff.WorkerPool(discovery=empty, wait=0.2):
            with pytest.raises(distaff.NoWorkersAvailable):
                await routines.echo(0)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
        }
    finally:
        distaff.metrics.disable()

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("distaff_caller_dispatches_total", outcome="ok") == 5
    assert value("distaff_caller_dispatches_total", outcome="no_workers") == 1
    assert value("distaff_caller_no_workers_total") == 1
    assert value("distaff_caller_attempts_total") == 5
    assert value("distaff_caller_call_duration_seconds_count", routine="echo") == 6
    assert value("distaff_caller_workers_admitted") == 0


async def test_caller_metrics_are_served_over_http() -> None:
    registry = CollectorRegistry()
    server, thread = distaff.metrics.serve(0, registry=registry)
    try:
        async with distaff.WorkerPool(spawn=1):
            await routines.echo(1)
        samples = await scrape(server.server_port)
        distaff.metrics.disable()
        assert list(registry.collect()) == []  # disabled: unregistered
    finally:
        distaff.metrics.disable()
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert samples[("distaff_caller_dispatches_total", (("outcome", "ok"),))] == 1

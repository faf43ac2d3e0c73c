"""Trace context travels with calls: caller, worker and nested worker share one trace."""

from __future__ import annotations

import os
import subprocess
import sys

from opentelemetry import trace

import distaff
from tests.integration import trace_routines as t
from tests.integration.durable import ROOT


async def test_a_nested_call_continues_the_callers_trace() -> None:
    tracer = trace.get_tracer("test")
    async with distaff.WorkerPool(spawn=2) as pool:
        pids, uids = set(pool.pids), {m.uid for m in pool.proxy.workers}
        with tracer.start_as_current_span("root") as root:
            for _ in range(6):  # until the nested call lands on the other worker
                outer, inner = await t.outer()
                if outer["pid"] != inner["pid"]:
                    break
        ended = dict([await t.finished_spans(), await t.finished_spans()])
    root_context = root.get_span_context()

    assert {outer["pid"], inner["pid"]} == pids  # three processes
    assert outer["trace_id"] == inner["trace_id"] == root_context.trace_id
    assert outer["parent_id"] == root_context.span_id
    assert inner["parent_id"] == outer["span_id"]
    assert (outer["name"], inner["name"]) == ("distaff outer", "distaff inner")
    attributes = outer["attributes"]
    assert attributes["distaff.attempt"] == 0
    assert attributes["process.pid"] == outer["pid"]
    assert attributes["distaff.worker.uid"] in uids
    assert attributes["distaff.worker.host"]
    # each worker's SDK exported its span with the right parent
    assert set(ended) == pids
    assert ("distaff outer", outer["span_id"], root_context.span_id) in ended[outer["pid"]]
    assert ("distaff inner", inner["span_id"], outer["span_id"]) in ended[inner["pid"]]


async def test_without_a_current_span_no_worker_span_is_made() -> None:
    async with distaff.WorkerPool(spawn=1):
        here = await t.inner()

    assert here["name"] == ""  # the worker ran the body outside any span
    assert here["parent_id"] is None


def test_nothing_of_opentelemetry_or_prometheus_is_imported_when_absent() -> None:
    script = (
        "import sys, asyncio\n"
        "sys.modules['opentelemetry'] = None  # as if not installed\n"
        "import distaff\n"
        "from tests.integration import routines as r\n"
        "async def main():\n"
        "    async with distaff.WorkerPool(spawn=1):\n"
        "        assert await r.echo(5) == 5\n"
        "asyncio.run(main())\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.', 'prometheus'))]\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "[]\n"

"""What output forwarding and metrics cost per call, A/B interleaved.

``python -m bench.overhead [--rounds N]`` runs W1-like (sequential no-op
calls: latency p50) and W2-like (no-op calls, 500 in flight: calls/s and CPU
per call of caller and worker) workloads on a one-worker pool, in a fresh
caller process per run, for three configurations, interleaved round by
round in a shuffled order so that load drifting on a shared machine hits
them alike:

* ``off``: ``WorkerPool(forward_output=False)``, no metrics;
* ``output``: output forwarding on (the default);
* ``output+metrics``: forwarding on, ``WorkerPool(metrics=True)`` and
  ``distaff.metrics.enable()`` in the caller;
* ``off-again``: ``off`` once more, to show the noise between identical runs.

It prints the median of each figure per configuration and the ratios to
``off``. CPU per call (process CPU time, not wall time) is the steadier
figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

CONFIGS = ("off", "output", "output+metrics", "off-again")
W1_CALLS = 1_000
W2_CALLS = 10_000
LANES = 500


def _worker_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _one(config: str) -> dict[str, float]:
    import distaff
    from bench.routines import noop

    if config == "output+metrics":
        import distaff.metrics

        distaff.metrics.enable()
    options: dict[str, Any] = {
        "forward_output": not config.startswith("off"),
        "metrics": config == "output+metrics",
    }
    async with distaff.WorkerPool(spawn=1, **options) as pool:
        for _ in range(500):
            await noop()
        latencies = []
        for _ in range(W1_CALLS):
            started = time.perf_counter()
            await noop()
            latencies.append(time.perf_counter() - started)
        remaining = W2_CALLS

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await noop()

        cpu, worker_cpu, wall = time.process_time(), _worker_cpu(pool.pids), time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(LANES):
                group.create_task(lane())
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        worker_cpu = _worker_cpu(pool.pids) - worker_cpu
    return {
        "w1_p50_us": statistics.median(latencies) * 1e6,
        "w2_calls_per_s": W2_CALLS / wall,
        "w2_caller_cpu_us": cpu / W2_CALLS * 1e6,
        "w2_worker_cpu_us": worker_cpu / W2_CALLS * 1e6,
    }


def _per_call_us(fn: Any, n: int = 200_000) -> float:
    """CPU microseconds per call of ``fn`` (best of 5), less the empty loop."""

    def timed(body: Any) -> float:
        start = time.process_time()
        for _ in range(n):
            body()
        return (time.process_time() - start) / n * 1e6

    return min(timed(fn) for _ in range(5)) - min(timed(lambda: None) for _ in range(5))


async def _micro() -> None:
    """The code each feature adds to one call, timed alone (deterministic, unlike W1/W2 here)."""
    import distaff.metrics
    from distaff.proxy import observe
    from distaff.proxy.output import current_output_sink
    from distaff.runtime.worker.instruments import Instruments
    from distaff.runtime.worker.metrics import WorkerMetrics

    instruments = Instruments("uid")

    def send(call: int, outputs: Any) -> None:
        pass

    def worker_output() -> None:  # what the worker service does per call with forwarding on
        instruments.capture_output("noop", functools.partial(send, 1)).close()

    worker_metrics = WorkerMetrics(lambda: 0)

    def worker_metric() -> None:
        worker_metrics.finished("noop", "ok", time.perf_counter())

    caller = distaff.metrics.CallerMetrics()

    def caller_metric() -> None:  # dispatched, attempted, finished: one coroutine call
        started = time.perf_counter()
        caller.attempted()
        caller.dispatched("ok")
        caller.finished("noop", time.perf_counter() - started)

    def hooks_off() -> None:  # the checks every call pays with everything off
        if observe.current is not None:
            raise AssertionError
        current_output_sink.get()

    for name, fn in (
        ("worker, output forwarding on", worker_output),
        ("worker, metrics on", worker_metric),
        ("caller, metrics on", caller_metric),
        ("caller, all off (hook checks)", hooks_off),
    ):
        print(f"{name:34} {_per_call_us(fn):6.2f} µs per call")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--micro", action="store_true", help="time the added code alone")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.micro:
        asyncio.run(_micro())
        return
    if args.one:
        print(json.dumps(asyncio.run(_one(args.one))))
        return
    results: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    for round_ in range(args.rounds):
        order = random.sample(CONFIGS, len(CONFIGS))
        for config in order:
            done = subprocess.run(
                [sys.executable, "-m", "bench.overhead", "--one", config],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            results[config].append(json.loads(done.stdout))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    medians = {
        c: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for c, runs in results.items()
    }
    print(f"load average at end: {os.getloadavg()}")
    print(f"{'figure':22}" + "".join(f"{c:>22}" for c in CONFIGS))
    for key in medians["off"]:
        cells = ""
        for config in CONFIGS:
            value = medians[config][key]
            ratio = value / medians["off"][key]
            cells += f"{value:>13.1f} ({ratio:4.2f}x)"
        print(f"{key:22}{cells}")


if __name__ == "__main__":
    main()

"""W6: balancers under skew, a slow worker, and a fair control; plus the micro cost.

``python -m bench.balancing`` (part of ``make bench``). Four workers, each
running one call at a time (the task is an ``asyncio.sleep`` inside a
semaphore, so the two cores go to the runtime, not to the tasks). Every
balancer gets the same seeded arrival and duration sequences, in a fresh
caller process per run, balancers interleaved and rotated per repetition.

Scenarios: A (skew: 90 % 1 ms, 10 % 100 ms), B (uniform 10 ms, one worker 4x
slower), C (uniform 10 ms, equal workers). Each runs open loop (Poisson
arrivals at 70 % of capacity; latency counted from the intended arrival) and
closed loop (8 lanes, each awaiting one call at a time). For A it also
measures the floor: a lone 1 ms call on an idle pool (one lane, no queue
anywhere), below which no balancer can bring a 1 ms call's latency.

``--micro`` measures the cost per dispatch of each balancer's choice on fake
connections (no gRPC) for 1 to 1,000 workers.

Results: ``bench/results/balancing.json`` and ``balancing.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
BALANCERS = ["roundrobin", "random", "leastloaded", "latency"]
SCENARIOS = {
    # name: (description, capacity in calls/s of the 4 workers)
    "A": "skew: 90% 1 ms, 10% 100 ms",
    "B": "one worker 4x slower, 10 ms",
    "C": "control: uniform 10 ms",
}
WORKERS = 4
LANES = 8
LOAD = 0.7


def durations(scenario: str, count: int, seed: int) -> list[float]:
    """The seeded task durations (s) of a run."""
    rng = random.Random(seed)
    if scenario == "A":
        return [0.1 if rng.random() < 0.1 else 0.001 for _ in range(count)]
    return [0.01] * count


def capacity(scenario: str) -> float:
    """Calls per second the four one-at-a-time workers can do, on average."""
    if scenario == "A":
        return WORKERS / (0.9 * 0.001 + 0.1 * 0.1)
    if scenario == "B":
        return 3 / 0.01 + 1 / 0.04
    return WORKERS / 0.01


def make_balancer(name: str) -> Any:
    import distaff

    from .balancing_support import RandomLoadBalancer

    return {
        "roundrobin": distaff.RoundRobinLoadBalancer,
        "random": RandomLoadBalancer,
        "leastloaded": distaff.LeastLoadedLoadBalancer,
        "latency": distaff.LatencyAwareLoadBalancer,
    }[name]


def _summary(latencies: list[float], elapsed: float, imbalance: list[int]) -> dict[str, float]:
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "throughput": len(latencies) / elapsed,
        "imbalance": statistics.fmean(imbalance) if imbalance else 0.0,
    }


async def _run_one(
    scenario: str, mode: str, balancer: str, count: int, seed: int
) -> dict[str, Any]:
    import distaff

    from . import balancing_support as support

    work = durations(scenario, count, seed)
    rng = random.Random(seed + 1)
    async with distaff.WorkerPool(spawn=WORKERS, loadbalancer=make_balancer(balancer)) as pool:
        slow = pool.pids[0] if scenario == "B" else 0
        for _ in range(8):  # warm every connection
            await asyncio.gather(*(support.task(0.0, 0) for _ in range(WORKERS)))
        imbalance: list[int] = []
        latencies: list[float] = []

        async def sample() -> None:
            while True:
                loads = [c.in_flight for c in pool.proxy.context.workers.values()]
                imbalance.append(max(loads) - min(loads))
                await asyncio.sleep(0.005)

        began = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            sampler = group.create_task(sample())
            if mode == "floor":
                latencies = [await _timed(support.task(0.001, 0), None) for _ in work]
            elif mode == "open":
                rate = LOAD * capacity(scenario)
                at = began
                calls = []
                for seconds in work:
                    at += rng.expovariate(rate)
                    delay = at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    calls.append(group.create_task(_timed(support.task(seconds, slow), at)))
                latencies = list(await asyncio.gather(*calls))
            else:
                queue = iter(work)

                async def lane() -> None:
                    for seconds in queue:
                        latencies.append(await _timed(support.task(seconds, slow), None))

                await asyncio.gather(*(lane() for _ in range(LANES)))
            sampler.cancel()
        elapsed = time.perf_counter() - began
    return _summary(latencies, elapsed, imbalance)


async def _timed(call: Any, since: float | None) -> float:
    start = time.perf_counter() if since is None else since
    await call
    return time.perf_counter() - start


def micro(reps: int = 5, choices: int = 2000) -> dict[str, dict[int, float]]:
    """Cost per choice (us) of each balancer on fake connections, by pool size."""
    import distaff
    from distaff.testing import FakeConnection

    from .balancing_support import RandomLoadBalancer

    results: dict[str, dict[int, float]] = {}
    for name, factory in [
        ("roundrobin", distaff.RoundRobinLoadBalancer),
        ("random", RandomLoadBalancer),
        ("leastloaded", distaff.LeastLoadedLoadBalancer),
        ("latency", distaff.LatencyAwareLoadBalancer),
    ]:
        results[name] = {}
        for size in (1, 16, 64, 256, 1000):
            context = distaff.LoadBalancerContext()
            for i in range(size):
                meta = distaff.WorkerMetadata(uid=f"w{i}", address=f"127.0.0.1:{i + 1}")
                context.add_worker(meta, FakeConnection(meta.address, in_flight=i % 7))  # type: ignore[arg-type]
            balancer = factory()

            async def choose(n: int, balancer: Any = balancer, context: Any = context) -> float:
                began = time.perf_counter()
                for _ in range(n):
                    candidates = balancer.delegate(context=context)
                    metadata, _ = await anext(candidates)
                    with contextlib.suppress(StopAsyncIteration):
                        await candidates.asend(metadata)
                return (time.perf_counter() - began) / n * 1e6

            results[name][size] = min(asyncio.run(choose(choices)) for _ in range(reps))
    return results


_HEADER = (
    "| scenario | mode | balancer | p50 ms | p90 ms | p99 ms | p99.9 ms | calls/s | imbalance "
    "| p99 vs RR | p50 vs RR | calls/s vs RR |"
)
SIZES = (1, 16, 64, 256, 1000)


def _table(summary: dict[str, Any]) -> str:
    lines = [_HEADER, "|" + "---|" * 12]
    for key, row in summary.items():
        scenario, mode, _ = key.split("/")
        base = summary[f"{scenario}/{mode}/roundrobin"]
        cells = [
            *key.split("/"),
            *(f"{row[m]:.1f}" for m in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")),
            f"{row['throughput']:.0f}",
            f"{row['imbalance']:.2f}",
            f"{row['p99_ms'] / base['p99_ms']:.2f}x",
            f"{row['p50_ms'] / base['p50_ms']:.2f}x",
            f"{row['throughput'] / base['throughput']:.2f}x",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _floor(summary: dict[str, Any]) -> list[str]:
    floor, closed = summary.get("A/floor/roundrobin"), summary.get("A/closed/roundrobin")
    if floor is None or closed is None:
        return []
    return [
        f"Floor: a lone 1 ms call on an idle pool, p50 {floor['p50_ms']:.2f} ms, "
        f"{floor['p50_ms'] / closed['p50_ms']:.2f}x round robin's A closed-loop p50 "
        "(no balancer brings a 1 ms call below it)",
        "",
    ]


def _micro_table(table: dict[str, dict[int, float]]) -> list[str]:
    lines = [
        "Micro: cost per choice (us) by pool size",
        "",
        "| balancer | " + " | ".join(str(n) for n in SIZES) + " | 1000 vs 16 |",
        "|" + "---|" * (len(SIZES) + 2),
    ]
    for name, row in table.items():
        cells = " | ".join(f"{row[n]:.2f}" for n in SIZES)
        lines.append(f"| {name} | {cells} | {row[1000] / row[16]:.2f}x |")
    return lines


def _path() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _run_subprocess(scenario: str, mode: str, balancer: str, seed: int, count: int) -> Any:
    command = [sys.executable, "-m", "bench.balancing", "--count", str(count), "--one"]
    out = subprocess.run(
        [*command, scenario, mode, balancer, str(seed)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCH_DIR.parent,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR.parent), *_path()])},
    )
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.balancing")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--count", type=int, default=1200, help="calls per run")
    parser.add_argument("--scenarios", default="A,B,C")
    parser.add_argument("--micro", action="store_true", help="only the micro-benchmark")
    parser.add_argument("--quick", action="store_true", help="a smoke run of the micro part")
    parser.add_argument("--one", nargs=4, metavar=("SCENARIO", "MODE", "BALANCER", "SEED"))
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    if args.one:
        scenario, mode, balancer, seed = args.one
        result = asyncio.run(_run_one(scenario, mode, balancer, args.count, int(seed)))
        print(json.dumps(result))
        return 0
    if args.micro:
        print("\n".join(_micro_table(micro())))
        return 0
    runs: dict[str, list[dict[str, float]]] = {}
    for rep in range(args.reps):
        for scenario in args.scenarios.split(","):
            for mode in ("open", "closed", "floor"):
                if mode == "floor" and scenario != "A":
                    continue
                shift = rep % len(BALANCERS)
                order = BALANCERS[shift:] + BALANCERS[:shift]
                for balancer in ["roundrobin"] if mode == "floor" else order:
                    result = _run_subprocess(scenario, mode, balancer, 1000 + rep, args.count)
                    if result is not None:
                        runs.setdefault(f"{scenario}/{mode}/{balancer}", []).append(result)
                    print(f"rep {rep} {scenario} {mode} {balancer}", file=sys.stderr, flush=True)
    summary = {
        key: {metric: statistics.median(r[metric] for r in rows) for metric in rows[0]}
        for key, rows in runs.items()
    }
    micro_table = micro(1, 50) if args.quick else micro()
    args.out.mkdir(parents=True, exist_ok=True)
    everything = {"runs": runs, "summary": summary, "micro": micro_table}
    (args.out / "balancing.json").write_text(json.dumps(everything, indent=1))
    title = f"W6: {args.reps} reps of {args.count} calls; medians; ratios to round robin, same run"
    md = [title, "", _table(summary), "", *_floor(summary), *_micro_table(micro_table)]
    (args.out / "balancing.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

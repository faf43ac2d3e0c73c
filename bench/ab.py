"""Two source trees of distaff against each other, interleaved: W1 and W2 shapes.

``python -m bench.ab --a DIR --b DIR [--rounds 8] [--out FILE]``

Each DIR is a checkout of distaff (``git worktree add /tmp/snapX REV``).
Every round runs one fresh caller per tree, A then B, so that a shared
machine's drift hits both alike. A caller starts ``WorkerPool(spawn=2)``
and measures the W2 shape (20,000 no-op calls, 500 in flight; the best of
three passes: calls/s and the caller's CPU per call) and the W1 shape
(2,000 sequential no-op calls: p50). It prints each round's B/A ratios and
their medians: CPU per call is the steadier figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CALLER = """
import asyncio, json, statistics, time
import distaff
from bench.routines import noop
from bench.runner import fan_out

async def main():
    async with distaff.WorkerPool(spawn=2):
        await fan_out(noop, 3000, 500)
        passes = []
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            await fan_out(noop, 20000, 500)
            passes.append((20000 / (time.perf_counter() - wall),
                           (time.process_time() - cpu) / 20000 * 1e6))
        latencies = []
        for _ in range(2000):
            started = time.perf_counter()
            await noop()
            latencies.append(time.perf_counter() - started)
        print(json.dumps({
            "w2_calls_per_s": max(p[0] for p in passes),
            "w2_caller_cpu_us": min(p[1] for p in passes),
            "w1_p50_us": statistics.median(latencies) * 1e6,
        }))

asyncio.run(main())
"""

FIGURES = ("w2_calls_per_s", "w2_caller_cpu_us", "w1_p50_us")


def _run(tree: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree}")
    out = subprocess.run(
        [sys.executable, "-c", _CALLER], env=env, cwd="/", check=True, capture_output=True
    )
    figures: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return figures


def main() -> None:
    """Run the rounds and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="the baseline tree")
    parser.add_argument("--b", type=Path, required=True, help="the tree measured against it")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, help="write every run as JSON here")
    args = parser.parse_args()
    runs: list[tuple[dict[str, float], dict[str, float]]] = []
    for round_ in range(args.rounds):
        a, b = _run(args.a.resolve()), _run(args.b.resolve())
        runs.append((a, b))
        ratios = "  ".join(f"{k} {b[k] / a[k]:.2f}" for k in FIGURES)
        print(f"round {round_ + 1}: B/A {ratios}", flush=True)
    print("medians:")
    for key in FIGURES:
        a_values, b_values = [a[key] for a, _ in runs], [b[key] for _, b in runs]
        ratio = statistics.median(b[key] / a[key] for a, b in runs)
        print(
            f"  {key}: A {statistics.median(a_values):,.1f}  B {statistics.median(b_values):,.1f}"
            f"  B/A per round, median {ratio:.2f}"
        )
    if args.out is not None:
        rounds = [{"a": a, "b": b} for a, b in runs]
        args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "rounds": rounds}))


if __name__ == "__main__":
    main()

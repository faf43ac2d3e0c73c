"""W2's shape in one caller, run alternately from two trees (a record, not a bench).

``PYTHONPATH=TREE/src:TREE python w2_harness.py TREE``: two workers, 500
lanes, 20,000 no-op calls per round after a warm-up; prints the median of
three rounds (calls/s, and CPU per call of the caller and the workers).
"""

from __future__ import annotations

import asyncio
import sys
import time


async def main(root: str) -> None:
    sys.path[:0] = [f"{root}/src", root]
    import distaff
    from bench.common import cpu_seconds
    from bench.routines import noop

    async with distaff.WorkerPool(spawn=2) as pool:

        async def lane(n: int) -> None:
            for _ in range(n):
                await noop()

        await asyncio.gather(*(lane(4) for _ in range(500)))
        rounds = []
        for _ in range(3):
            workers = sum(cpu_seconds(pid) or 0.0 for pid in pool.pids)
            caller = time.process_time()
            began = time.perf_counter()
            await asyncio.gather(*(lane(40) for _ in range(500)))
            elapsed = time.perf_counter() - began
            caller = time.process_time() - caller
            workers = sum(cpu_seconds(pid) or 0.0 for pid in pool.pids) - workers
            rounds.append((20_000 / elapsed, caller / 20_000 * 1e6, workers / 20_000 * 1e6))
        calls, caller_us, workers_us = sorted(rounds)[1]
        print(
            f"{root}: {calls:.0f} calls/s,",
            f"caller {caller_us:.0f} us, workers {workers_us:.0f} us",
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

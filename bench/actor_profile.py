"""cProfile an actor call against a routine call, at the caller and at the worker.

``python -m bench.actor_profile [--calls 5000] [--top 15]``

One worker; sequential no-op calls of the routine, then of an actor's
method (default turns), each under cProfile in the caller and in the
worker. Prints, per side, the own time per call that each function costs
the actor more (+) or less (-) than the routine: the actor path's extra
cost, function by function. cProfile inflates every Python call, so read
the differences, not the totals; waits (epoll) and socket writes are left
out, being load rather than cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
from collections.abc import Awaitable, Callable
from typing import Any

import distaff

from . import routines

_WAITS = ("'poll' of 'select.epoll'", "_call.py:486(_write)", "service.py:63(write)")


async def _profile(call: Callable[[], Awaitable[Any]], calls: int) -> dict[str, dict[str, float]]:
    await routines.profile_start()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        await call()
    profiler.disable()
    return {"caller": routines.own_times(profiler), "worker": await routines.profile_stop()}


def _report(
    side: str, routine: dict[str, float], actor: dict[str, float], calls: int, top: int
) -> None:
    def busy(times: dict[str, float]) -> float:
        return sum(v for k, v in times.items() if not any(w in k for w in _WAITS)) / calls * 1e6

    print(
        f"{side}: routine {busy(routine):.1f} µs/call, actor {busy(actor):.1f} µs/call (profiled)"
    )
    keys = (set(routine) | set(actor)) - {
        k for k in set(routine) | set(actor) if any(w in k for w in _WAITS)
    }
    diffs = sorted(((actor.get(k, 0.0) - routine.get(k, 0.0)) / calls * 1e6, k) for k in keys)
    for delta, key in [*diffs[::-1][:top], *diffs[: top // 3]]:
        print(f"  {delta:+7.2f}  {key}")


async def main(calls: int, top: int) -> None:
    async with distaff.WorkerPool(spawn=1):
        actor = await routines.NoopActor.spawn()
        for call in (routines.noop, actor.noop):
            for _ in range(500):
                await call()
        routine_times = await _profile(routines.noop, calls)
        actor_times = await _profile(actor.noop, calls)
        for side in ("caller", "worker"):
            _report(side, routine_times[side], actor_times[side], calls, top)
        await actor.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.actor_profile")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.top))

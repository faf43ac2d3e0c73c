"""A tour of distaff on a local pool: calls, streams, nesting, remote errors.

Run with ``make demo``. Each line says which process served it.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback

import distaff


@distaff.routine
async def whoami(label: str) -> str:
    """A plain call: returns where it ran."""
    return f"{label} served by worker pid {os.getpid()}"


@distaff.routine
async def countdown(start: int):  # type: ignore[no-untyped-def]
    """A streamed generator: the caller can send it a new starting point."""
    n = start
    while n > 0:
        reset = yield (n, os.getpid())
        n = reset if reset is not None else n - 1


@distaff.routine
async def fib(n: int) -> tuple[int, set[int]]:
    """A nested call tree: each level dispatches its two halves to the pool."""
    if n < 2:
        return n, {os.getpid()}
    (a, pids_a), (b, pids_b) = await asyncio.gather(fib(n - 1), fib(n - 2))
    return a + b, pids_a | pids_b | {os.getpid()}


class InventoryError(Exception):
    """A domain error that travels with its attributes."""

    def __init__(self, item: str, missing: int) -> None:
        super().__init__(f"{missing} x {item!r} missing")
        self.item = item
        self.missing = missing


@distaff.routine
async def reserve(item: str, count: int) -> None:
    """Fails on the worker; the caller gets the same exception back."""
    try:
        raise LookupError(f"no stock record for {item!r}")
    except LookupError as exc:
        raise InventoryError(item, count) from exc


async def main() -> None:
    """Start a two-worker pool and show each kind of call."""
    print(f"caller pid {os.getpid()}")
    started = time.perf_counter()
    async with distaff.WorkerPool(spawn=2) as pool:
        print(
            f"pool of {len(pool.pids)} workers {pool.pids} ready in "
            f"{time.perf_counter() - started:.2f} s\n"
        )

        print("-- plain calls")
        for label in ("first", "second", "third"):
            print("  ", await whoami(label))

        print("\n-- a streamed generator (asend resets it once)")
        stream = countdown(3)
        print("   yielded", await anext(stream))
        print("   after asend(2):", await stream.asend(2))
        async for value in stream:
            print("   yielded", value)

        print("\n-- nested calls: fib(12) fans out across the pool")
        value, pids = await fib(12)
        print(f"   fib(12) = {value}, computed by worker pids {sorted(pids)}")

        print("\n-- a remote exception, with its remote traceback and cause")
        try:
            await reserve("bolts", 3)
        except InventoryError as exc:
            print(f"   caught {type(exc).__name__}: item={exc.item!r} missing={exc.missing}")
            remote = [
                f for f in traceback.extract_tb(exc.__traceback__) if "/distaff/" not in f.filename
            ]
            for frame in remote[-1:]:
                print(f"   raised at {frame.filename}:{frame.lineno} in {frame.name}: {frame.line}")
            print(f"   caused by {type(exc.__cause__).__name__}: {exc.__cause__}")
            print()

        calls = 1000
        t0 = time.perf_counter()
        await asyncio.gather(*(whoami("x") for _ in range(calls)))
        elapsed = time.perf_counter() - t0
        print(
            f"-- {calls} concurrent calls in {elapsed * 1000:.0f} ms "
            f"({calls / elapsed:,.0f} calls/s)"
        )
    print("pool stopped; no worker left behind")


if __name__ == "__main__":
    asyncio.run(main())

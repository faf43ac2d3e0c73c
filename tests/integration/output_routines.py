"""Routines that print and log on workers (importable by the workers)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import AsyncGenerator

import distaff

log = logging.getLogger("chatty")


@distaff.routine
async def chatty(tag: str) -> int:
    """Print to stdout and stderr, log a warning; return the worker's PID."""
    print(f"hello from {tag}")
    print(f"complaint from {tag}", file=sys.stderr)
    log.warning("logged by %s", tag)
    return os.getpid()


@distaff.routine
def plain_chatty(tag: str) -> int:
    """A plain function (run in a worker thread) that prints."""
    print(f"plain {tag}", flush=True)
    return os.getpid()


@distaff.routine
async def outer(tag: str) -> tuple[int, int]:
    """Print, then call ``chatty`` from the worker: a nested call."""
    print(f"outer {tag}")
    return os.getpid(), await chatty(f"inner {tag}")


@distaff.routine
async def tagged(tag: str, lines: int) -> int:
    """Print ``lines`` numbered lines naming ``tag``, yielding between them."""
    for n in range(lines):
        print(f"{tag} line {n}")
        await asyncio.sleep(0.001)
    return lines


@distaff.routine
async def flood(lines: int) -> float:
    """Print ``lines`` lines as fast as possible; return the seconds it took."""
    start = time.monotonic()
    for n in range(lines):
        print(f"flood {n}")
        if n % 100 == 0:
            await asyncio.sleep(0)
    return time.monotonic() - start


@distaff.routine
async def counting(n: int) -> AsyncGenerator[int, None]:
    """A generator that prints before each item."""
    for i in range(n):
        print(f"item {i}")
        yield i


@distaff.routine
async def block_loop(seconds: float) -> None:
    """Block the worker's event loop (a bug the metrics must survive)."""
    time.sleep(seconds)  # noqa: ASYNC251 - blocking on purpose


@distaff.routine
async def fail(message: str) -> None:
    """Raise ValueError(message)."""
    raise ValueError(message)


@distaff.routine
async def snooze(seconds: float) -> None:
    """Sleep without blocking the loop."""
    await asyncio.sleep(seconds)


@distaff.routine
async def garbage_watch(start: bool) -> int:
    """Start: collect, then stop the collector. Stop: the objects a collection finds now."""
    if start:
        gc.collect()
        gc.disable()
        return 0
    try:
        return gc.collect()  # what reference counting could not free since the start
    finally:
        gc.enable()


@distaff.routine
async def silent() -> None:
    """Print nothing: the output slot is all the call pays for."""
    return None

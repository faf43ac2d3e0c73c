"""Routines that read and set distaff.ContextVar values (importable by workers)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import distaff

request_id: distaff.ContextVar[str] = distaff.ContextVar("test-request-id", default="none")
hops: distaff.ContextVar[int] = distaff.ContextVar("test-hops", default=0)


@distaff.routine
async def read() -> str:
    """The request id the routine sees."""
    return request_id.get()


@distaff.routine
async def set_and_return(value: str) -> str:
    """Set the request id on the worker; return what it was."""
    before = request_id.get()
    request_id.set(value)
    return before


@distaff.routine
async def set_then_fail(value: str) -> None:
    """Set the request id, then raise."""
    request_id.set(value)
    raise KeyError(value)


@distaff.routine
async def nest(depth: int) -> list[tuple[str, int]]:
    """Each level adds a hop and records what it saw, ``depth`` levels deep."""
    seen = [(request_id.get(), hops.get())]
    hops.set(hops.get() + 1)
    if depth > 1:
        seen += await nest(depth - 1)
    return seen


@distaff.routine
async def count_steps(n: int) -> AsyncGenerator[int, None]:
    """Yield 0..n-1, setting hops to each value before yielding it."""
    for i in range(n):
        hops.set(i)
        yield i

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


@distaff.routine
def set_and_return_plain(value: str) -> str:
    """``set_and_return`` as a plain def (runs in a worker thread)."""
    before = request_id.get()
    request_id.set(value)
    return before


@distaff.routine
def set_then_fail_plain(value: str) -> None:
    """``set_then_fail`` as a plain def."""
    request_id.set(value)
    raise KeyError(value)


@distaff.routine
def add_hop_plain() -> int:
    """Add a hop, from a plain def; return the hops it saw."""
    seen = hops.get()
    hops.set(seen + 1)
    return seen


@distaff.routine
async def nest_plain(depth: int) -> list[tuple[str, int]]:
    """Like ``nest``, with a plain def adding each hop in between."""
    seen = [(request_id.get(), hops.get())]
    await add_hop_plain()
    if depth > 1:
        seen += await nest_plain(depth - 1)
    return seen


@distaff.routine
async def set_and_reset(value: str) -> str:
    """Set the request id, then reset it; return what it was in between."""
    token = request_id.set(value)
    between = request_id.get()
    request_id.reset(token)
    return between


@distaff.routine
def set_and_reset_plain(value: str) -> str:
    """``set_and_reset`` as a plain def."""
    token = request_id.set(value)
    between = request_id.get()
    request_id.reset(token)
    return between

"""The same routines for the peer, ``wool`` (imported only in its own venv)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import wool


@wool.routine
async def noop() -> None:
    """Do nothing: the per-call overhead alone."""
    return None


@wool.routine
async def echo(data: bytes) -> bytes:
    """Return the argument: a payload both ways."""
    return data


@wool.routine
async def count(n: int) -> AsyncIterator[int]:
    """Yield 0 .. n-1: a stream of small items."""
    for i in range(n):
        yield i

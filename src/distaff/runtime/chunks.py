"""Running many calls of a routine as one: the worker side of chunked fan-outs."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from ..serialization.tasks import decode_routine
from .routine import routine
from .worker.execute import is_plain, run_plain
from .worker.threads import serial_runner

# routine blob -> body, on a worker; routines are few, the bound is a guard
_bodies: dict[bytes, Callable[..., Any]] = {}


def _body(blob: bytes) -> Callable[..., Any]:
    body = _bodies.get(blob)
    if body is None:
        if len(_bodies) >= 1024:
            _bodies.clear()
        body = _bodies[blob] = decode_routine(blob)
    return body


@routine
async def run_chunk(
    blob: bytes, calls: list[Any], unpack: bool = True, quick: bool = False
) -> tuple[list[Any], float]:
    """Run the routine ``blob`` names once per item of ``calls``, one after another.

    Each item is an argument tuple (``unpack``) or the one argument itself;
    ``quick`` says the caller measured its items to be quick.
    Returns the results in order and the seconds the items themselves took
    (what the caller sizes the next chunks by; a plain ``def``'s thread hop
    is a cost per call, not per item, and is left out). The first failure
    stops the chunk and is raised. A plain ``def`` runs the whole chunk in
    one thread (quick chunks one at a time in the same thread: several
    sharing the GIL would all end late); a coroutine function's items run
    on the loop, each awaited in turn, with no task of their own.
    """
    body = _body(blob)
    if is_plain(body):
        threads = serial_runner() if quick else None
        timed: tuple[list[Any], float] = await run_plain(
            functools.partial(_run_plain, body, calls, unpack), threads
        )
        return timed
    started = time.perf_counter()
    results = [await body(*args) for args in calls] if unpack else [await body(x) for x in calls]
    return results, time.perf_counter() - started


def _run_plain(body: Callable[..., Any], calls: list[Any], unpack: bool) -> tuple[list[Any], float]:
    started = time.perf_counter()
    results = [body(*args) for args in calls] if unpack else list(map(body, calls))
    return results, time.perf_counter() - started

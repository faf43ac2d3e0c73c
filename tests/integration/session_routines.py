"""Routines and a balancer for the session regression tests (importable by workers)."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

import distaff


@distaff.routine
async def slow_first_step(log: str, seconds: float) -> int:
    """Record this run in ``log``, block the loop for ``seconds`` (no ack until then)."""
    pathlib.Path(log, f"{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(seconds)  # noqa: ASYNC251 - the point: the first step is slow
    return os.getpid()


class LockedBalancer:
    """A delegating balancer that holds a lock, so it cannot be pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    async def delegate(self, *, context: Any) -> AsyncGenerator[Any, Any]:
        for candidate in list(context.workers.items()):
            try:
                winner = yield candidate
            except Exception:
                continue
            if winner is not None:
                return

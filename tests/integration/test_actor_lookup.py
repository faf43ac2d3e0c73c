"""get_actor: every worker asked at once, one deadline for the whole lookup."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

import distaff

from . import actor_classes as ac


async def test_a_frozen_worker_neither_hides_an_actor_nor_stretches_the_lookup() -> None:
    name = f"found-{uuid.uuid4().hex}"
    async with distaff.WorkerPool(spawn=3) as pool:
        counter = await ac.Counter.spawn(5, name=name)
        home = await counter.pid()
        frozen = [pid for pid in pool.pids if pid != home]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)  # alive and listed, but never answers
        try:
            started = time.monotonic()
            found = await distaff.get_actor(name, timeout=5.0)
            found_after = time.monotonic() - started

            started = time.monotonic()
            with pytest.raises(ValueError, match="no actor named"):
                await distaff.get_actor(f"missing-{uuid.uuid4().hex}", timeout=1.0)
            missed_after = time.monotonic() - started
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)

        assert await found.get() == 5
        assert found_after < 2.5  # the holder's answer ends the lookup: nobody waits for the rest
        assert 1.0 <= missed_after < 2.5  # one deadline for all: not 1 s per frozen worker


async def test_a_bad_timeout_is_refused_naming_it() -> None:
    async with distaff.WorkerPool(spawn=1):
        with pytest.raises(ValueError, match="timeout must be > 0"):
            await distaff.get_actor("any", timeout=0)
        with pytest.raises(TypeError, match="timeout must be a number"):
            await distaff.get_actor("any", timeout="soon")  # type: ignore[arg-type]

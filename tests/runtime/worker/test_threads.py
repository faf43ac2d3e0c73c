"""The bounded daemon thread pool that plain def routines run on."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from distaff.runtime.worker.threads import ThreadRunner, default_limit

probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


async def test_never_more_threads_than_the_limit_run_at_once() -> None:
    runner = ThreadRunner(2)
    gate = threading.Event()
    lock = threading.Lock()
    running = peak = 0

    def job(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(10)
        with lock:
            running -= 1
        return i

    futures = [runner.submit(lambda i=i: job(i)) for i in range(6)]
    gate.set()
    results = await asyncio.gather(*futures)

    assert results == list(range(6))
    assert peak == 2


async def test_a_job_cancelled_while_queued_never_runs() -> None:
    runner = ThreadRunner(1)
    gate = threading.Event()
    ran: list[str] = []
    first = runner.submit(lambda: gate.wait(10))
    queued = runner.submit(lambda: ran.append("queued"))

    queued.cancel()
    gate.set()
    await first
    await runner.submit(lambda: None)  # the single thread has passed the queued job

    assert ran == []


async def test_jobs_see_the_submitting_context_and_raise_their_errors() -> None:
    runner = ThreadRunner(1)
    probe.set("from the caller")

    def fail() -> None:
        raise KeyError("inside")

    assert await runner.submit(probe.get) == "from the caller"
    with pytest.raises(KeyError, match="inside"):
        await runner.submit(fail)


def test_thread_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTAFF_THREADS", "3")
    assert default_limit() == 3
    monkeypatch.setenv("DISTAFF_THREADS", "many")
    with pytest.raises(ValueError, match="DISTAFF_THREADS"):
        default_limit()

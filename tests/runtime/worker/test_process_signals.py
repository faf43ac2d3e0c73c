"""Signalling a spawned worker never takes its exit status from asyncio's child watcher."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from distaff.runtime.worker.process import WorkerProcess
from distaff.runtime.worker.server import WorkerConfig


def _block_until_exited(pid: int, timeout: float = 10.0) -> None:
    """Wait, without letting the event loop run, until ``pid`` can be reaped (or was).

    Blocking is the point: asyncio's child watcher (pidfd, on 3.12+) reaps
    only from the loop, so the child stays an unreaped zombie until the test
    awaits again; that is the moment a pool stopping its workers meets.
    ``WNOWAIT`` looks without reaping. Not ``/proc/PID/stat`` saying ``Z``:
    a worker's main thread is a zombie before its other threads are gone,
    and until then nobody can reap it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return  # reaped already (a watcher thread, before 3.12)
        time.sleep(0.01)  # a poll of a condition, with the deadline above
    raise TimeoutError(f"pid {pid} did not exit within {timeout} s")


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="needs waitid")
async def test_stopping_a_worker_that_has_just_exited_keeps_its_real_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    process = WorkerProcess(WorkerConfig())  # alone: a fresh interpreter, our own child
    await process.start()
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)  # the worker we started, by its pid
    _block_until_exited(process.pid)
    assert process.running  # exited, but the loop has not heard yet

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        status = await process.stop()

    # subprocess's send_signal polls first, which reaped the zombie before the
    # watcher could: the watcher then logged "exit status already read" and
    # the pool saw 255 instead of the SIGKILL the worker died of
    assert status == -signal.SIGKILL
    assert not [r for r in caplog.records if r.name == "asyncio"]
    assert not process.running

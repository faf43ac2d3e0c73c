"""Start and stop ``distaff worker`` processes for tests, by PID, on every path."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import signal
import sys
from collections.abc import AsyncIterator, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[2]


class DurableWorker:
    """One ``python -m distaff worker`` child process."""

    def __init__(self, process: asyncio.subprocess.Process, address: str) -> None:
        self.process = process
        self.address = address

    @property
    def pid(self) -> int:
        return self.process.pid

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def start_worker(
    *args: str,
    prefix: Sequence[str] = (),
    timeout: float = 30.0,
    python: str = sys.executable,
    command: Sequence[str] | None = None,
    cwd: pathlib.Path = ROOT,
) -> DurableWorker:
    """Run ``distaff worker ARGS`` (with ``python``, in ``cwd``); wait for "serving on"."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        *(command or (python, "-m", "distaff")),
        "worker",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(timeout):
            line = (await process.stdout.readline()).decode()
        if "serving on" not in line:
            assert process.stderr is not None
            err = (await process.stderr.read()).decode()
            raise RuntimeError(f"worker did not start: {line!r} {err}")
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    return DurableWorker(process, line.rsplit(" ", 1)[1].strip())


@contextlib.asynccontextmanager
async def durable_workers() -> AsyncIterator[list[DurableWorker]]:
    """A list the test appends started workers to; all are killed at the end."""
    started: list[DurableWorker] = []
    try:
        yield started
    finally:
        for worker in started:
            await worker.kill()

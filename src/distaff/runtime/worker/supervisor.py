"""WorkerSupervisor: a pool's spawned workers, kept at strength until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..._exceptions import WorkerStartError
from . import template as _template
from .process import WorkerProcess, worker_process_environment
from .server import WorkerConfig

logger = logging.getLogger("distaff.pool")

# A worker that dies is replaced after a pause that doubles with each
# consecutive failure of its slot (a death or a failed start); a worker that
# served STABLE_AFTER seconds resets the count. When RESTART_LIMIT restarts
# in a row have failed, the slot is given up, with a warning.
RESTART_LIMIT = 5
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0
# workers stopping together report their drain within the grace and this (s)
LEAVE_MARGIN = 2.0


def backoff(failures: int) -> float:
    """Seconds to wait before the restart that follows ``failures`` failures."""
    return float(min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))


class WorkerSupervisor:
    """Starts ``count`` workers, replaces those that die (``watch``), stops them all.

    A worker stopped by ``stop()`` is never replaced; ``watch()`` is meant to
    run in a task its owner cancels before calling ``stop()``.
    """

    def __init__(self, config: WorkerConfig, count: int, sys_path: list[str]) -> None:
        self._config = config
        self._sys_path = sys_path
        self._template: _template.WorkerTemplate | None = None
        self._slots: list[WorkerProcess] = [self._new_process() for _ in range(count)]

    @property
    def processes(self) -> list[WorkerProcess]:
        """The worker processes that are running now."""
        return [p for p in self._slots if p.running]

    def _new_process(self) -> WorkerProcess:
        config = dataclasses.replace(self._config, uid=uuid.uuid4().hex)
        return WorkerProcess(config, sys_path=self._sys_path, template=self._template)

    async def start(self) -> None:
        """Start every worker and wait until each serves.

        Raises:
            WorkerStartError: a worker failed to start (the others keep running
                until ``stop()``).
        """
        await self._start_template()
        try:
            async with asyncio.TaskGroup() as group:
                for process in self._slots:
                    group.create_task(process.start())
        except ExceptionGroup as group:
            errors = group.exceptions
            if not all(isinstance(e, WorkerStartError) for e in errors):
                raise
            if len(errors) > 1:
                errors[0].add_note(f"({len(errors) - 1} more spawned workers failed to start)")
            raise errors[0] from None

    async def _start_template(self) -> None:
        """Fork workers from a warm template where possible; else each is a fresh interpreter."""
        if not _template.available() or len(self._slots) < 2:
            return
        template = _template.WorkerTemplate()
        try:
            await template.start(self._sys_path, worker_process_environment())
        except WorkerStartError as exc:
            logger.debug("no worker template (%s): workers start as fresh interpreters", exc)
            return
        self._template = template
        for process in self._slots:
            process.template = template

    async def watch(self) -> None:
        """Replace workers that die, until cancelled; never raises otherwise."""
        async with asyncio.TaskGroup() as group:
            for index in range(len(self._slots)):
                group.create_task(self._keep(index))

    async def _keep(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        started = loop.time()
        while True:
            status = await self._slots[index].wait()
            lived = loop.time() - started
            failures = 1 if lived >= STABLE_AFTER else failures + 1
            pid = self._slots[index].pid
            if failures > RESTART_LIMIT:
                logger.warning(
                    "spawned worker %d (pid %s) %s; giving up after %d restarts in a row "
                    "that did not last: the pool goes on with %d workers",
                    index,
                    pid,
                    _ended(status),
                    RESTART_LIMIT,
                    len(self.processes),
                )
                return
            delay = backoff(failures)
            logger.warning(
                "spawned worker %d (pid %s) %s; restarting it in %.1f s",
                index,
                pid,
                _ended(status),
                delay,
            )
            await asyncio.sleep(delay)
            started = loop.time()
            await self._restart(index)

    async def _restart(self, index: int) -> None:
        process = self._new_process()
        self._slots[index] = process
        try:
            await process.start()
        except WorkerStartError as exc:
            logger.warning("restarting spawned worker %d failed: %s", index, _last_line(exc))
        except Exception:
            logger.exception("restarting spawned worker %d failed", index)
            await process.kill()

    async def stop(self, *, answered: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop every worker (drain, then SIGKILL after the grace); leave none running.

        With ``answered`` (the whole pool stops, and nobody but its caller and
        its own workers calls them), the workers stop together: each drains
        its calls, and once every one has and ``answered()`` has returned (the
        caller's calls have their answers), all exit at once without ending
        their connections one by one: no frame is owed to anyone waiting for
        it by then. Otherwise each worker ends its sessions cleanly.

        Raises:
            BaseException: the first error from stopping a worker, after all are gone.
        """
        slots = list(self._slots)
        try:
            if answered is not None:
                await self._leave_together(slots, answered)
            results: list[Any] = await asyncio.gather(
                *(p.stop() for p in slots), return_exceptions=True
            )
        finally:
            await asyncio.gather(*(p.kill() for p in slots), return_exceptions=True)
            template, self._template = self._template, None
            if template is not None:
                await template.aclose()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _leave_together(
        self, slots: list[WorkerProcess], answered: Callable[[], Awaitable[None]]
    ) -> None:
        leaving = [p for p in slots if p.leave_together()]
        try:
            # each drains within the grace; the margin is for the reports
            async with asyncio.timeout(self._config.grace + LEAVE_MARGIN):
                await asyncio.gather(*(p.drained() for p in leaving))
                await answered()
        except TimeoutError:
            logger.warning(
                "the pool's workers did not all drain within %.1f s; stopping them anyway",
                self._config.grace + LEAVE_MARGIN,
            )
        finally:
            for process in leaving:
                process.go()


def _ended(status: int | None) -> str:
    if status is None:
        return "never started"
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__

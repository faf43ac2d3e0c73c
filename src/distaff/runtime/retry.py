"""Opt-in retries: which failures may run a call again, and how long to wait."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._exceptions import RpcError, StatusCode, WorkerLostError
from ..proxy import observe
from ..serialization.task import Task

T = TypeVar("T")

# the longest pause between two attempts with the default exponential backoff
MAX_BACKOFF = 30.0


def lost_mid_call(error: BaseException) -> bool:
    """True if ``error`` says the worker went away while running the call.

    That is the connection breaking after the call started (the worker died,
    its host vanished) or a stopping worker cancelling it; not the caller's
    own pool closing its connections, and not a refusal (those never ran and
    are moved to another worker anyway).
    """
    if isinstance(error, WorkerLostError):
        return True
    return (
        isinstance(error, RpcError)
        and error.code == StatusCode.CANCELLED
        and error.details.startswith("the worker stopped")
    )


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a routine's calls are retried.

    Attributes:
        retries: how many times a failed call may run again (0: at most once).
        retry_on: exception classes raised by the routine that warrant a retry,
            besides the worker going away mid-call.
        backoff: seconds: attempt ``k`` (0-based) that failed waits a random
            time in ``[0, min(30, backoff * 2**k)]`` before the next; or a
            function of ``k`` returning the pause itself.
    """

    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = ()
    backoff: float | Callable[[int], float] = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {self.retries!r}")
        bad = [c for c in self.retry_on if not (isinstance(c, type) and issubclass(c, Exception))]
        if bad:
            raise TypeError(f"retry_on takes Exception subclasses; got {bad!r}")
        if not callable(self.backoff) and not (
            isinstance(self.backoff, (int, float)) and self.backoff >= 0
        ):
            raise ValueError(f"backoff must be seconds >= 0 or a function, not {self.backoff!r}")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether a call whose attempt ``attempt`` raised ``error`` may run again."""
        if attempt >= self.retries:
            return False
        return lost_mid_call(error) or isinstance(error, self.retry_on)

    def pause(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` failed (full jitter)."""
        if callable(self.backoff):
            return max(0.0, float(self.backoff(attempt)))
        return random.uniform(0.0, min(MAX_BACKOFF, self.backoff * 2.0**attempt))


async def with_retries(
    task: Task, policy: RetryPolicy, attempt_once: Callable[[Task], Awaitable[T]]
) -> T:
    """Run ``attempt_once(task)``, again on failures the policy allows.

    Every attempt is a new task (new id, ``attempt`` one higher, the same
    pickled routine and arguments) with the time left before the first
    attempt's deadline; a pause that would end past it is not taken, and
    the last error is raised instead.
    """
    deadline = None if task.timeout is None else time.monotonic() + task.timeout
    while True:
        try:
            return await attempt_once(task)
        except Exception as error:
            if not policy.should_retry(error, task.attempt):
                raise
            pause = policy.pause(task.attempt)
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise
            if observe.current is not None:
                observe.current.retried()
            await asyncio.sleep(pause)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise
            task = task.next_attempt(left)

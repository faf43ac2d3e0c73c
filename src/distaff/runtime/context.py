"""Ambient state: the task running now, the proxy that routes calls, deadlines."""

from __future__ import annotations

import contextvars
import time
from types import TracebackType
from typing import TYPE_CHECKING

from .. import _checks

if TYPE_CHECKING:
    from ..proxy.proxy import WorkerProxy
    from ..serialization.task import Task

current_task_var: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "distaff_current_task", default=None
)
current_proxy_var: contextvars.ContextVar[WorkerProxy | None] = contextvars.ContextVar(
    "distaff_current_proxy", default=None
)
# absolute time.monotonic() by which the work in this context must be done
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "distaff_deadline", default=None
)
dispatch_timeout_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "distaff_dispatch_timeout", default=None
)
# the call chain an actor method runs in: nested actor calls carry it, and an
# actor lets a call of a chain already inside it enter at once
actor_chain_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "distaff_actor_chain", default=None
)


def current_task() -> Task | None:
    """Return the task this code runs as on a worker, or None in a caller."""
    return current_task_var.get()


def current_proxy() -> WorkerProxy:
    """Return the proxy that routes routine calls here, or raise RuntimeError."""
    proxy = current_proxy_var.get()
    if proxy is None:
        raise RuntimeError(
            "no distaff worker pool is active here: call routines inside "
            "'async with distaff.WorkerPool(...)'"
        )
    return proxy


def remaining() -> float | None:
    """Seconds left before the current deadline (None: no deadline)."""
    deadline = deadline_var.get()
    return None if deadline is None else deadline - time.monotonic()


def tightest(*timeouts: float | None) -> float | None:
    """The smallest of the given timeouts, ignoring None."""
    known = [t for t in timeouts if t is not None]
    return min(known) if known else None


class RuntimeContext:
    """Bound the routine calls made inside a ``with`` block.

    Args:
        dispatch_timeout: seconds each call may take to reach a worker (find
            one and have it accept the call).
        timeout: seconds the calls made in the block may run, counted from
            entering the block: an absolute deadline that nested calls on
            workers inherit as the time remaining.

    Expiry raises ``TimeoutError`` in the caller and cancels the remote
    work. Nested contexts only ever tighten: an inner block cannot extend an
    outer deadline.

    Raises:
        TypeError, ValueError: a timeout that is not a positive number.
    """

    def __init__(
        self, *, dispatch_timeout: float | None = None, timeout: float | None = None
    ) -> None:
        self.dispatch_timeout = _checks.seconds("dispatch_timeout", dispatch_timeout, positive=True)
        self.timeout = _checks.seconds("timeout", timeout, positive=True)
        self._tokens: list[tuple[contextvars.Token[float | None], ...]] = []

    def __enter__(self) -> RuntimeContext:
        deadline = deadline_var.get()
        if self.timeout is not None:
            deadline = tightest(deadline, time.monotonic() + self.timeout)
        dispatch = tightest(dispatch_timeout_var.get(), self.dispatch_timeout)
        self._tokens.append((deadline_var.set(deadline), dispatch_timeout_var.set(dispatch)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        deadline_token, dispatch_token = self._tokens.pop()
        dispatch_timeout_var.reset(dispatch_token)
        deadline_var.reset(deadline_token)

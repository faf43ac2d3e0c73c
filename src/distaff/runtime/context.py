"""Ambient state: the task running now and the proxy that routes calls."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..proxy.proxy import WorkerProxy
    from .task import Task

current_task_var: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "distaff_current_task", default=None
)
current_proxy_var: contextvars.ContextVar[WorkerProxy | None] = contextvars.ContextVar(
    "distaff_current_proxy", default=None
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

"""What a routine call puts in its task, taken from where the call is made."""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from distaff.runtime import context as ctx
from distaff.runtime import contextvar
from distaff.runtime.routine import _new_task, _Options
from distaff.serialization.task import Task


class StandInProxy:
    """What _new_task asks of the ambient proxy: whether output is forwarded, and its pickle.

    A stand-in: the task is only built here, never dispatched.
    """

    forward_output = True

    def serialized(self) -> tuple[str, bytes]:
        return "proxy-id", b"proxy-pickle"


async def body(x: int) -> int:
    return x


async def stream(x: int) -> AsyncGenerator[int, None]:
    yield x


def made_in(setup: dict[contextvars.ContextVar[Any], Any], *call: Any) -> Task:
    """``_new_task(*call)`` in a context where each variable of ``setup`` has its value."""

    def inside() -> Task:
        for var, value in setup.items():
            var.set(value)
        return _new_task(*call)

    return contextvars.copy_context().run(inside)


def test_a_nested_generator_call_takes_every_field_from_its_surroundings() -> None:
    # Arrange: a call made inside a task on a worker, within a deadline and an actor chain
    proxy = StandInProxy()
    parent = Task(callable=body, id="parent-id")
    setup: dict[contextvars.ContextVar[Any], Any] = {
        ctx.current_proxy_var: proxy,
        ctx.current_task_var: parent,
        ctx.deadline_var: time.monotonic() + 50.0,
        ctx.dispatch_timeout_var: 7.0,
        ctx.actor_chain_var: "chain-id",
    }

    # Act
    task = made_in(setup, stream, (1,), {"k": 2}, True, _Options(timeout=60.0, window=5))

    # Assert: every field in its place
    assert (task.callable, task.args, task.kwargs) == (stream, (1,), {"k": 2})
    assert task.id != parent.id
    assert task.caller == "parent-id"
    assert task.timeout is not None
    assert 40.0 < task.timeout <= 50.0  # the deadline is tighter than the routine's 60 s
    assert task.dispatch_timeout == 7.0
    assert (task.generator, task.window, task.attempt) == (True, 5, 0)
    assert task.proxy is proxy
    # whatever distaff.ContextVar values other tests left set here travel along
    assert task.context == contextvar.capture()
    assert (task.chain, task.output, task.traceparent) == ("chain-id", True, "")


def test_a_top_level_coroutine_call_has_no_caller_chain_or_window() -> None:
    # Arrange
    setup = {ctx.current_proxy_var: StandInProxy()}

    # Act
    task = made_in(setup, body, (1,), {}, False, _Options(dispatch_timeout=3.0, window=0))

    # Assert
    assert (task.caller, task.chain, task.timeout) == (None, None, None)
    assert (task.dispatch_timeout, task.generator, task.window) == (3.0, False, 0)
    assert task.start_fields().task_id == task.id


def test_a_call_after_its_deadline_fails_before_any_task_is_made() -> None:
    # Arrange
    setup: dict[contextvars.ContextVar[Any], Any] = {
        ctx.current_proxy_var: StandInProxy(),
        ctx.deadline_var: time.monotonic() - 1.0,
    }

    # Act, Assert
    with pytest.raises(TimeoutError, match="already passed"):
        made_in(setup, body, (1,), {}, False, _Options())

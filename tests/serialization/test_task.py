"""A task: its routine blob pickled once per body and forgotten with it, its id, its fields."""

from __future__ import annotations

import gc
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from distaff._exceptions import SerializationError
from distaff.serialization import session as s
from distaff.serialization import task as task_module
from distaff.serialization import tasks
from distaff.serialization.task import Task, new_task_id, routine_blob
from distaff.serialization.tasks import decode_routine


def make_body() -> Callable[[int], Any]:
    async def body(x: int) -> int:
        return x

    return body


def test_a_body_is_pickled_once_while_it_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange: count the encodings
    pickled: list[object] = []
    encode = tasks.encode_routine

    def counting(body: Callable[..., Any]) -> bytes:
        pickled.append(body)
        return encode(body)

    monkeypatch.setattr(task_module, "encode_routine", counting)
    body = make_body()

    # Act
    blobs = {routine_blob(body) for _ in range(3)}

    # Assert
    assert len(blobs) == 1
    assert pickled == [body]


def test_a_collected_body_leaves_no_entry_and_a_new_one_gets_its_own_blob() -> None:
    # Arrange
    body = make_body()
    routine_blob(body)
    key = id(body)
    assert key in task_module._routine_blobs

    # Act
    del body
    gc.collect()

    # Assert: whatever takes that id next is pickled afresh, never handed the old blob
    assert key not in task_module._routine_blobs
    other = make_body()
    assert decode_routine(routine_blob(other)).__qualname__ == other.__qualname__


def test_a_body_that_cannot_be_weakly_referenced_is_pickled_each_time() -> None:
    # Act: a method descriptor cannot be weakly referenced; a builtin can
    blobs = [routine_blob(str.upper), routine_blob(math.sqrt)]

    # Assert: both encode; only the builtin is kept
    assert decode_routine(blobs[0]) is str.upper
    assert decode_routine(blobs[1]) is math.sqrt
    assert id(str.upper) not in task_module._routine_blobs
    assert id(math.sqrt) in task_module._routine_blobs


def test_an_unpicklable_argument_names_the_routine_only_when_it_fails() -> None:
    # Arrange
    body = make_body()

    # Act, Assert: picklable arguments encode
    Task(callable=body, args=(len,), kwargs={"key": [1]}).encode()

    # Arrange: an argument that cannot be pickled
    import threading

    broken = Task(callable=body, args=(threading.Lock(),))

    # Act, Assert: the error names the argument and the routine's qualified name
    with pytest.raises(SerializationError, match=r"argument 0 .*make_body.<locals>.body"):
        broken.encode()


class ShippedProxy:
    """Stands in for the proxy a task ships: start_fields asks it only for its pickle."""

    def serialized(self) -> tuple[str, bytes]:
        return "proxy-id", b"proxy-pickle"


def full_task(body: Callable[..., Any]) -> Task:
    """A task with a distinct value in every field, so that two swapped ones show."""
    return Task(
        callable=body,
        args=(1,),
        kwargs={"k": 2},
        id="task-id",
        caller="caller-id",
        timeout=3.5,
        dispatch_timeout=4.5,
        generator=True,
        window=6,
        proxy=ShippedProxy(),
        attempt=7,
        context=b"context",
        chain="chain-id",
        output=True,
        traceparent="00-trace",
    )


def test_start_fields_carry_every_field_of_the_task_to_its_own_place() -> None:
    # Arrange
    body = make_body()
    task = full_task(body)

    # Act
    fields = task.start_fields()

    # Assert
    routine, arguments = task.encode()
    assert (fields.task_id, fields.routine, fields.arguments) == ("task-id", routine, arguments)
    assert (fields.caller, fields.chain) == ("caller-id", "chain-id")
    assert (fields.proxy_id, fields.proxy) == ("proxy-id", b"proxy-pickle")
    assert (fields.timeout, fields.dispatch_timeout) == (3.5, 4.5)
    assert (fields.generator, fields.output) == (True, True)
    assert (fields.window, fields.attempt) == (6, 7)
    assert (fields.context, fields.traceparent) == (b"context", "00-trace")


def test_start_fields_of_a_bare_task_are_the_frame_defaults() -> None:
    # Act
    fields = Task(callable=make_body()).start_fields()

    # Assert: None becomes the protobuf default, nothing else is set
    assert (fields.caller, fields.chain, fields.proxy_id, fields.proxy) == ("", "", "", b"")
    assert (fields.timeout, fields.dispatch_timeout, fields.window, fields.attempt) == (0, 0, 0, 0)
    assert (fields.generator, fields.output, fields.context, fields.traceparent) == (
        False,
        False,
        b"",
        "",
    )


def test_a_task_comes_back_whole_from_its_start_frame() -> None:
    # Arrange: every field distinct, through the frame the worker reads
    body = make_body()
    sent = full_task(body)
    caller, worker = s.CallerSession(), s.WorkerSession("w")
    worker.receive(caller.data_to_send()[0])
    caller.receive(worker.data_to_send()[0])
    caller.open_call(sent.start_fields())
    (started,) = worker.receive(caller.data_to_send()[0])

    # Act
    got = Task.from_start(started.start, callable=body, args=(1,), kwargs={"k": 2}, proxy="p")

    # Assert
    for name in ("id", "caller", "timeout", "dispatch_timeout", "generator", "window"):
        assert getattr(got, name) == getattr(sent, name), name
    for name in ("attempt", "context", "chain", "output", "traceparent"):
        assert getattr(got, name) == getattr(sent, name), name
    assert (got.callable, got.args, got.kwargs, got.proxy) == (body, (1,), {"k": 2}, "p")


def test_task_ids_are_distinct_and_carry_this_processs_prefix() -> None:
    ids = [new_task_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    prefixes = {i[:16] for i in ids}
    assert len(prefixes) == 1
    assert all(c in "0123456789abcdef" for c in prefixes.pop())


def test_another_process_makes_other_task_ids() -> None:
    code = "from distaff.serialization.task import new_task_id; print(new_task_id())"
    theirs = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    ours = new_task_id()
    assert theirs[:16] != ours[:16]
    assert theirs != ours

"""Bad input: unpicklable values, missing modules, malformed frames, oversized messages."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pathlib
import re
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distaff
from distaff.serialization import rpc, wire

from . import fault_routines as fr

MiB = 1024 * 1024
LIMIT = 256 * MiB  # DEFAULT_CHANNEL_OPTIONS and SERVER_OPTIONS


@pytest.fixture
async def pool() -> AsyncGenerator[distaff.WorkerPool, None]:
    async with distaff.WorkerPool(spawn=1) as pool:
        yield pool


async def assert_healthy(pool: distaff.WorkerPool, workers: list[distaff.WorkerMetadata]) -> None:
    """The pool kept its workers, they are alive, and a normal call succeeds."""
    assert pool.proxy.workers == workers
    assert all(fr.alive(pid) for pid in pool.pids)
    assert await fr.echo("still fine") == "still fine"


# values that cannot travel


async def test_unpicklable_result_raises_serialization_error_naming_it(
    pool: distaff.WorkerPool,
) -> None:
    workers = pool.proxy.workers

    with pytest.raises(distaff.SerializationError, match=r"result.*return_lock.*lock"):
        await fr.return_lock()

    await assert_healthy(pool, workers)


async def test_unpicklable_yielded_value_raises_serialization_error_naming_it(
    pool: distaff.WorkerPool,
) -> None:
    workers = pool.proxy.workers
    gen = fr.yield_lock()
    assert await anext(gen) == 1

    with pytest.raises(distaff.SerializationError, match=r"value yielded.*yield_lock.*lock"):
        await anext(gen)

    await assert_healthy(pool, workers)


async def test_unpicklable_sent_value_raises_serialization_error_naming_it(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    workers = pool.proxy.workers
    marker = tmp_path / "finally"
    gen = fr.yield_forever(str(marker))
    assert await anext(gen) == 0

    with pytest.raises(distaff.SerializationError, match=r"value sent.*lock"):
        await gen.asend(threading.Lock())

    await fr.wait_until(marker.exists)  # the remote generator was closed
    await assert_healthy(pool, workers)


async def test_unpicklable_exception_arrives_as_remote_exception_naming_its_type(
    pool: distaff.WorkerPool,
) -> None:
    workers = pool.proxy.workers

    with pytest.raises(distaff.RemoteException) as caught:
        await fr.raise_locked()

    assert caught.value.type_name == f"{fr.__name__}.LockedError"
    assert caught.value.message == "the vault is locked"
    assert "raise_locked" in caught.value.remote_traceback
    await assert_healthy(pool, workers)


async def test_result_that_fails_to_unpickle_in_the_caller_names_it(
    pool: distaff.WorkerPool,
) -> None:
    workers = pool.proxy.workers

    with pytest.raises(
        distaff.SerializationError, match=r"value sent by the worker.*Unloadable refuses"
    ):
        await fr.return_unloadable()

    await assert_healthy(pool, workers)


async def test_routine_whose_module_the_worker_lacks_raises_module_not_found(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    name = f"caller_only_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import distaff

            @distaff.routine
            async def here_only() -> str:
                return "ran"
            """
        )
    )
    workers = pool.proxy.workers
    sys.path.insert(0, str(tmp_path))  # after the workers copied sys.path
    try:
        module = importlib.import_module(name)

        with pytest.raises(ModuleNotFoundError, match=name) as caught:
            await module.here_only()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)

    assert caught.value.name == name
    (note,) = caught.value.__notes__  # it says where, and what to do
    assert workers[0].address in note
    assert f"pid {workers[0].pid}" in note
    assert "--path DIR" in note
    await assert_healthy(pool, workers)


# malformed frames on the wire


def valid_envelopes() -> list[bytes]:
    """Seeds for mutation: a hello, a hello with a call, and call frames alone."""
    routine, arguments = distaff.Task(callable=fr.body_of(fr.echo), args=(1,)).encode()
    hello = wire.Envelope()
    hello.frames.add().hello.protocol = wire.PROTOCOL_VERSION
    call = wire.Envelope()
    call.CopyFrom(hello)
    frame = call.frames.add()
    frame.call = 1
    frame.start.task_id = "fuzz"
    frame.start.routine = routine
    frame.start.arguments = arguments
    frame.start.timeout = 5.0
    steps = wire.Envelope()
    step = steps.frames.add()
    step.call = 1
    step.step.kind = wire.StepKind.STEP_NEXT
    steps.frames.add().call = 1
    steps.frames[1].cancel.SetInParent()
    detached = wire.Envelope()  # the same call, its arguments sent as a blob
    detached.CopyFrom(call)
    detached.frames[1].start.ClearField("arguments")
    detached.frames[1].start.arguments_blob = 1
    seeds = [e.SerializeToString() for e in (hello, call, steps)]
    return [*seeds, wire.encode((detached, [arguments]))]


HELLO, *_ = SEEDS = valid_envelopes()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
        if action == "replace" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "delete" and data:
            del data[at]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return bytes(data)


messages = st.lists(st.one_of(st.binary(max_size=200), mutated()), min_size=1, max_size=3)
# garbage from the first message on, or after a valid hello
scripts = st.one_of(messages, messages.map(lambda ms: [HELLO, *ms]))


async def send_raw(address: str, script: list[bytes]) -> grpc.StatusCode | None:
    """Send raw messages on a Session; return the status the worker ended it with."""
    async with grpc.aio.insecure_channel(address) as channel:
        session = channel.stream_stream(
            rpc.SESSION, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )()
        try:
            async with asyncio.timeout(3):  # a worker may wait for more: that is ignoring
                with contextlib.suppress(asyncio.InvalidStateError):  # it ended the call
                    for message in script:
                        await session.write(message)
                    await session.done_writing()
                while await session.read() is not grpc.aio.EOF:
                    pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        except TimeoutError:
            session.cancel()
            return None
        code: grpc.StatusCode = await session.code()
        return code


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=scripts)
@pytest.mark.slow
async def test_malformed_frames_never_crash_the_worker(
    pool: distaff.WorkerPool, script: list[bytes]
) -> None:
    (worker,) = pool.proxy.workers

    await send_raw(worker.address, script)

    assert fr.alive(worker.pid)
    assert await fr.echo(script) == script


async def test_worker_serves_normally_after_garbage_on_its_sessions(
    pool: distaff.WorkerPool,
) -> None:
    workers = pool.proxy.workers
    (worker,) = workers
    garbage = [b"\xff" * 64, HELLO + b"\x0a\x05\x1a\x03\xff\xff\xff", b""]
    missing = wire.Envelope()  # a call whose arguments name a blob the message lacks
    missing.ParseFromString(SEEDS[1])
    missing.frames[1].start.arguments_blob = 3
    blobs = [
        b"\x7a\xff",  # a blob whose length is cut off
        b"\x7a\x10abc" + HELLO,  # a blob longer than the message
        wire.encode((missing, [b"one"])),
    ]

    statuses = [await send_raw(worker.address, [message]) for message in garbage]
    blob_statuses = [await send_raw(worker.address, [message]) for message in blobs]

    assert statuses[0] not in (None, grpc.StatusCode.OK)  # not an Envelope at all
    assert statuses[1] not in (None, grpc.StatusCode.OK)  # a hello, then a corrupt frame
    assert statuses[2] == grpc.StatusCode.FAILED_PRECONDITION  # an empty first envelope
    assert None not in blob_statuses
    assert grpc.StatusCode.OK not in blob_statuses
    await assert_healthy(pool, workers)


# messages over the gRPC size limit


def assert_names_the_limit(message: str) -> None:
    """The message names the limit (in MiB or bytes) and how to raise it."""
    assert re.search(r"256 MiB|268,?435,?456", message), message
    assert re.search(r"(?i)\blimit\b", message), message
    assert re.search(r"(?i)\b(raise|increase)\b", message), message


@contextlib.asynccontextmanager
async def bystander(marker: pathlib.Path) -> AsyncIterator[asyncio.Future[str]]:
    """A call in flight on the same worker while the test runs; reaped on every path."""
    call = asyncio.ensure_future(fr.block(str(marker), 2.0))
    try:
        await fr.wait_until(pathlib.Path(f"{marker}.started").exists)
        yield call
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)


async def test_argument_over_the_message_limit_fails_alone_naming_the_limit(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    workers = pool.proxy.workers
    async with bystander(tmp_path / "bystander") as other_call:
        with pytest.raises(distaff.SerializationError) as caught:
            await fr.length(fr.Blob(LIMIT + MiB))

        assert_names_the_limit(str(caught.value))

        assert await other_call == "finished"
    await assert_healthy(pool, workers)


async def test_result_over_the_message_limit_fails_alone_naming_the_limit(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    workers = pool.proxy.workers
    async with bystander(tmp_path / "bystander") as other_call:
        with pytest.raises(distaff.SerializationError) as caught:
            await fr.make_blob(LIMIT + MiB)

        assert_names_the_limit(str(caught.value))

        assert await other_call == "finished"
    await assert_healthy(pool, workers)


async def test_a_worker_with_a_lower_message_limit_fails_no_other_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("DISTAFF_MAX_MESSAGE_BYTES", str(4 * MiB))  # the workers', not ours
    async with distaff.WorkerPool(spawn=1) as pool:
        workers = pool.proxy.workers
        async with bystander(tmp_path / "bystander") as other_call:
            with contextlib.suppress(distaff.SerializationError):  # failing alone is fine
                assert await fr.length(fr.Blob(5 * MiB)) == 5 * MiB

            assert await other_call == "finished"
        await assert_healthy(pool, workers)

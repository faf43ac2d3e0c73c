"""LocalDiscovery: one host, many processes, a directory of worker files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from distaff.runtime.discovery import _scan as scan_module
from distaff.runtime.discovery import _watch as watch_module
from distaff.runtime.discovery import local as local_module
from distaff.runtime.discovery.base import (
    DiscoveryEvent,
    DiscoveryEventType,
    DiscoveryLike,
    DiscoveryPublisherLike,
    DiscoverySubscriberLike,
)
from distaff.runtime.discovery.local import LocalDiscovery, LocalSubscriber
from distaff.serialization.metadata import WorkerMetadata, encode_metadata

ADDED = DiscoveryEventType.WORKER_ADDED
UPDATED = DiscoveryEventType.WORKER_UPDATED
DROPPED = DiscoveryEventType.WORKER_DROPPED
SRC = str(Path(local_module.__file__).resolve().parents[3])

CHILD_PUBLISHER = """
import asyncio, os, sys
from distaff.runtime.discovery.base import DiscoveryEvent, DiscoveryEventType
from distaff.runtime.discovery.local import LocalDiscovery
from distaff.serialization.metadata import WorkerMetadata

namespace, root, uid, mode = sys.argv[1:5]

async def main():
    publisher = LocalDiscovery(namespace, root=root).publisher()
    meta = WorkerMetadata(uid=uid, address="127.0.0.1:1", pid=os.getpid())
    await publisher.publish(DiscoveryEvent(DiscoveryEventType.WORKER_ADDED, meta))

asyncio.run(main())
print("ready", flush=True)
if mode == "exit":
    os._exit(0)  # no aclose: the file stays behind with a dead pid
sys.stdin.read()  # until killed, or until the test's end closes stdin
"""

CHILD_SUBSCRIBER = """
import asyncio, pickle, sys

async def main():
    subscriber = pickle.loads(bytes.fromhex(sys.argv[1]))
    it = aiter(subscriber)
    event = await anext(it)
    await it.aclose()
    print(event.type.name, event.metadata.uid, flush=True)

asyncio.run(main())
"""


def meta(uid: str, port: int = 1, **kw: object) -> WorkerMetadata:
    return WorkerMetadata(uid=uid, address=f"127.0.0.1:{port}", **kw)  # type: ignore[arg-type]


def added(m: WorkerMetadata) -> DiscoveryEvent:
    return DiscoveryEvent(ADDED, m)


async def next_event(it: AsyncIterator[DiscoveryEvent], timeout: float = 5) -> DiscoveryEvent:
    async with asyncio.timeout(timeout):
        return await anext(it)


@asynccontextmanager
async def subscribe(
    subscriber: DiscoverySubscriberLike,
) -> AsyncIterator[AsyncIterator[DiscoveryEvent]]:
    it = aiter(subscriber)
    try:
        yield it
    finally:
        await it.aclose()  # type: ignore[attr-defined]


def listing(directory: str) -> list[str] | None:
    """The directory's entries, or None if it does not exist."""
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else None


def write_files(directory: str, files: dict[str, bytes]) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        Path(directory, name).write_bytes(data)


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "discovery")


@pytest.fixture
def disco(root: str) -> LocalDiscovery:
    return LocalDiscovery("test", root=root)


Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start ``python -c script args``; kill and reap every such child at the end."""
    children: list[asyncio.subprocess.Process] = []

    async def start(script: str, *args: str) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path])}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        children.append(proc)
        return proc

    yield start
    for proc in children:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 30) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        return (await proc.stdout.readline()).decode().strip()


def test_satisfies_protocols(disco: LocalDiscovery) -> None:
    assert isinstance(disco, DiscoveryLike)
    assert isinstance(disco.publisher(), DiscoveryPublisherLike)
    assert isinstance(disco.subscriber(), DiscoverySubscriberLike)


async def test_publish_then_subscriber_sees_added(disco: LocalDiscovery) -> None:
    m = meta("w1", tags=frozenset({"gpu"}), options={"k": "v"})
    async with disco.publisher() as pub:
        await pub.publish(added(m))
        async with subscribe(disco.subscriber()) as it:
            assert await next_event(it) == added(m)


async def test_existing_workers_come_first_then_changes(disco: LocalDiscovery) -> None:
    async with disco.publisher() as pub:
        await pub.publish(added(meta("w1")))
        await pub.publish(added(meta("w2")))
        async with subscribe(disco.subscriber()) as it:
            first = {await next_event(it), await next_event(it)}
            assert first == {added(meta("w1")), added(meta("w2"))}
            await pub.publish(added(meta("w3")))
            assert await next_event(it) == added(meta("w3"))


async def test_updated_and_dropped_propagate(disco: LocalDiscovery) -> None:
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        await pub.publish(added(meta("w1")))
        assert await next_event(it) == added(meta("w1"))
        await pub.publish(DiscoveryEvent(UPDATED, meta("w1", port=2)))
        assert await next_event(it) == DiscoveryEvent(UPDATED, meta("w1", port=2))
        await pub.publish(DiscoveryEvent(DROPPED, meta("w1", port=2)))
        # its publisher lives: the worker withdrew itself (a stop, not a death)
        assert await next_event(it) == DiscoveryEvent(DROPPED, meta("w1", port=2), withdrawn=True)


async def test_publisher_aclose_drops_only_its_workers(disco: LocalDiscovery) -> None:
    async with disco.publisher() as keep, subscribe(disco.subscriber()) as it:
        closing = disco.publisher()
        await closing.publish(added(meta("a1")))
        await closing.publish(added(meta("a2")))
        await keep.publish(added(meta("k1")))
        assert {(await next_event(it)).metadata.uid for _ in range(3)} == {
            "a1",
            "a2",
            "k1",
        }
        await closing.aclose()
        dropped = {await next_event(it), await next_event(it)}
        assert dropped == {DiscoveryEvent(DROPPED, meta(u), withdrawn=True) for u in ("a1", "a2")}
        assert listing(disco.directory) == ["k1.worker"]
        with pytest.raises(RuntimeError, match="closed"):
            await closing.publish(added(meta("a3")))
    assert listing(disco.directory) is None  # the last publisher removed the empty directory


async def test_a_publisher_whose_workers_were_dropped_still_removes_the_empty_directory(
    disco: LocalDiscovery,
) -> None:
    # what a worker does: publish itself, unpublish when it drains, then close
    publisher = disco.publisher()
    await publisher.publish(added(meta("w1")))
    await publisher.publish(DiscoveryEvent(DROPPED, meta("w1")))
    assert listing(disco.directory) == []

    await publisher.aclose()

    assert listing(disco.directory) is None


async def test_namespaces_isolate(root: str) -> None:
    a, b = LocalDiscovery("a", root=root), LocalDiscovery("b", root=root)
    async with a.publisher() as pa, b.publisher() as pb:
        await pa.publish(added(meta("in-a")))
        await pb.publish(added(meta("in-b")))
        async with subscribe(b.subscriber()) as it:
            assert await next_event(it) == added(meta("in-b"))
            await pa.publish(added(meta("in-a-2")))
            await pb.publish(added(meta("marker-b")))
            # "in-a-2" was written before the marker: had it leaked, it would show.
            assert await next_event(it) == added(meta("marker-b"))


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".hidden", "a b", "a\x00b", "x" * 129, "ü"])
def test_invalid_namespace_raises(bad: str, root: str) -> None:
    with pytest.raises(ValueError, match="invalid discovery namespace") as info:
        LocalDiscovery(bad, root=root)
    assert repr(bad) in str(info.value)


def test_bad_poll_interval_raises(root: str) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        LocalDiscovery(root=root, poll_interval=0)


def test_default_root_is_per_user() -> None:
    root = LocalDiscovery().root
    assert os.path.basename(root) == f"distaff-discovery-{os.getuid()}"
    if os.access("/dev/shm", os.W_OK):
        assert os.path.dirname(root) == "/dev/shm"


async def test_uid_that_is_no_file_name_round_trips(disco: LocalDiscovery) -> None:
    m = meta("../weird uid/ü")
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        await pub.publish(added(m))
        assert await next_event(it) == added(m)
        [name] = os.listdir(disco.directory)
        assert name.startswith("=")
        assert name.endswith(".worker")
        await pub.publish(DiscoveryEvent(DROPPED, m))
        assert await next_event(it) == DiscoveryEvent(DROPPED, m, withdrawn=True)


async def test_malformed_files_are_skipped(
    disco: LocalDiscovery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=local_module.__name__)
    header = scan_module.own_header()
    junk = {
        "garbage.worker": b"\xff" * 40,
        "badmsgpack.worker": header + b"\xc1\xc1",
        "badschema.worker": header + b"\x81\xa1v\x09",
        "short.worker": header[:10],
    }
    write_files(disco.directory, junk)
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        await pub.publish(added(meta("good")))
        assert await next_event(it) == added(meta("good"))
        await pub.publish(added(meta("good2")))
        assert await next_event(it) == added(meta("good2"))
    skipped = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    for name in junk:
        assert sum(name in message for message in skipped) == 1  # logged once
    assert set(junk) <= set(os.listdir(disco.directory))  # left alone


async def test_reused_pid_counts_as_dead(disco: LocalDiscovery) -> None:
    """A file whose pid lives but started at another time is stale."""
    header = bytearray(scan_module.own_header())
    start = int.from_bytes(header[9:17], "big")
    if start == 0:
        pytest.skip("no /proc start times on this system")
    header[9:17] = (start + 1).to_bytes(8, "big")
    write_files(
        disco.directory,
        {"reused.worker": bytes(header) + encode_metadata(meta("reused"))},
    )
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        await pub.publish(added(meta("live")))
        assert await next_event(it) == added(meta("live"))
    assert listing(disco.directory) is None  # stale file reaped, live one closed, dir removed


async def test_killed_publisher_is_dropped(disco: LocalDiscovery, spawn: Spawn) -> None:
    uid = f"child-{uuid.uuid4().hex}"
    proc = await spawn(CHILD_PUBLISHER, disco.namespace, disco.root, uid, "wait")
    assert await read_line(proc) == "ready"
    async with subscribe(disco.subscriber()) as it:
        event = await next_event(it)
        assert (event.type, event.metadata.uid) == (ADDED, uid)
        assert event.metadata.pid == proc.pid
        proc.kill()
        await proc.wait()
        killed_at = time.perf_counter()
        event = await next_event(it, timeout=5)
        elapsed = time.perf_counter() - killed_at
    assert (event.type, event.metadata.uid, event.withdrawn) == (DROPPED, uid, False)
    assert elapsed < 2.0, f"dropped after {elapsed:.3f}s"
    assert listing(disco.directory) == []  # the stale file was removed


async def test_file_of_exited_publisher_is_never_reported(
    disco: LocalDiscovery, spawn: Spawn
) -> None:
    proc = await spawn(CHILD_PUBLISHER, disco.namespace, disco.root, "ghost", "exit")
    assert await read_line(proc) == "ready"
    assert await proc.wait() == 0
    assert listing(disco.directory) == ["ghost.worker"]
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        await pub.publish(added(meta("live")))
        assert await next_event(it) == added(meta("live"))
    assert listing(disco.directory) is None


async def test_subscriber_pickles_and_works_elsewhere(disco: LocalDiscovery, spawn: Spawn) -> None:
    copy = pickle.loads(pickle.dumps(disco))
    assert (copy.namespace, copy.root) == (disco.namespace, disco.root)
    subscriber = pickle.loads(pickle.dumps(disco.subscriber()))
    assert isinstance(subscriber, LocalSubscriber)
    async with disco.publisher() as pub:
        await pub.publish(added(meta("w1")))
        async with subscribe(subscriber) as it:
            assert await next_event(it) == added(meta("w1"))
        # And in another process.
        proc = await spawn(CHILD_SUBSCRIBER, pickle.dumps(disco.subscriber()).hex())
        assert await read_line(proc) == "WORKER_ADDED w1"
        assert await proc.wait() == 0


async def test_median_added_latency(disco: LocalDiscovery) -> None:
    latencies: list[float] = []
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        for i in range(50):
            m = meta(f"w{i}")
            started = time.perf_counter()
            await pub.publish(added(m))
            assert await next_event(it) == added(m)
            latencies.append(time.perf_counter() - started)
    median = statistics.median(latencies)
    print(
        f"local discovery ADDED latency over {len(latencies)} publishes: "
        f"median {median * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert median < 0.5


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each subscriber looked at its directory (``Scanner.scan``, observed, not replaced)."""
    seen: list[float] = []
    scan = scan_module.Scanner.scan

    def counting_scan(self: object, *args: object) -> object:
        seen.append(time.monotonic())
        return scan(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(scan_module.Scanner, "scan", counting_scan)
    return seen


async def test_an_idle_subscription_does_not_look_at_the_directory(
    disco: LocalDiscovery, scans: list[float]
) -> None:
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        await pub.publish(added(meta("w1")))
        assert await next_event(it) == added(meta("w1"))
        looked = len(scans)
        pending = asyncio.ensure_future(anext(it))
        try:
            # the window over which nothing may happen (not a synchronisation)
            done, _ = await asyncio.wait({pending}, timeout=1.0)
            assert not done
            # one look may trail the first event (the directory appeared meanwhile);
            # polling every 25 ms would have made ~40
            assert len(scans) - looked <= 1, f"{len(scans) - looked} scans in 1 s of idle"
            await pub.publish(added(meta("w2")))
            assert await asyncio.wait_for(pending, 5) == added(meta("w2"))
        finally:
            pending.cancel()


async def test_without_inotify_and_pidfd_it_polls_and_still_drops_a_killed_publisher(
    disco: LocalDiscovery, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux has both; their absence (other systems) can only be simulated here.
    def no_pidfd(pid: int) -> int:
        raise OSError("pidfd_open is not available")

    monkeypatch.setattr(watch_module, "_LIBC", None)
    monkeypatch.setattr(watch_module, "_pidfd_open", no_pidfd)
    uid = f"child-{uuid.uuid4().hex}"
    proc = await spawn(CHILD_PUBLISHER, disco.namespace, disco.root, uid, "wait")
    assert await read_line(proc) == "ready"
    async with disco.publisher() as pub, subscribe(disco.subscriber()) as it:
        assert (await next_event(it)).metadata.uid == uid
        await pub.publish(added(meta("w1")))
        assert await next_event(it) == added(meta("w1"))
        proc.kill()
        await proc.wait()
        event = await next_event(it, timeout=5)
    assert (event.type, event.metadata.uid) == (DROPPED, uid)


async def test_a_publisher_dead_but_not_yet_reaped_is_dropped_and_not_watched_in_a_loop(
    disco: LocalDiscovery, scans: list[float]
) -> None:
    # A process that exited stays a zombie until its parent reaps it; its
    # pidfd is readable at once, so a subscriber that took it for alive
    # would look again, and again, for as long as it stays unreaped.
    uid = f"zombie-{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path])}
    # not an asyncio subprocess: nothing reaps it until the test does
    with subprocess.Popen(  # noqa: ASYNC220 (asyncio would reap it)
        [sys.executable, "-c", CHILD_PUBLISHER, disco.namespace, disco.root, uid, "wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            assert await asyncio.to_thread(child.stdout.readline) == b"ready\n"
            async with subscribe(disco.subscriber()) as it:
                event = await next_event(it)
                assert (event.type, event.metadata.uid) == (ADDED, uid)
                os.kill(child.pid, signal.SIGKILL)  # and not reaped

                event = await next_event(it, timeout=5)
                assert (event.type, event.metadata.uid, event.withdrawn) == (DROPPED, uid, False)
                looked = len(scans)
                pending = asyncio.ensure_future(anext(it))
                # the window over which nothing may happen (not a synchronisation)
                done, _ = await asyncio.wait({pending}, timeout=0.5)
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
                assert not done
                assert len(scans) - looked <= 1, f"{len(scans) - looked} scans in 0.5 s"
        finally:
            child.kill()

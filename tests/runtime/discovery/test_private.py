"""Private namespaces: created whole, removed by their owner, swept only when provably dead."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import time

from distaff.runtime.discovery.base import DiscoveryEvent, DiscoveryEventType
from distaff.runtime.discovery.local import LocalDiscovery
from distaff.runtime.discovery.private import LEGACY_AGE, PrivateNamespace, sweep_abandoned
from distaff.serialization.metadata import WorkerMetadata

# A real owner in another process: creates a namespace under ROOT, prints it, waits.
OWNER = textwrap.dedent(
    """
    import sys, time
    from distaff.runtime.discovery.private import PrivateNamespace

    namespace = PrivateNamespace(root=sys.argv[1])
    namespace.create()
    print(namespace.directory, flush=True)
    time.sleep(3600)
    """
)


# A real publisher in another process: publishes one worker, says so, waits.
PUBLISHER = textwrap.dedent(
    """
    import asyncio, sys, time
    from distaff.runtime.discovery.base import DiscoveryEvent, DiscoveryEventType
    from distaff.runtime.discovery.local import LocalDiscovery
    from distaff.serialization.metadata import WorkerMetadata

    root, namespace, uid = sys.argv[1:]
    publisher = LocalDiscovery(namespace, root=root).publisher()
    metadata = WorkerMetadata(uid=uid, address="127.0.0.1:1")
    asyncio.run(publisher.publish(DiscoveryEvent(DiscoveryEventType.WORKER_ADDED, metadata)))
    print("published", flush=True)
    time.sleep(3600)
    """
)


def leave_dead_publisher(root: pathlib.Path, namespace: str, uid: str) -> None:
    """Publish ``uid`` from another process, then SIGKILL it: it cannot unpublish."""
    killed = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(root), namespace, uid],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killed.stdout is not None
    assert killed.stdout.readline().strip() == "published"
    stop(killed)


def worker(uid: str) -> WorkerMetadata:
    return WorkerMetadata(uid=uid, address="127.0.0.1:1")


def start_owner(root: pathlib.Path) -> tuple[subprocess.Popen[str], str]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    return owner, owner.stdout.readline().strip()


def stop(owner: subprocess.Popen[str]) -> None:
    owner.kill()
    owner.wait(timeout=30)
    assert owner.stdout is not None
    owner.stdout.close()


def test_create_makes_a_directory_with_an_owner_record_and_remove_deletes_it(
    tmp_path: pathlib.Path,
) -> None:
    namespace = PrivateNamespace(root=str(tmp_path))

    namespace.create()
    (pathlib.Path(namespace.directory) / "w.worker").write_bytes(b"left by a worker")

    assert os.listdir(tmp_path) == [os.path.basename(namespace.directory)]
    assert ".owner" in os.listdir(namespace.directory)
    namespace.remove()
    namespace.remove()  # idempotent
    assert os.listdir(tmp_path) == []


def test_sweep_keeps_a_live_owners_namespace_and_removes_it_once_the_owner_is_dead(
    tmp_path: pathlib.Path,
) -> None:
    owner, directory = start_owner(tmp_path)
    try:
        assert sweep_abandoned(str(tmp_path)) == []
        assert os.path.isdir(directory)
    finally:
        stop(owner)

    assert sweep_abandoned(str(tmp_path)) == [directory]
    assert os.listdir(tmp_path) == []


def test_sweep_keeps_this_process_namespace(tmp_path: pathlib.Path) -> None:
    namespace = PrivateNamespace(root=str(tmp_path))
    namespace.create()

    assert sweep_abandoned(str(tmp_path)) == []
    assert os.path.isdir(namespace.directory)


def test_sweep_removes_old_empty_directories_only(tmp_path: pathlib.Path) -> None:
    names = ["pool-old", "pool-fresh", "jobs-old", "jobs-fresh"]
    for name in names:
        (tmp_path / name).mkdir()
    past = time.time() - LEGACY_AGE - 5
    for name in ("pool-old", "jobs-old"):
        os.utime(tmp_path / name, (past, past))

    removed = sweep_abandoned(str(tmp_path))

    assert sorted(removed) == [str(tmp_path / "jobs-old"), str(tmp_path / "pool-old")]
    assert sorted(os.listdir(tmp_path)) == ["jobs-fresh", "pool-fresh"]


async def test_sweep_drops_a_killed_publishers_files_and_keeps_a_live_ones(
    tmp_path: pathlib.Path,
) -> None:
    discovery = LocalDiscovery("jobs", root=str(tmp_path))
    leave_dead_publisher(tmp_path, "jobs", "gone")
    publisher = discovery.publisher()
    try:
        await publisher.publish(DiscoveryEvent(DiscoveryEventType.WORKER_ADDED, worker("here")))
        assert sorted(os.listdir(discovery.directory)) == ["gone.worker", "here.worker"]

        assert sweep_abandoned(str(tmp_path)) == []

        assert os.listdir(discovery.directory) == ["here.worker"]
    finally:
        await publisher.aclose()


def test_sweep_removes_a_namespace_left_with_only_dead_publishers(tmp_path: pathlib.Path) -> None:
    leave_dead_publisher(tmp_path, "jobs", "gone")

    assert sweep_abandoned(str(tmp_path)) == [str(tmp_path / "jobs")]
    assert os.listdir(tmp_path) == []


def test_sweep_of_a_missing_root_does_nothing(tmp_path: pathlib.Path) -> None:
    assert sweep_abandoned(str(tmp_path / "absent")) == []

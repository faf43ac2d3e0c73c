"""Private namespaces: created whole, removed by their owner, swept only when provably dead."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import time

from distaff.runtime.discovery.private import LEGACY_AGE, PrivateNamespace, sweep_abandoned

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


def test_sweep_removes_old_empty_legacy_directories_only(tmp_path: pathlib.Path) -> None:
    old, fresh, other = tmp_path / "pool-old", tmp_path / "pool-fresh", tmp_path / "jobs"
    for directory in (old, fresh, other):
        directory.mkdir()
    past = time.time() - LEGACY_AGE - 5
    os.utime(old, (past, past))
    os.utime(other, (past, past))

    assert sweep_abandoned(str(tmp_path)) == [str(old)]
    assert sorted(os.listdir(tmp_path)) == ["jobs", "pool-fresh"]


def test_sweep_of_a_missing_root_does_nothing(tmp_path: pathlib.Path) -> None:
    assert sweep_abandoned(str(tmp_path / "absent")) == []

"""Suite-wide guards: no test may leave a worker process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


def worker_children() -> set[int]:
    """PIDs of live distaff worker processes (and templates) that this test process started.

    Workers forked by a pool's template are its children, not ours, and an
    orphan is re-parented: so this counts every descendant, and every process
    in our process group, whose command line is a distaff worker's.
    """
    me, group = os.getpid(), os.getpgrp()
    parents: dict[int, int] = {}
    workers: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid, pgid = f.read().rsplit(")", 1)[1].split()[:3]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(ppid)
        if state != "Z" and b"distaff" in cmdline and b"worker" in cmdline:
            workers.add(int(entry))
            if int(pgid) == group:
                parents[int(entry)] = me
    return {pid for pid in workers if _descends(pid, me, parents)}


def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    seen = set()
    while pid in parents and pid not in seen:
        seen.add(pid)
        pid = parents[pid]
        if pid == ancestor:
            return True
    return False


@pytest.fixture(autouse=True)
def no_leftover_workers() -> Iterator[None]:
    """Fail a test that leaves one of its worker processes running."""
    before = worker_children()
    yield
    deadline = time.monotonic() + 10
    while (left := worker_children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition with a deadline, not synchronization
    assert not left, f"worker processes left behind: {sorted(left)}"

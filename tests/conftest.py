"""Suite-wide guards: no test may leave a worker process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


def worker_children() -> set[int]:
    """PIDs of distaff worker processes whose parent is this test process."""
    found = set()
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == me and b"distaff" in cmdline and b"worker" in cmdline:
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found.add(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_leftover_workers() -> Iterator[None]:
    """Fail a test that leaves one of its worker processes running."""
    before = worker_children()
    yield
    deadline = time.monotonic() + 10
    while (left := worker_children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition with a deadline, not synchronization
    assert not left, f"worker processes left behind: {sorted(left)}"

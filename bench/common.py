"""Shared by the orchestrator and the runners: workload sizes, statistics, /proc.

Standard library only: the peer's virtual environment imports this module too.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Sequence

WORKLOADS = ("W1", "W2", "W3", "W4", "W4W", "W5", "W7", "WA", "MEM")
# W4W (streaming with distaff's read-ahead window) has no counterpart elsewhere
# W7 (distaff.map against ProcessPoolExecutor.map, both timed in distaff's
# caller) has none either
# WA (an actor's no-op method against the no-op routine, W1 and W2 shapes,
# in one caller and pool) is distaff's alone
# distaff with every session over gRPC (DISTAFF_IPC=0), as between hosts: the
# per-call workloads only
GRPC_VARIANT = "distaff-grpc"
GRPC_VARIANT_WORKLOADS = ("W1", "W2", "W3", "W4")
ONLY_FOR = {"W4W": ("distaff",), "W7": ("distaff",), "WA": ("distaff",)}

# The sizes of each workload; ``--quick`` uses QUICK.
FULL: dict[str, dict[str, int]] = {
    "W1": {"warmup": 200, "calls": 2_000},
    "W2": {"warmup": 1_000, "calls": 20_000, "inflight": 500},
    "W3": {"warmup": 5, "calls": 200, "size": 1 << 20},
    "W4": {"warmup": 100, "items": 20_000},
    "W4W": {"warmup": 100, "items": 20_000},
    "W5": {"spawn": 2},
    "W7": {"warmup": 2_000, "items": 100_000},
    "WA": {"warmup": 200, "calls": 2_000, "w2_warmup": 1_000, "w2_calls": 20_000, "inflight": 500},
    "MEM": {"warmup": 2_000, "calls": 100_000, "inflight": 500},
}
QUICK: dict[str, dict[str, int]] = {
    "W1": {"warmup": 20, "calls": 100},
    "W2": {"warmup": 100, "calls": 1_000, "inflight": 500},
    "W3": {"warmup": 1, "calls": 10, "size": 1 << 20},
    "W4": {"warmup": 10, "items": 1_000},
    "W4W": {"warmup": 10, "items": 1_000},
    "W5": {"spawn": 2},
    "W7": {"warmup": 200, "items": 5_000},
    "WA": {"warmup": 20, "calls": 100, "w2_warmup": 100, "w2_calls": 1_000, "inflight": 500},
    "MEM": {"warmup": 200, "calls": 2_000, "inflight": 500},
}

# Seconds one caller subprocess may take before it is killed (full sizes;
# the peer is much slower than distaff on some workloads, hence the room).
TIMEOUTS = {
    "W1": 180,
    "W2": 300,
    "W3": 180,
    "W4": 300,
    "W4W": 120,
    "W5": 120,
    "W7": 300,
    "WA": 300,
    "MEM": 900,
}
QUICK_TIMEOUT = 45


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, interpolated."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def distribution(samples: Iterable[float]) -> dict[str, float]:
    """p50, p90, p99, mean, min and max of ``samples``."""
    values = sorted(samples)
    if not values:
        return {}
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "min": values[0],
        "max": values[-1],
        "n": float(len(values)),
    }


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB from /proc/<pid>/status, or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ..."; comm may hold spaces and ')'
    return data.rpartition(b")")[2].decode(errors="replace").split()


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """User + system CPU time of a process (all threads) or one thread of it."""
    fields = _stat_fields(pid) if tid is None else _task_stat_fields(pid, tid)
    if not fields or len(fields) < 13:
        return None
    # after the comm: state(0) ... utime(11) stime(12), in clock ticks
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _task_stat_fields(pid: int, tid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data.rpartition(b")")[2].decode(errors="replace").split()


def threads(pid: int) -> dict[int, str]:
    """Thread id -> thread name of ``pid``."""
    names = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return names
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        except OSError:
            continue
    return names


def session_members(sid: int) -> list[int]:
    """PIDs (other than ``sid`` itself) whose session id is ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == sid:
            continue
        fields = _stat_fields(int(entry))
        # fields: state ppid pgrp session ...; zombies are reaped by their parent
        if fields and len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
            members.append(int(entry))
    return sorted(members)


def children(pid: int) -> list[int]:
    """Direct child PIDs of ``pid`` (from /proc/<pid>/task/*/children)."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
    return sorted(set(kids))


def cmdline(pid: int) -> str:
    """The command line of ``pid``, space-joined ('' if gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def cpu_times() -> list[int] | None:
    """The machine's CPU time so far, in ticks, by kind (the ``cpu`` line of /proc/stat)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/stat") as f:
        fields = f.readline().split()
        if fields and fields[0] == "cpu":
            return [int(field) for field in fields[1:]]
    return None


def steal_percent(start: list[int] | None, end: list[int] | None) -> float | None:
    """Share of the machine's CPU time the hypervisor took between two ``cpu_times``.

    A VM whose host is busy loses this time to other guests: a run with a
    high share measured a slower machine, not slower code.
    """
    if not start or not end or len(start) < 8 or len(end) < 8:
        return None
    # user nice system idle iowait irq softirq steal (guest time is within user)
    spent = [b - a for a, b in zip(start[:8], end[:8], strict=True)]
    total = sum(spent)
    return round(100.0 * spent[7] / total, 1) if total > 0 else None


def describe_steal(steal: float | None) -> str:
    """``steal_percent``'s figure in words, for a run's report."""
    if steal is None:
        return "steal time unknown"
    return f"{steal} % of the CPU time stolen by the host over the run"

"""SCALE: what a pool costs when large and when idle, on one host.

``python -m bench.scaling`` (part of ``make bench``). For each pool size, in a
fresh caller process (``python -m bench.scaling --one N``):

- start: from entering ``WorkerPool(spawn=N)`` to the block's body (every
  worker serves and is admitted).
- idle: after 2N direct no-op calls and 2 s past the sessions' idle time
  (``DISTAFF_SESSION_IDLE``, 30 s: the sessions have ended), nothing for
  ``--idle`` seconds: the CPU time of the caller and of each worker over that
  window (schedstat, ns; the caller's counters read so that reading the
  workers' is not billed to it), as a percentage of one core; then each idle
  worker's RSS, PSS and USS.
- nested fan-out: one call per worker, each making ``4 * N`` nested no-op
  calls from inside the worker (so every worker's shipped proxy connects),
  then the sockets and the TCP and Unix connections each worker holds, and
  the memory of caller and workers; then idle CPU again over ``--after``
  seconds (the minute after nested calls, while shipped proxies let go).
- stop: another nested fan-out, and at once leaving the block (every shipped
  proxy still connected: the costly case) until it returns; whether anything
  was printed on stderr (the caller's, its workers').
- idle stop: a second pool of the same size, 2N direct no-op calls, 2 s to
  settle, then leaving its block: the stop of a pool whose workers hold no
  connections to each other.

Results: ``bench/results/scaling.json`` and ``scaling.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import cpu_times, describe_steal, percentile, rss_kib, steal_percent

BENCH_DIR = Path(__file__).resolve().parent
SIZES = (2, 8, 16, 32)
MIB = 1024.0


def sockets(pid: int) -> int:
    """How many sockets ``pid`` holds open."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    count += 1
    return count


def connections(pid: int) -> int:
    """How many established TCP and connected Unix stream sockets ``pid`` holds.

    A pool's sessions on one host go over Unix sockets (``ipc``); the count
    includes the few a process holds anyway (a spawned worker's template
    control socket, none in the caller).
    """
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                count += fields[3] == "01" and fields[9] in inodes  # 01: ESTABLISHED
    with contextlib.suppress(OSError), open(f"/proc/{pid}/net/unix") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode: type 0001 stream, St 03 connected
            count += fields[4] == "0001" and fields[5] == "03" and fields[6] in inodes
    return count


def _smaps_mib(pid: int) -> dict[str, float]:
    """Pss (pages shared with the template count for their share) and USS (private pages)."""
    sizes = {"Pss": float("nan"), "Private_Clean": 0.0, "Private_Dirty": 0.0}
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key = line.split(":")[0]
            if key in sizes:
                sizes[key] = int(line.split()[1]) / MIB
    return {"pss": sizes["Pss"], "uss": sizes["Private_Clean"] + sizes["Private_Dirty"]}


def _memory(pids: list[int], prefix: str) -> dict[str, float]:
    rss = sorted((rss_kib(pid) or 0) / MIB for pid in pids)
    smaps = [_smaps_mib(pid) for pid in pids]
    return {
        f"{prefix}rss_mib_p50": percentile(rss, 50),
        f"{prefix}rss_mib_max": rss[-1],
        f"{prefix}pss_mib_p50": percentile(sorted(m["pss"] for m in smaps), 50),
        f"{prefix}uss_mib_p50": percentile(sorted(m["uss"] for m in smaps), 50),
    }


_SETTLE = 2.0  # seconds between the last call and an idle window


def _own_cpu() -> float:
    """CPU seconds of this process and of its reaped descendants.

    Not ``os.times()``: it counts in clock ticks (10 ms), coarser than a
    small pool's whole stop, which then came out negative once the workers'
    schedstat time (ns) was taken off it.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _family(pids: list[int]) -> list[int]:
    """The workers and, when they were forked from one, their template."""
    parents = set()
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/stat") as f:
            parents.add(int(f.read().rsplit(")", 1)[1].split()[1]))
    return [*pids, *(parents - {os.getpid()})]


def _exact(pids: list[int]) -> dict[int, float]:
    return {pid: _exact_cpu(pid) for pid in pids}


def _exact_cpu(pid: int) -> float:
    """CPU seconds of all threads of ``pid`` (ns resolution, from schedstat), 0 if gone."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(OSError, ValueError),
                open(f"/proc/{pid}/task/{tid}/schedstat") as f,
            ):
                total += int(f.read().split()[0])
    return total / 1e9


async def measure(spawn: int, idle: float, after: float, subset: int | None) -> dict[str, Any]:
    """One pool of ``spawn`` workers: start, idle, fan-out, idle, fan-out and stop."""
    import distaff
    from distaff.proxy.connection import session_idle_from_env

    from . import scaling_routines

    started, cpu0 = time.perf_counter(), _own_cpu()
    pool = distaff.WorkerPool(spawn=spawn, lazy=False, **_subset_arg(subset))
    await pool.__aenter__()
    result: dict[str, Any] = {
        "spawn": spawn,
        "subset": getattr(pool.proxy, "subset", None),
        "start_s": time.perf_counter() - started,
    }
    try:
        pids = pool.pids
        family = _family(pids)
        result["start_cpu_s"] = _own_cpu() - cpu0 + sum(_exact_cpu(pid) for pid in family)
        await asyncio.gather(*(scaling_routines.noop() for _ in range(2 * spawn)))
        # past the sessions' idle time: an idle pool is one whose sessions ended
        result |= await _idle(pids, idle, "", _SETTLE + (session_idle_from_env() or 0.0))
        result |= _memory(pids, "idle_worker_")
        await _fan_out(spawn)
        await asyncio.sleep(1.0)  # let connection setup settle
        per_worker = sorted(sockets(pid) for pid in pids)
        connected = sorted(connections(pid) for pid in pids)
        result |= {
            "worker_sockets_p50": percentile(per_worker, 50),
            "worker_sockets_max": float(per_worker[-1]),
            "worker_connections_p50": percentile(connected, 50),
            "worker_connections_max": float(connected[-1]),
            "caller_sockets": float(sockets(os.getpid())),
            "caller_connections": float(connections(os.getpid())),
            "caller_rss_mib": (rss_kib(os.getpid()) or 0) / MIB,
        }
        result |= _memory(pids, "worker_")
        result |= await _idle(pids, after, "nested_", _SETTLE)
        connected = sorted(connections(pid) for pid in pids)
        result["worker_connections_after_p50"] = percentile(connected, 50)
        await _fan_out(spawn)
    finally:
        result |= await _stop(pool, "")
    result |= await _idle_stop(spawn, subset)
    return result


async def _stop(pool: Any, prefix: str) -> dict[str, Any]:
    """Leave ``pool``'s block: seconds, CPU (workers, template, caller) and what stderr got."""
    written = os.lseek(2, 0, os.SEEK_END)
    family = _family(pool.pids)
    before = sum(_exact_cpu(pid) for pid in family)
    cpu0, own0 = _own_cpu(), time.process_time()
    stopping = time.perf_counter()
    await pool.__aexit__(None, None, None)
    return {
        f"{prefix}stop_s": time.perf_counter() - stopping,
        # the workers' CPU reaches us through the template's (or our own) children times
        f"{prefix}stop_cpu_s": _own_cpu() - cpu0 - before,
        f"{prefix}stop_cpu_caller_s": time.process_time() - own0,
        f"{prefix}teardown_stderr": os.pread(2, 1 << 16, written).decode(errors="replace"),
    }


async def _idle_stop(spawn: int, subset: int | None) -> dict[str, Any]:
    """A second pool, stopped after direct calls only: no shipped proxy holds a connection."""
    import distaff

    from . import scaling_routines

    pool = distaff.WorkerPool(spawn=spawn, lazy=False, **_subset_arg(subset))
    await pool.__aenter__()
    try:
        await asyncio.gather(*(scaling_routines.noop() for _ in range(2 * spawn)))
        await asyncio.sleep(_SETTLE)
    except BaseException:
        await pool.__aexit__(None, None, None)
        raise
    return await _stop(pool, "idle_")


async def _fan_out(spawn: int) -> None:
    """Each worker makes ``4 * spawn`` nested no-op calls, so every shipped proxy connects."""
    from . import scaling_routines

    done = await asyncio.gather(*(scaling_routines.fan(4 * spawn) for _ in range(spawn)))
    if sum(done) != 4 * spawn * spawn:
        raise AssertionError(f"fan-out made {sum(done)} nested calls")


async def _idle(pids: list[int], idle: float, prefix: str, settle: float) -> dict[str, float]:
    """CPU of the caller and each worker over ``idle`` seconds of doing nothing, in % of a core."""
    me = os.getpid()
    await asyncio.sleep(settle)  # the last calls' replies, collections, timers
    # the caller's own CPU is read last before and first after the window, so
    # reading every worker thread's counters is not billed to the caller
    before = _exact(pids)
    before[me], t0 = _exact_cpu(me), time.perf_counter()
    await asyncio.sleep(idle)
    mine, elapsed = _exact_cpu(me), time.perf_counter() - t0
    after = _exact(pids)
    after[me] = mine
    share = {pid: 100.0 * (after[pid] - before[pid]) / elapsed for pid in before}
    workers = sorted(share[pid] for pid in pids)
    return {
        f"{prefix}caller_idle_cpu_pct": share[me],
        f"{prefix}worker_idle_cpu_pct_p50": percentile(workers, 50),
        f"{prefix}worker_idle_cpu_pct_max": workers[-1],
    }


def _subset_arg(subset: int | None) -> dict[str, Any]:
    """WorkerPool's keyword: None keeps its default; 0 means every worker."""
    if subset is None:
        return {}
    return {"subset": subset or None}


def one(spawn: int, idle: float, after: float, subset: int | None) -> None:
    """Run one size in this process (its workers share its stderr, a file); print JSON."""
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            record = asyncio.run(measure(spawn, idle, after, subset))
        finally:
            os.dup2(saved, 2)
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace"))
    print(json.dumps(record))


def _run_one(spawn: int, idle: float, after: float, subset: int | None) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_DIR.parent), env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench.scaling", "--one", str(spawn)),
            *("--idle", str(idle), "--after", str(after)),
            *(() if subset is None else ("--subset", str(subset))),
        ],
        cwd=BENCH_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180 + idle + after,
        start_new_session=True,
    )
    if proc.returncode != 0:
        return {"spawn": spawn, "subset": subset, "ok": False, "error": proc.stderr[-2000:]}
    record: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    record["ok"] = True
    record["stderr"] = proc.stderr[-2000:]
    return record


def _idle_cell(r: dict[str, Any], prefix: str) -> str:
    caller = r[f"{prefix}caller_idle_cpu_pct"]
    p50, top = r[f"{prefix}worker_idle_cpu_pct_p50"], r[f"{prefix}worker_idle_cpu_pct_max"]
    return f"{caller:.2f}, {p50:.2f} / {top:.2f}"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per run."""
    out = io.StringIO()
    out.write(
        "| spawn | subset | start s (CPU s) | stop s (CPU s) | idle stop s (CPU s)"
        " | stderr at stop"
        " | idle % core: caller, worker p50/max | the same, the minute after nested calls"
        " | connections per worker p50/max (sockets) | the same at the minute's end"
        " | idle worker RSS / PSS / USS MiB | the same after nested calls | caller RSS MiB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in runs:
        if not r["ok"]:
            out.write(f"| {r['spawn']} | {r.get('subset')} | failed |" + " |" * 10 + "\n")
            continue
        out.write(
            f"| {r['spawn']} | {r['subset'] or 'all'} |"
            f" {r['start_s']:.2f} ({r['start_cpu_s']:.2f}) |"
            f" {r['stop_s']:.2f} ({r['stop_cpu_s']:.2f}) |"
            f" {r['idle_stop_s']:.2f} ({r['idle_stop_cpu_s']:.2f}) |"
            f" {_stderr_cell(r)} |"
            f" {_idle_cell(r, '')} | {_idle_cell(r, 'nested_')} |"
            f" {r['worker_connections_p50']:.0f} / {r['worker_connections_max']:.0f}"
            f" ({r['worker_sockets_p50']:.0f}) |"
            f" {r['worker_connections_after_p50']:.0f} |"
            f" {_memory_cell(r, 'idle_worker_')} | {_memory_cell(r, 'worker_')} |"
            f" {r['caller_rss_mib']:.1f} |\n"
        )
    return out.getvalue()


def _stderr_cell(r: dict[str, Any]) -> str:
    said = [r[k].strip() for k in ("teardown_stderr", "idle_teardown_stderr")]
    return "yes" if any(said) else "none"


def _memory_cell(r: dict[str, Any], prefix: str) -> str:
    rss, pss, uss = (r[f"{prefix}{k}_mib_p50"] for k in ("rss", "pss", "uss"))
    return f"{rss:.1f} / {pss:.1f} / {uss:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling")
    parser.add_argument("--one", type=int, help="measure one size in this process")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument(
        "--after", type=float, default=60.0, help="seconds of idle measured after nested calls"
    )
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument(
        "--subset", type=int, help="WorkerPool(subset=...) (0: every worker; default: its default)"
    )
    parser.add_argument("--out", default=str(BENCH_DIR / "results"))
    args = parser.parse_args()
    if args.one is not None:
        one(args.one, args.idle, args.after, args.subset)
        return
    ticks = cpu_times()
    runs = [
        _run_one(int(size), args.idle, args.after, args.subset)
        for _ in range(args.reps)
        for size in args.sizes.split(",")
    ]
    load = os.getloadavg()
    steal = steal_percent(ticks, cpu_times())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"loadavg": load, "steal_percent": steal, "runs": runs}
    (out / "scaling.json").write_text(json.dumps(report, indent=1))
    text = table(runs)
    (out / "scaling.md").write_text(text)
    print(text)
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{describe_steal(steal)}.")


if __name__ == "__main__":
    main()

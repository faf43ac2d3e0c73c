"""Profile one W1 run of distaff with py-spy, on the caller and on one worker.

``python -m bench.profile [--calls 30000] [--out DIR] [--native]``

Starts a W1 caller (``bench.runner distaff W1``, sequential no-op calls) in
its own session, waits for its two workers, then samples the caller and the
first worker at the same time with ``py-spy record`` (``pip install py-spy``;
non-blocking, or pausing the targets with ``--native``). It keeps the raw
(collapsed) stacks of each for flame graphs, writes a JSON summary, and
prints where the on-CPU time goes: self time by function and by module
group, inclusive time of the distaff, grpc.aio and pickling frames and of the
system calls, and CPU seconds per thread. Percentages are of busy samples:
waiting leaves (epoll_wait, wait4, futex, ...) are dropped. Use ``--native``:
without it, time in grpc's Cython core and in system calls is charged to the
Python frame on top, and py-spy's non-blocking mode counts the event loop's
epoll_wait as busy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .common import children, cmdline, cpu_seconds, session_members, threads

ROOT = Path(__file__).resolve().parent.parent
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# leaves where a thread waits rather than works (native stacks count them busy)
IDLE_LEAVES = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "wait4",
        "waitpid",
        "nanosleep",
        "clock_nanosleep",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "__futex_abstimed_wait_common",
        "futex_wait",
    }
)


def _workers(pid: int) -> list[int]:
    """Worker processes under ``pid``: its children, or the warm template's."""
    found: list[int] = []
    for child in children(pid):
        if "worker._template" in cmdline(child):
            found.extend(children(child))
        else:
            found.append(child)
    return found


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    name, file = match["name"], _short(match["file"])
    if name.startswith("0x"):
        name = "(unsymbolized)"
    return name, file


def _group(file: str) -> str:
    if file.endswith(".so") or ".so." in file or file.endswith((".c", ".h")):
        return "native: " + file.rsplit("/", 1)[-1].split(".cpython")[0]
    if file.startswith("distaff/"):
        parts = file.split("/")
        return "distaff/" + (parts[1] if len(parts) > 2 else parts[-1])
    for prefix, group in (
        ("grpc/", "grpc (python/cython)"),
        ("asyncio/", "asyncio"),
        ("google/protobuf", "protobuf"),
        ("cloudpickle", "cloudpickle"),
        ("pickle", "pickle"),
        ("uuid", "uuid"),
        ("bench/", "bench harness"),
        ("contextlib", "contextlib"),
        ("dataclasses", "dataclasses"),
        ("weakref", "weakref"),
    ):
        if file.startswith(prefix):
            return group
    return file or "(native/unknown)"


_INTERESTING_FILES = ("distaff/", "grpc/aio/", "cloudpickle/", "asyncio/timeouts", "asyncio/locks")
_SYSCALLS = frozenset({"sendmsg", "recvmsg", "recv", "send", "write", "read", "getpid", "syscall"})


def _interesting(name: str, file: str) -> bool:
    """Frames worth an inclusive figure: distaff, grpc.aio, pickling, system calls."""
    return file.startswith(_INTERESTING_FILES) or (name in _SYSCALLS and "libc" in file)


def analyse(raw: Path, top: int = 20) -> dict[str, object]:
    """Self/inclusive time by function and self time by module group."""
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_group: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    idle = 0
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = ""
        if frames and frames[0].startswith(("thread (", "process ")):
            thread, frames = frames[0], frames[1:]
        if not frames:
            continue
        parsed = [_frame(f) for f in frames]
        name, file = parsed[-1]
        if name in IDLE_LEAVES or "waitpid" in thread:
            idle += count
            continue
        total += count
        threads[thread] += count
        self_fn[f"{name} ({file})"] += count
        self_group[_group(file)] += count
        for key in {f"{n} ({f})" for n, f in parsed if _interesting(n, f)}:
            incl_fn[key] += count

    def pct(counter: Counter[str], n: int = top) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "threads": dict(threads),
        "self_by_function": pct(self_fn),
        "inclusive_by_function": pct(incl_fn, top * 2),
        "self_by_group": pct(self_group),
    }


def _print(title: str, result: dict[str, object]) -> None:
    print(f"\n=== {title}: {result['samples']} busy samples ===")
    if result["threads"]:
        print("busy samples by thread:", result["threads"])
    print("CPU seconds in the window by thread:", result.get("cpu_seconds_by_thread"))
    for section in ("self_by_group", "self_by_function", "inclusive_by_function"):
        print(f"-- {section.replace('_', ' ')}")
        for key, value in result[section]:  # type: ignore[attr-defined]
            print(f"  {value:5.1f}%  {key}")


def _thread_cpu(pid: int) -> dict[str, float]:
    out = {}
    for tid, name in threads(pid).items():
        used = cpu_seconds(pid, tid)
        if used is not None:
            out[f"{tid} {name}"] = used
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds to sample")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "distaff-prof")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy not found: pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    params = json.dumps({"warmup": 200, "calls": args.calls})
    caller = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.runner",
            "distaff",
            "W1",
            "--params",
            params,
            "--result",
            str(args.out / "w1.json"),
        ],
        cwd=ROOT,
        start_new_session=True,
    )
    spies: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 30
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = [p for p in _workers(caller.pid) if "worker." in cmdline(p)]
        if not workers:
            sys.exit("no distaff worker appeared")
        time.sleep(1.0)  # past the pool start and the warm-up
        targets = {"caller": caller.pid, "worker": workers[0]}
        for name, pid in targets.items():
            cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(args.duration)]
            cmd += ["--rate", str(args.rate), "--threads"]
            # py-spy reads native stacks only while the target is paused
            cmd.append("--native" if args.native else "--nonblocking")
            spies.append(
                subprocess.Popen(
                    [*cmd, "--format", "raw", "-o", str(args.out / f"{name}.txt")],
                    stdout=subprocess.DEVNULL,
                    stderr=open(args.out / f"{name}.py-spy.log", "wb"),  # noqa: SIM115
                )
            )
        cpu_before = {name: _thread_cpu(pid) for name, pid in targets.items()}
        for spy in spies:
            spy.wait(args.duration + 30)
        cpu_after = {name: _thread_cpu(pid) for name, pid in targets.items()}
        caller.wait(300)
        for name in targets:
            if not (args.out / f"{name}.txt").exists():
                log = (args.out / f"{name}.py-spy.log").read_text(errors="replace")
                print(f"py-spy wrote nothing for the {name}: {log.strip()[-500:]}")
                continue
            result = analyse(args.out / f"{name}.txt")
            result["cpu_seconds_by_thread"] = {
                label: round(cpu_after[name][label] - used, 3)
                for label, used in cpu_before[name].items()
                if label in cpu_after[name]
            }
            (args.out / f"{name}.summary.json").write_text(json.dumps(result, indent=1))
            _print(f"{name} (pid {targets[name]})", result)
        print(f"\nraw stacks in {args.out}/caller.txt and {args.out}/worker.txt")
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if caller.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()
        for pid in session_members(caller.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

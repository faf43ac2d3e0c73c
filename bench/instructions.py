"""Instructions a caller or a worker spends per W2 call, counted by callgrind: a noise-free A/B.

``python -m bench.instructions --a DIR --b DIR [--side caller|worker] [--calls 5000] [--repeat 2]``

Each DIR is a checkout of distaff (``git worktree add /tmp/snapX REV``).
``--side caller`` (the default): for each tree the caller runs under
``valgrind --tool=callgrind`` with instrumentation off while
``WorkerPool(spawn=2)`` starts and warms up (its workers run natively:
valgrind does not follow children); it is switched on
(``callgrind_control -i on``) for ``--calls`` no-op calls with 500 in flight,
W2's shape, and off again. ``--side worker``: one durable worker (``distaff
worker --ipc``, this host's discovery) runs under callgrind instead, and a
native caller makes the calls through it alone. Instructions counted are
that one process's only, and they repeat to a fraction of a per cent,
however loaded the machine is: the steadiest A/B this repository has. Under
valgrind the counted process runs tens of times slower than the other, so
fewer calls share each envelope than in a real W2 run; compare trees with
it, not with W2's absolute figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the caller: a pool of two spawned workers, or (with a namespace) the one
# durable worker in that namespace of this host's discovery
_CALLER = """
import asyncio, pathlib, sys
import distaff
from bench.routines import noop
from bench.runner import fan_out

go, calls, namespace = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def pool():
    if not namespace:
        return distaff.WorkerPool(spawn=2)
    return distaff.WorkerPool(discovery=distaff.LocalDiscovery(namespace), wait=600)

async def main():
    async with pool():
        await fan_out(noop, 3000, 500)
        print("READY", flush=True)
        while not go.exists():
            await asyncio.sleep(0.05)
        await fan_out(noop, calls, 500)
        print("DONE", flush=True)
        while go.exists():
            await asyncio.sleep(0.05)

asyncio.run(main())
"""


def _wait_for(path: Path, word: str, process: subprocess.Popen[bytes], patience: float) -> None:
    deadline = time.monotonic() + patience
    while word not in path.read_text():
        if process.poll() is not None:
            raise RuntimeError(f"the caller exited before {word}: see {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {word} from the caller within {patience} s")
        time.sleep(0.2)


def _callgrind(out: Path, command: list[str]) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *command,
    ]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def count(tree: Path, calls: int, side: str = "caller") -> int:
    """Instructions the caller (or the worker) in ``tree`` spends on ``calls`` W2-shaped calls."""
    with tempfile.TemporaryDirectory() as scratch:
        go, log, out = Path(scratch, "go"), Path(scratch, "log"), Path(scratch, "callgrind.out")
        env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree}")
        namespace = f"instructions-{os.getpid()}-{time.monotonic_ns()}"
        worker: subprocess.Popen[bytes] | None = None
        if side == "worker":
            command = [sys.executable, "-m", "distaff", "worker", "--discovery", "local"]
            command += ["--namespace", namespace, "--ipc", "--event-loop", "asyncio"]
            worker = subprocess.Popen(
                _callgrind(out, [*command, "--grace", "1"]),
                env=env,
                cwd="/",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            caller_command = [sys.executable, "-c", _CALLER, str(go), str(calls), namespace]
        else:
            counted_caller = [sys.executable, "-c", _CALLER, str(go), str(calls), ""]
            caller_command = _callgrind(out, counted_caller)
        with log.open("wb") as sink:
            caller = subprocess.Popen(
                caller_command, env=env, cwd="/", stdout=sink, stderr=subprocess.DEVNULL
            )
        counted = worker if worker is not None else caller
        try:
            _wait_for(log, "READY", caller, 600)
            control = ["callgrind_control", "-i"]
            subprocess.run([*control, "on", str(counted.pid)], check=True, capture_output=True)
            go.touch()
            _wait_for(log, "DONE", caller, 1200)
            subprocess.run([*control, "off", str(counted.pid)], check=True, capture_output=True)
            go.unlink()
            caller.wait(120)
            if worker is not None:
                worker.terminate()  # SIGTERM: the worker drains and exits, callgrind writes
                worker.wait(300)
        finally:
            _stop(caller)
            if worker is not None:
                _stop(worker)
        totals = re.search(r"^totals:\s*(\d+)", out.read_text(), re.MULTILINE)
        if totals is None:
            raise RuntimeError(f"no totals in {out}")
        return int(totals.group(1))


def main() -> None:
    """Count both trees ``--repeat`` times, alternating, and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="the baseline tree")
    parser.add_argument("--b", type=Path, required=True, help="the tree measured against it")
    parser.add_argument("--side", choices=("caller", "worker"), default="caller")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    counts: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(args.repeat):
        for side, tree in (("a", args.a), ("b", args.b)):
            counts[side].append(count(tree.resolve(), args.calls, args.side))
            per_call = counts[side][-1] / args.calls
            print(
                f"{side.upper()} {tree}: {per_call:,.0f} {args.side} instructions per call",
                flush=True,
            )
    a, b = min(counts["a"]), min(counts["b"])
    print(f"B/A: {b / a:.3f} ({b / args.calls:,.0f} against {a / args.calls:,.0f} per call)")


if __name__ == "__main__":
    main()

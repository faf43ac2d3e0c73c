"""Instructions the caller spends per W2 call, counted by callgrind: a noise-free A/B.

``python -m bench.instructions --a DIR --b DIR [--calls 5000] [--repeat 2]``

Each DIR is a checkout of distaff (``git worktree add /tmp/snapX REV``).
For each tree the caller runs under ``valgrind --tool=callgrind`` with
instrumentation off while ``WorkerPool(spawn=2)`` starts and warms up (its
workers run natively: valgrind does not follow children); it is switched on
(``callgrind_control -i on``) for ``--calls`` no-op calls with 500 in
flight, W2's shape, and off again. Instructions counted are the caller's
only, and they repeat to a fraction of a per cent, however loaded the
machine is: the steadiest A/B this repository has. Under valgrind the
caller runs tens of times slower than the workers, so fewer calls share
each envelope than in a real W2 run; compare trees with it, not with W2's
absolute figures.
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

_CALLER = """
import asyncio, pathlib, sys
import distaff
from bench.routines import noop
from bench.runner import fan_out

go, calls = pathlib.Path(sys.argv[1]), int(sys.argv[2])

async def main():
    async with distaff.WorkerPool(spawn=2):
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


def count(tree: Path, calls: int) -> int:
    """Instructions the caller in ``tree`` spends on ``calls`` W2-shaped calls."""
    with tempfile.TemporaryDirectory() as scratch:
        go, log, out = Path(scratch, "go"), Path(scratch, "log"), Path(scratch, "callgrind.out")
        env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree}")
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            _CALLER,
            str(go),
            str(calls),
        ]
        with log.open("wb") as sink:
            caller = subprocess.Popen(
                command, env=env, cwd="/", stdout=sink, stderr=subprocess.DEVNULL
            )
        try:
            _wait_for(log, "READY", caller, 600)
            control = ["callgrind_control", "-i"]
            subprocess.run([*control, "on", str(caller.pid)], check=True, capture_output=True)
            go.touch()
            _wait_for(log, "DONE", caller, 1200)
            subprocess.run([*control, "off", str(caller.pid)], check=True, capture_output=True)
            go.unlink()
            caller.wait(120)
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.wait()
        totals = re.search(r"^totals:\s*(\d+)", out.read_text(), re.MULTILINE)
        if totals is None:
            raise RuntimeError(f"no totals in {out}")
        return int(totals.group(1))


def main() -> None:
    """Count both trees ``--repeat`` times, alternating, and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="the baseline tree")
    parser.add_argument("--b", type=Path, required=True, help="the tree measured against it")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    counts: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(args.repeat):
        for side, tree in (("a", args.a), ("b", args.b)):
            counts[side].append(count(tree.resolve(), args.calls))
            per_call = counts[side][-1] / args.calls
            print(f"{side.upper()} {tree}: {per_call:,.0f} instructions per call", flush=True)
    a, b = min(counts["a"]), min(counts["b"])
    print(f"B/A: {b / a:.3f} ({b / args.calls:,.0f} against {a / args.calls:,.0f} per call)")


if __name__ == "__main__":
    main()

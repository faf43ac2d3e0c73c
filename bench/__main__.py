"""``python -m bench``: distaff against raw grpc.aio, raw asyncio TCP and the peer.

Every workload runs in fresh processes: for each repetition, workload and
implementation the orchestrator starts a new caller (``bench.runner``) in its
own session, which spawns its own workers or baseline server. The caller is
killed by process group after its timeout, and whatever is left in its
session afterwards is killed by PID and reported. Implementations are
interleaved (and rotated per repetition) so drift hits them alike.

Results: ``<out>/latest.json`` plus a timestamped copy, ``<out>/latest.md``
(the table) and ``<out>/latest.png`` (the chart). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report
from .common import (
    FULL,
    GRPC_VARIANT,
    GRPC_VARIANT_WORKLOADS,
    ONLY_FOR,
    QUICK,
    QUICK_TIMEOUT,
    TIMEOUTS,
    WORKLOADS,
    cmdline,
    cpu_times,
    describe_steal,
    session_members,
    steal_percent,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PEER = "wool"
PEER_VERSION = "0.15.7"
PEER_VENV = BENCH_DIR / ".venv-wool"
IMPLS = ["grpc", "tcp", "distaff", GRPC_VARIANT]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the peer's virtual environment


def _peer_version(python: Path) -> str | None:
    try:
        out = subprocess.run(
            [
                str(python),
                "-c",
                f"import importlib.metadata as m, {PEER}; print(m.version('{PEER}'))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_peer() -> tuple[Path | None, str | None]:
    """Return the peer venv's python (creating the venv if needed), or the reason not."""
    python = PEER_VENV / "bin" / "python"
    if python.exists() and _peer_version(python) == PEER_VERSION:
        return python, None
    log(f"setting up {PEER}=={PEER_VERSION} in {PEER_VENV} ...")
    steps = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(PEER_VENV)])
    steps.append([str(python), "-m", "pip", "install", "-q", f"{PEER}=={PEER_VERSION}"])
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(step[:4])} failed: {exc}"
        if done.returncode != 0:
            errors = [
                line
                for line in (done.stderr or done.stdout).splitlines()
                if "ignored: it is neither" not in line
            ]
            tail = " | ".join(errors[-5:])
            return None, f"{' '.join(step[:4])} exited {done.returncode}: {tail}"
    version = _peer_version(python)
    if version != PEER_VERSION:
        return None, f"{PEER} does not import in {PEER_VENV} (found version {version})"
    return python, None


# --------------------------------------------------------------------------
# one caller process


def _environment(impl: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    env["PYTHONUNBUFFERED"] = "1"
    if impl == GRPC_VARIANT:
        env["DISTAFF_IPC"] = "0"  # every session over gRPC, as between hosts
    if impl == PEER:
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(name, None)
    return env


def _sweep(sid: int) -> list[str]:
    """Kill (by PID) whatever is still in session ``sid``; return what was left."""
    deadline = time.monotonic() + 3.0
    members = session_members(sid)
    while members and time.monotonic() < deadline:
        time.sleep(0.05)
        members = session_members(sid)
    leftover = []
    for pid in members:
        leftover.append(f"{pid}: {cmdline(pid)[:120]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftover


def run_one(
    python: str, impl: str, workload: str, params: dict[str, int], timeout: float, scratch: Path
) -> dict[str, Any]:
    """Run ``bench.runner`` once in a fresh session; never leaves a process behind."""
    tag = f"{impl}-{workload}-{time.monotonic_ns()}"
    result_path = scratch / f"{tag}.json"
    err_path = scratch / f"{tag}.err"
    cmd = [
        python,
        "-m",
        "bench.runner",
        impl,
        workload,
        "--params",
        json.dumps(params),
        "--result",
        str(result_path),
    ]
    record: dict[str, Any] = {"impl": impl, "workload": workload, "ok": False}
    started = time.perf_counter()
    with open(err_path, "wb") as err:
        process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_environment(impl),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            record["error"] = f"timed out after {timeout:.0f} s"
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            leftover = _sweep(process.pid)
    record["wall_s"] = time.perf_counter() - started
    if leftover:
        record["leftover_processes"] = leftover
    if result_path.exists():
        with open(result_path) as f:
            record.update(json.load(f))
    elif "error" not in record:
        record["error"] = f"exited {process.returncode} without a result"
    if not record.get("ok"):
        stderr = err_path.read_bytes().decode(errors="replace")
        record["stderr_tail"] = stderr[-3000:]
    return record


def _short_error(record: dict[str, Any]) -> str:
    error = str(record.get("error") or "")
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "failed"


# --------------------------------------------------------------------------
# machine info and output


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        info["loadavg_now"] = " ".join(f.read().split()[:3])
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        info["mem_total"] = f.readline().split(":", 1)[1].strip()
    try:
        import grpc

        info["grpc"] = grpc.__version__
    except ImportError:
        pass
    try:
        import distaff

        info["distaff"] = distaff.__version__
    except ImportError:
        pass
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0:
            info["commit"] = head.stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "bench"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if changed.returncode == 0 and changed.stdout.strip():
            info["commit"] = info.get("commit", "?") + "+changes"  # not the commit alone
    return info


def write_outputs(
    results: dict[str, Any], out: Path, md: str, chart_title: str, *, write_json: bool = True
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if write_json:
        text = json.dumps(results, indent=1, sort_keys=False)
        for name in ("latest.json", f"{stamp}.json"):
            tmp = out / f"{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, out / name)
    (out / "latest.md").write_text(md)
    try:
        png = out / "latest.png"
        report.chart(
            results["summary"],
            results["config"]["impls"],
            results["config"]["workloads"],
            str(out / "latest.png.tmp"),
            chart_title,
        )
        os.replace(out / "latest.png.tmp", png)
        if write_json:
            shutil.copyfile(png, out / f"{stamp}.png")
    except ImportError as exc:
        log(f"no chart: {exc} (pip install matplotlib)")


def markdown(results: dict[str, Any], body: str) -> str:
    m = results["machine"]
    c = results["config"]
    peer = results["peer"]
    lines = [
        f"Machine: {m.get('cpu_model') or 'unknown CPU'}, {m.get('nproc')} CPUs, "
        f"Python {m.get('python')}, grpcio {m.get('grpc')}, distaff {m.get('distaff')}"
        f"{' @ ' + m['commit'] if m.get('commit') else ''}; {m.get('date')}; "
        f"load average {m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end; "
        f"{describe_steal(m.get('steal_percent'))}.",
        f"{c['reps']} repetition(s) of each workload, every one in fresh processes; "
        f"{'QUICK sizes; ' if c['quick'] else ''}2 workers per pool (WA: 1).",
        "",
        "Each cell: **ratio to raw grpc.aio** (same run), then the absolute median over "
        "the repetitions and its (min\u2013max). For 'lower is better' rows a ratio below 1 "
        "beats the floor; for 'higher is better' rows a ratio above 1 does.",
        "",
        body,
        "",
    ]
    if m.get("commit_at_end"):
        lines.append(
            f"HEAD moved during the run ({m.get('commit')} -> {m['commit_at_end']}); "
            "distaff is installed editable, so later distaff runs used the newer code."
        )
    if peer.get("status") != "ok":
        lines.append(f"Peer {PEER} {PEER_VERSION}: not measured ({peer.get('reason')}).")
    lines.append(
        "Baselines use one server process and one connection (grpc: one channel, "
        "500 concurrent unary calls in W2; TCP: one connection, requests multiplexed "
        "by id); for W5 they start two servers in parallel, like `spawn=2`. "
        "Growth rows are n/a where the floor grew under 1 MiB."
    )
    return "\n".join(lines) + "\n"


def _failures(runs: list[dict[str, Any]], summary: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(impl, workload) -> error, where no repetition of it succeeded."""
    failures = {}
    for run in runs:
        if not run.get("ok") and run["workload"] not in summary.get(run["impl"], {}):
            failures[(run["impl"], run["workload"])] = _short_error(run)
    return failures


def render(results: dict[str, Any], out: Path, *, write_json: bool = True) -> None:
    """Summaries, ratios, the table (printed and latest.md), the chart; the JSON too."""
    summary = report.summarize(results["runs"])
    impls = results["config"]["impls"]
    results["summary"] = summary
    results["ratios_to_grpc"] = report.ratios(summary, impls)
    body = report.table(
        summary, impls, results["config"]["workloads"], _failures(results["runs"], summary)
    )
    md = markdown(results, body)
    m = results["machine"]
    title = (
        f"distaff bench {m['date']} \u2014 {m.get('cpu_model')}, {m.get('nproc')} CPUs \u2014 "
        "labels: ratio to raw grpc.aio"
    )
    write_outputs(results, out, md, title, write_json=write_json)
    print(md)


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"workloads, e.g. W1,W3 (of {WORKLOADS})"
    )
    parser.add_argument("--no-peer", action="store_true", help=f"skip the peer ({PEER})")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results directory")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="run nothing: redo the table, latest.md and the chart from a results JSON",
    )
    args = parser.parse_args(argv)
    chosen = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown or not chosen:
        parser.error(f"unknown workload(s) {unknown}; choose from {','.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if w in chosen]
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        render(json.loads(args.render.read_text()), args.out, write_json=False)
        return 0
    sizes = QUICK if args.quick else FULL
    impls = list(IMPLS)
    pythons = dict.fromkeys(impls, sys.executable)
    peer: dict[str, Any] = {"name": PEER, "version": PEER_VERSION, "status": "skipped"}
    if args.no_peer:
        peer["reason"] = "--no-peer"
    else:
        python, reason = ensure_peer()
        if python is None:
            peer.update(status="unavailable", reason=reason)
            log(f"peer {PEER} unavailable: {reason}")
        else:
            peer.update(status="ok", python=str(python))
            impls.append(PEER)
            pythons[PEER] = str(python)

    machine = machine_info()
    machine["loadavg_at_start"] = machine.pop("loadavg_now", "")
    ticks_at_start = cpu_times()
    runs: list[dict[str, Any]] = []
    peer_failures = 0
    scratch = Path(tempfile.mkdtemp(prefix="distaff-bench-"))
    begun = time.perf_counter()
    try:
        for rep in range(1, args.reps + 1):
            for workload in args.workloads:
                shift = (rep - 1) % len(impls)
                for impl in impls[shift:] + impls[:shift]:
                    if impl == PEER and peer["status"] != "ok":
                        continue
                    if workload in ONLY_FOR and impl not in ONLY_FOR[workload]:
                        continue
                    if impl == GRPC_VARIANT and workload not in GRPC_VARIANT_WORKLOADS:
                        continue
                    timeout = QUICK_TIMEOUT if args.quick else TIMEOUTS[workload]
                    record = run_one(
                        pythons[impl], impl, workload, sizes[workload], timeout, scratch
                    )
                    record["rep"] = rep
                    runs.append(record)
                    status = "ok" if record.get("ok") else f"FAILED: {_short_error(record)}"
                    if record.get("ok"):
                        shown = ", ".join(
                            f"{k}={report.fmt(v)}" for k, v in list(record["metrics"].items())[:3]
                        )
                        status = f"ok  {shown}"
                    if record.get("leftover_processes"):
                        status += f"  [killed {len(record['leftover_processes'])} leftover]"
                    log(
                        f"rep {rep}/{args.reps} {workload:<3} {impl:<7} "
                        f"{record['wall_s']:6.1f} s  {status}"
                    )
                    if impl == PEER:
                        peer_failures = 0 if record.get("ok") else peer_failures + 1
                        if peer_failures >= 3:
                            peer.update(
                                status="failed",
                                reason=f"3 runs in a row failed; last: {_short_error(record)}",
                            )
                            log(f"giving up on the peer: {peer['reason']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    at_end = machine_info()
    machine["loadavg_at_end"] = at_end.get("loadavg_now", "")
    machine["steal_percent"] = steal_percent(ticks_at_start, cpu_times())
    if at_end.get("commit") != machine.get("commit"):
        machine["commit_at_end"] = at_end.get("commit")
        log(
            f"WARNING: HEAD moved during the run: {machine.get('commit')} -> {at_end.get('commit')}"
        )
    summary = report.summarize(runs)
    failures = _failures(runs, summary)
    shown_impls = [i for i in impls if i in summary or any(k[0] == i for k in failures)]
    results: dict[str, Any] = {
        "machine": machine,
        "config": {
            "reps": args.reps,
            "quick": args.quick,
            "workloads": args.workloads,
            "impls": shown_impls,
            "sizes": {w: sizes[w] for w in args.workloads},
            "workers_per_pool": 2,
        },
        "peer": peer,
        "runs": runs,
        "elapsed_s": time.perf_counter() - begun,
    }
    render(results, args.out)
    log(f"wrote {args.out}/latest.json, latest.md, latest.png in {results['elapsed_s']:.0f} s")
    leftovers = sum(len(r.get("leftover_processes", [])) for r in runs)
    if leftovers:
        log(f"WARNING: killed {leftovers} leftover process(es); see runs[].leftover_processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark harness keeps working: a tiny run of every workload."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


QUICK = ("--quick", "--reps", "1", "--no-peer")


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_clean_run(tmp_path: pathlib.Path, workload: str) -> dict[str, Any]:
    """Run ``workload`` quickly; its one run, checked ok and leaving no process."""
    result = run_module("bench", *QUICK, "--only", workload, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    (run,) = report["runs"]
    assert run["ok"], run
    assert not run.get("leftover_processes")
    return dict(run)


@pytest.mark.slow
def test_quick_bench_runs_every_workload_and_reports_ratios(tmp_path: pathlib.Path) -> None:
    result = run_module("bench", *QUICK, "--only", "W1,W2,W3,W4,W5", "--out", str(tmp_path))

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    table = (tmp_path / "latest.md").read_text()
    assert "W1 no-op latency" in table
    assert "W4 stream" in table
    runs = report["runs"]
    assert {run["workload"] for run in runs} >= {"W1", "W2", "W3", "W4", "W5"}
    assert all(run["ok"] for run in runs), [r for r in runs if not r["ok"]]
    assert not any(run.get("leftover_processes") for run in runs)
    assert report["ratios_to_grpc"], "no ratios to the grpc floor"
    steal = report["machine"]["steal_percent"]
    assert steal is not None
    assert 0.0 <= steal <= 100.0
    assert "stolen by the host" in table


def test_quick_w7_compares_distaff_map_with_the_process_pool(tmp_path: pathlib.Path) -> None:
    run = one_clean_run(tmp_path, "W7")
    metrics = run["metrics"]
    assert metrics["items_per_s"] > 0
    assert metrics["ppe_items_per_s"] > 0
    assert metrics["ratio_to_ppe"] == metrics["items_per_s"] / metrics["ppe_items_per_s"]
    assert "W7 ProcessPoolExecutor.map" in (tmp_path / "latest.md").read_text()


def test_quick_w6_compares_balancers_against_round_robin(tmp_path: pathlib.Path) -> None:
    result = run_module(
        "bench.balancing",
        "--quick",
        "--reps",
        "1",
        "--count",
        "40",
        "--scenarios",
        "A,B",
        "--out",
        str(tmp_path),
    )

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "balancing.json").read_text())
    assert set(report["summary"]) == {
        f"{scenario}/{mode}/{b}"
        for scenario in ("A", "B")
        for mode in ("open", "closed")
        for b in ("roundrobin", "random", "leastloaded", "latency")
    } | {"A/floor/roundrobin"}
    table = (tmp_path / "balancing.md").read_text()
    assert "p99 vs RR" in table
    assert "| leastloaded |" in table
    assert "Floor: a lone 1 ms call on an idle pool" in table


def test_quick_scaling_reports_start_stop_idle_cpu_and_sockets(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTAFF_SESSION_IDLE", "0.5")  # the idle window waits for it
    result = run_module(
        "bench.scaling", "--sizes", "2", "--idle", "1", "--after", "1", "--out", str(tmp_path)
    )

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "scaling.json").read_text())
    assert 0.0 <= report["steal_percent"] <= 100.0
    assert "stolen by the host" in result.stdout
    (run,) = report["runs"]
    assert run["ok"], run
    assert run["start_s"] > 0
    assert run["stop_s"] > 0
    assert run["idle_stop_s"] > 0
    assert run["idle_stop_cpu_s"] > 0
    assert run["idle_teardown_stderr"] == ""
    assert run["worker_sockets_max"] >= 2  # the caller's connection and at least one peer's
    assert run["worker_connections_max"] >= 2
    assert run["idle_worker_rss_mib_p50"] > run["idle_worker_uss_mib_p50"] > 0
    assert run["caller_idle_cpu_pct"] >= 0
    assert run["nested_worker_idle_cpu_pct_max"] >= 0
    assert "| 2 |" in (tmp_path / "scaling.md").read_text()


def test_quick_wa_measures_actor_calls_next_to_routine_calls(tmp_path: pathlib.Path) -> None:
    run = one_clean_run(tmp_path, "WA")
    metrics = run["metrics"]
    for kind in ("routine", "actor"):
        assert metrics[f"{kind}_lat_p50_us"] > 0
        assert metrics[f"{kind}_calls_per_s"] > 0
    assert "WA actor no-op method latency" in (tmp_path / "latest.md").read_text()


def test_steal_is_the_share_of_cpu_time_the_host_took() -> None:
    from bench.common import cpu_times, describe_steal, steal_percent

    # /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice
    start = [100, 0, 50, 800, 0, 0, 0, 50, 0, 0]
    end = [300, 0, 100, 1300, 0, 0, 0, 300, 0, 0]
    assert steal_percent(start, end) == 25.0  # 250 of 1,000 ticks
    assert steal_percent(start, start) is None
    assert steal_percent(None, end) is None
    assert describe_steal(25.0) == "25.0 % of the CPU time stolen by the host over the run"
    assert describe_steal(None) == "steal time unknown"
    now = cpu_times()  # this machine's own counters read and parse
    assert now is not None
    assert len(now) >= 8


def test_streamfloor_measures_three_ways_and_the_steal() -> None:
    result = run_module("bench.streamfloor", "--calls", "20", "--blocks", "1", "--json")

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for kind in ("unary", "stream", "distaff"):
        assert report[kind]["p50_us"] > 0
        assert report[kind]["caller_cpu_us"] > 0
    assert 0.0 <= report["steal_percent"] <= 100.0

"""Summaries, the ratio table (markdown) and the chart of one bench run."""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

FLOOR = "grpc"
TIMES = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash
IMPL_LABELS = {
    "grpc": "raw grpc.aio (floor)",
    "tcp": "raw asyncio TCP",
    "distaff": "distaff",
    "distaff-grpc": "distaff (gRPC only)",
    "wool": "wool (peer)",
}


@dataclasses.dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    label: str
    unit: str
    higher_is_better: bool
    # below this absolute floor value a ratio means nothing (e.g. ~0 MiB growth)
    min_floor: float = 0.0
    # the floor's figure comes from another workload (W4W: grpc's W4)
    floor_workload: str | None = None
    # the ratio is to another metric of the same implementation and run (W7)
    floor_metric: str | None = None

    @property
    def better(self) -> str:
        return "higher" if self.higher_is_better else "lower"


ROWS = (
    Row("W1", "lat_p50_us", "W1 no-op latency, p50", "µs", False),
    Row("W1", "lat_p99_us", "W1 no-op latency, p99", "µs", False),
    Row("W1", "caller_cpu_us_per_call", "W1 caller CPU per call", "µs", False),
    Row("W1", "worker_cpu_us_per_call", "W1 worker CPU per call", "µs", False),
    Row("W2", "calls_per_s", "W2 no-op throughput, 500 in flight", "calls/s", True),
    Row("W2", "caller_cpu_us_per_call", "W2 caller CPU per call", "µs", False),
    Row("W2", "worker_cpu_us_per_call", "W2 worker CPU per call", "µs", False),
    Row("W3", "ms_p50", "W3 1 MiB echo, p50 per call", "ms", False),
    Row("W3", "ms_p99", "W3 1 MiB echo, p99 per call", "ms", False),
    Row("W4", "items_per_s", "W4 stream of small ints", "items/s", True),
    Row(
        "W4W",
        "items_per_s",
        "W4W same stream, distaff read-ahead window=256",
        "items/s",
        True,
        floor_workload="W4",
    ),
    Row("W5", "cold_start_s", "W5 cold start (enter to first result)", "s", False),
    Row("W5", "teardown_s", "W5 teardown (exit the block)", "s", False),
    Row(
        "W7",
        "items_per_s",
        "W7 distaff.map, 100,000 trivial items, plain def (ratio: to the executor)",
        "items/s",
        True,
        floor_metric="ppe_items_per_s",
    ),
    Row(
        "W7",
        "async_items_per_s",
        "W7 the same, async def routine (ratio: to the executor)",
        "items/s",
        True,
        floor_metric="ppe_items_per_s",
    ),
    Row(
        "W7",
        "fixed_items_per_s",
        "W7 the same, plain def, chunksize= the executor's best (ratio: to the executor)",
        "items/s",
        True,
        floor_metric="ppe_items_per_s",
    ),
    Row(
        "W7",
        "ppe_items_per_s",
        "W7 ProcessPoolExecutor.map, best chunksize, same caller",
        "items/s",
        True,
        floor_metric="ppe_items_per_s",
    ),
    Row("WA", "routine_lat_p50_us", "WA no-op routine latency, p50 (W1 shape)", "µs", False),
    Row(
        "WA",
        "actor_lat_p50_us",
        "WA actor no-op method latency, p50 (ratio: to the routine)",
        "µs",
        False,
        floor_metric="routine_lat_p50_us",
    ),
    Row(
        "WA",
        "actor_lat_p99_us",
        "WA actor latency, p99 (ratio: to the routine's p99)",
        "µs",
        False,
        floor_metric="routine_lat_p99_us",
    ),
    Row("WA", "routine_calls_per_s", "WA no-op routine throughput (W2 shape)", "calls/s", True),
    Row(
        "WA",
        "actor_calls_per_s",
        "WA actor no-op method throughput, concurrency=None (ratio: to the routine)",
        "calls/s",
        True,
        floor_metric="routine_calls_per_s",
    ),
    Row("WA", "routine_cpu_us_per_call", "WA routine CPU per call, caller + worker", "µs", False),
    Row(
        "WA",
        "actor_cpu_us_per_call",
        "WA actor CPU per call, caller + worker (ratio: to the routine)",
        "µs",
        False,
        floor_metric="routine_cpu_us_per_call",
    ),
    Row("MEM", "worker_idle_rss_mib", "MEM idle worker RSS", "MiB", False),
    Row("MEM", "caller_growth_mib", "MEM caller RSS growth over the calls", "MiB", False, 1.0),
    Row("MEM", "worker_growth_mib", "MEM worker RSS growth over the calls", "MiB", False, 1.0),
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """impl -> workload -> metric -> {median, min, max, n} over the good runs."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        if not run.get("ok"):
            continue
        for metric, value in run["metrics"].items():
            if isinstance(value, (int, float)) and not math.isnan(value):
                values.setdefault((run["impl"], run["workload"], metric), []).append(value)
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (impl, workload, metric), vs in values.items():
        summary.setdefault(impl, {}).setdefault(workload, {})[metric] = {
            "median": statistics.median(vs),
            "min": min(vs),
            "max": max(vs),
            "n": len(vs),
        }
    return summary


def ratios(summary: dict[str, Any], impls: list[str]) -> dict[str, dict[str, float | None]]:
    """impl -> "workload.metric" -> median / floor median (None where meaningless)."""
    out: dict[str, dict[str, float | None]] = {}
    for impl in impls:
        for row in ROWS:
            floor = _cell(summary, FLOOR, row, floor=True)
            mine = _cell(summary, impl, row, floor=impl == FLOOR)
            if row.floor_metric:
                floor = summary.get(impl, {}).get(row.workload, {}).get(row.floor_metric)
            ratio = None
            if floor and mine and abs(floor["median"]) > max(row.min_floor, 1e-12):
                ratio = mine["median"] / floor["median"]
            out.setdefault(impl, {})[f"{row.workload}.{row.metric}"] = ratio
    return out


def _cell(
    summary: dict[str, Any], impl: str, row: Row, *, floor: bool = False
) -> dict[str, float] | None:
    workload = row.floor_workload if floor and row.floor_workload else row.workload
    cell: dict[str, float] | None = summary.get(impl, {}).get(workload, {}).get(row.metric)
    return cell


def fmt(value: float) -> str:
    """A compact human number."""
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(
    summary: dict[str, Any],
    impls: list[str],
    workloads: list[str],
    failures: dict[tuple[str, str], str],
) -> str:
    """The markdown table: ratio to the floor, then absolute median and min-max."""
    labels = [IMPL_LABELS.get(i, i) for i in impls]
    lines = [
        "| metric (unit) | better | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(impls),
    ]
    table_ratios = ratios(summary, impls)
    for row in ROWS:
        if row.workload not in workloads:
            continue
        cells = []
        for impl in impls:
            cell = _cell(summary, impl, row, floor=impl == FLOOR)
            if cell is None:
                reason = failures.get((impl, row.workload))
                cells.append(f"failed: {reason}" if reason else "—")
                continue
            ratio = table_ratios[impl][f"{row.workload}.{row.metric}"]
            ratio_text = f"**{ratio:.2f}{TIMES}**" if ratio is not None else "n/a"
            spread = ""
            if cell["n"] > 1:
                spread = f" ({fmt(cell['min'])}{DASH}{fmt(cell['max'])})"
            cells.append(f"{ratio_text} {fmt(cell['median'])}{spread}")
        lines.append(f"| {row.label} ({row.unit}) | {row.better} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(
    summary: dict[str, Any], impls: list[str], workloads: list[str], path: str, title: str
) -> None:
    """One panel per metric: median per implementation, min-max whiskers, ratio labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ROWS if r.workload in workloads]
    if not rows:
        return
    cols = 4
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    colors = {
        "grpc": "#7f7f7f",
        "tcp": "#bcbd22",
        "distaff": "#1f77b4",
        "distaff-grpc": "#17becf",
        "wool": "#ff7f0e",
    }
    table_ratios = ratios(summary, impls)
    for ax, row in zip(axes.flat, rows, strict=False):
        names, medians, lows, highs, bar_colors, texts = [], [], [], [], [], []
        for impl in impls:
            cell = _cell(summary, impl, row, floor=impl == FLOOR)
            if cell is None:
                continue
            names.append(IMPL_LABELS.get(impl, impl).replace(" (", "\n("))
            medians.append(cell["median"])
            lows.append(cell["median"] - cell["min"])
            highs.append(cell["max"] - cell["median"])
            bar_colors.append(colors.get(impl, "#2ca02c"))
            ratio = table_ratios[impl][f"{row.workload}.{row.metric}"]
            texts.append(f"{ratio:.2f}{TIMES}" if ratio is not None else "n/a")
        bars = ax.bar(range(len(names)), medians, color=bar_colors, yerr=[lows, highs], capsize=3)
        for bar, text in zip(bars, texts, strict=True):
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        positive = [m for m in medians if m > 0]
        if positive and max(positive) / min(positive) > 30:
            ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{row.label}\n({row.unit}, {row.better} is better)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)

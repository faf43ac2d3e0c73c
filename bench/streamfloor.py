"""W1's floors side by side: raw unary, a raw long-lived stream, and distaff.

``python -m bench.streamfloor [--calls 2000] [--blocks 6] [--size 0]`` measures, in one
caller process, sequential no-op calls three ways, in interleaved blocks so
that a shared machine's drift hits them alike:

* ``unary``: raw grpc.aio unary echo (W1's floor in ``make bench``);
* ``stream``: raw grpc.aio, one bidirectional stream, one message each way
  per call (the shape of distaff's session, with nothing on top);
* ``distaff``: a no-op routine on ``WorkerPool(spawn=1)``.

It prints each one's median p50 latency over the blocks and its CPU per call
(this process; the server's or the worker's), with ratios to ``unary``. The
gap between ``stream`` and ``distaff`` is what distaff itself adds to a call
(both sides' Python), the gap between ``unary`` and ``stream`` is what the
stream design saves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .common import cpu_seconds, cpu_times, describe_steal, steal_percent
from .runner import ServerProcess

KINDS = ("unary", "stream", "distaff")


async def _measure(
    call: Callable[[], Awaitable[Any]], calls: int, pids: list[int]
) -> tuple[float, float, float]:
    """p50 latency (us), caller and server CPU per call (us) for ``calls`` calls."""
    samples = []
    servers = [cpu_seconds(pid) or 0.0 for pid in pids]
    caller = time.process_time()
    for _ in range(calls):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    caller = time.process_time() - caller
    server = sum((cpu_seconds(pid) or 0.0) - b for pid, b in zip(pids, servers, strict=True))
    return statistics.median(samples) * 1e6, caller / calls * 1e6, server / calls * 1e6


async def run(calls: int, blocks: int, size: int = 0) -> dict[str, Any]:
    """Interleave ``blocks`` blocks of ``calls`` calls of each kind; medians per kind.

    ``size``: bytes each way per call (0: W1's no-op; 1 MiB: W3's echo).
    """
    import grpc.aio

    import distaff

    from .routines import echo as distaff_echo
    from .routines import noop
    from .servers import GRPC_CHAT, GRPC_ECHO, GRPC_OPTIONS, HOST

    server = await ServerProcess.start("grpc")
    channel = grpc.aio.insecure_channel(f"{HOST}:{server.port}", options=GRPC_OPTIONS)
    try:
        echo = channel.unary_unary(GRPC_ECHO)
        chat = channel.stream_stream(GRPC_CHAT)()

        payload = os.urandom(size)

        async def over_stream() -> None:
            await chat.write(payload)
            await chat.read()

        async def distaff_call() -> None:
            if size:
                await distaff_echo(payload)
            else:
                await noop()

        async with distaff.WorkerPool(spawn=1) as pool:
            ways: dict[str, tuple[Callable[[], Awaitable[Any]], list[int]]] = {
                "unary": (lambda: echo(payload), [server.process.pid]),
                "stream": (over_stream, [server.process.pid]),
                "distaff": (distaff_call, list(pool.pids)),
            }
            for call, _ in ways.values():  # warm every path
                for _ in range(200):
                    await call()
            rows: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in KINDS}
            for block in range(blocks):
                order = KINDS[block % 3 :] + KINDS[: block % 3]
                for kind in order:
                    call, pids = ways[kind]
                    rows[kind].append(await _measure(call, calls, pids))
        await chat.done_writing()
        await chat.read()  # the server ends the stream: nothing is cut off at close
    finally:
        await channel.close()
        await server.stop()
    return {
        kind: {
            "p50_us": statistics.median(r[0] for r in rows[kind]),
            "caller_cpu_us": statistics.median(r[1] for r in rows[kind]),
            "server_cpu_us": statistics.median(r[2] for r in rows[kind]),
        }
        for kind in KINDS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streamfloor")
    parser.add_argument("--calls", type=int, default=2000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=6, help="blocks of each kind")
    parser.add_argument(
        "--size", type=int, default=0, help="bytes each way per call (1048576: W3's shape)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args(argv)
    ticks = cpu_times()
    result = asyncio.run(run(args.calls, args.blocks, args.size))
    steal = steal_percent(ticks, cpu_times())
    if args.json:
        print(json.dumps({**result, "steal_percent": steal}))
        return 0
    base = result["unary"]
    print(
        "| way | p50 us | vs unary | caller CPU us/call | vs unary "
        "| server CPU us/call | vs unary |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, row in result.items():
        cells = [kind]
        for metric in ("p50_us", "caller_cpu_us", "server_cpu_us"):
            cells += [f"{row[metric]:.0f}", f"{row[metric] / base[metric]:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    print(f"{describe_steal(steal)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

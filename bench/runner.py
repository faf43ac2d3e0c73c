"""One caller process: runs one workload against one implementation, once.

``python -m bench.runner IMPL WORKLOAD --params JSON --result PATH``

IMPL is ``grpc`` or ``tcp`` (the raw baselines: this process is the client
and spawns its server subprocess), ``distaff``, or ``wool`` (the peer; run by
the interpreter of its own virtual environment). The orchestrator starts a
fresh process of this module for every workload, implementation and
repetition, so no run inherits another's warm caches, connections or heap.

Standard library only at import time (the peer's venv has no distaff); each
implementation is imported when it is chosen. The ``__main__`` guard matters:
the peer spawns its workers with multiprocessing's "spawn" start method,
which imports this module again in every worker.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .common import WORKLOADS, children, cmdline, cpu_seconds, distribution, rss_kib

MIB = 1024.0


# --------------------------------------------------------------------------
# implementations under test: start/stop, noop, echo, stream, worker_pids


class ServerProcess:
    """A baseline server subprocess (``python -m bench.servers KIND``)."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls, kind: str, timeout: float = 30.0) -> ServerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.servers",
            kind,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout)
            if not line.startswith(b"PORT "):
                raise RuntimeError(f"{kind} server did not start: {line!r}")
            return cls(process, int(line.split()[1]))
        except BaseException:
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise

    async def stop(self) -> None:
        process = self.process
        if process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
        await process.wait()


class Baseline:
    """Common part of the raw baselines: spawn and stop the server processes."""

    kind = ""

    def __init__(self, spawn: int = 1) -> None:
        self.spawn = spawn
        self.servers: list[ServerProcess] = []

    async def start(self) -> None:
        results = await asyncio.gather(
            *(ServerProcess.start(self.kind) for _ in range(self.spawn)), return_exceptions=True
        )
        self.servers = [r for r in results if isinstance(r, ServerProcess)]
        for r in results:
            if isinstance(r, BaseException):
                await self._stop_servers()
                raise r
        try:
            await self.connect(self.servers[0].port)
        except BaseException:
            await self._stop_servers()
            raise

    async def connect(self, port: int) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        try:
            await self.disconnect()
        finally:
            await self._stop_servers()

    async def _stop_servers(self) -> None:
        servers, self.servers = self.servers, []
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)

    def worker_pids(self) -> list[int]:
        return [s.process.pid for s in self.servers]


class GrpcBaseline(Baseline):
    """Raw grpc.aio: unary echo and server streaming, one channel, identity serializers."""

    kind = "grpc"

    def __init__(self, spawn: int = 1) -> None:
        super().__init__(spawn)
        import grpc.aio  # noqa: F401  (imported before any timing, like distaff)

    async def connect(self, port: int) -> None:
        import grpc.aio

        from .servers import GRPC_ECHO, GRPC_OPTIONS, GRPC_STREAM, HOST

        self._channel = grpc.aio.insecure_channel(f"{HOST}:{port}", options=GRPC_OPTIONS)
        # no serializers: the request and response are the bytes themselves
        self._echo = self._channel.unary_unary(GRPC_ECHO)
        self._stream = self._channel.unary_stream(GRPC_STREAM)
        self.echo: Callable[[bytes], Awaitable[bytes]] = self._echo

    def noop(self) -> Awaitable[bytes]:
        return self._echo(b"")  # type: ignore[no-any-return]

    async def stream(self, n: int) -> AsyncIterator[int]:
        async for message in self._stream(str(n).encode()):
            yield int.from_bytes(message, "little")

    async def disconnect(self) -> None:
        channel = getattr(self, "_channel", None)
        if channel is not None:
            await channel.close()


class TcpBaseline(Baseline):
    """Raw asyncio TCP: one connection, length-prefixed frames, requests multiplexed by id."""

    kind = "tcp"

    async def connect(self, port: int) -> None:
        from .servers import HEADER, HOST

        self._header = HEADER
        self._reader, self._writer = await asyncio.open_connection(HOST, port)
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._streams: dict[int, asyncio.Queue[int | None]] = {}
        self._next_id = 0
        self._read_task = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        from .servers import OP_ECHO, OP_END, OP_ITEM

        header, reader = self._header, self._reader
        pending, streams = self._pending, self._streams
        error: BaseException = ConnectionError("the server closed the connection")
        try:
            while True:
                op, request_id, length = header.unpack(await reader.readexactly(header.size))
                payload = await reader.readexactly(length) if length else b""
                if op == OP_ECHO:
                    future = pending.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result(payload)
                elif op == OP_ITEM:
                    streams[request_id].put_nowait(int.from_bytes(payload, "little"))
                elif op == OP_END:
                    streams[request_id].put_nowait(None)
        except asyncio.IncompleteReadError:
            pass
        except BaseException as exc:
            error = exc
            raise
        finally:
            for future in pending.values():
                if future.done():
                    continue
                if isinstance(error, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(error)

    def _send(self, op: int, payload: bytes) -> int:
        self._next_id += 1
        request_id = self._next_id
        self._writer.write(self._header.pack(op, request_id, len(payload)))
        if payload:
            self._writer.write(payload)
        return request_id

    async def echo(self, payload: bytes) -> bytes:
        from .servers import OP_ECHO

        future = asyncio.get_running_loop().create_future()
        self._pending[self._send(OP_ECHO, payload)] = future
        if len(payload) > 65536:
            await self._writer.drain()
        return await future

    def noop(self) -> Awaitable[bytes]:
        return self.echo(b"")

    async def stream(self, n: int) -> AsyncIterator[int]:
        from .servers import OP_STREAM

        queue: asyncio.Queue[int | None] = asyncio.Queue()
        request_id = self._next_id + 1
        self._streams[request_id] = queue
        self._send(OP_STREAM, str(n).encode())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            del self._streams[request_id]

    async def disconnect(self) -> None:
        task = getattr(self, "_read_task", None)
        if task is not None:
            self._writer.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Framework:
    """distaff or the peer: a ``WorkerPool(spawn=N)`` and three routines."""

    def __init__(self, name: str, spawn: int = 2) -> None:
        self.name = name
        self.spawn = spawn
        self.lib: Any = importlib.import_module(name)
        routines: Any = importlib.import_module(
            "bench.routines" if name == "distaff" else "bench.wool_routines"
        )
        self.noop: Callable[[], Awaitable[None]] = routines.noop
        self.echo: Callable[[bytes], Awaitable[bytes]] = routines.echo
        self.stream: Callable[[int], AsyncIterator[int]] = routines.count
        self.stream_ahead: Callable[[int], AsyncIterator[int]] | None = getattr(
            routines, "count_ahead", None
        )
        self.pool: Any = None

    async def start(self) -> None:
        options: dict[str, Any] = {}
        if self.name == "distaff":
            # overhead measurements: e.g. '{"forward_output": false}' or '{"metrics": true}'
            options = json.loads(os.environ.get("DISTAFF_BENCH_POOL", "{}"))
            if os.environ.get("DISTAFF_BENCH_CALLER_METRICS") == "1":
                importlib.import_module("distaff.metrics").enable()
        self.pool = self.lib.WorkerPool(spawn=self.spawn, **options)
        await self.pool.__aenter__()

    async def stop(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.__aexit__(None, None, None)

    def worker_pids(self) -> list[int]:
        pids = getattr(self.pool, "pids", None)  # distaff
        if pids is not None:
            return list(pids)
        # the peer keeps its workers' metadata (with the pid) in a private
        # mapping; fall back to our children that multiprocessing spawned
        try:
            return [w.metadata.pid for w in self.pool._workers if w.metadata]
        except Exception:
            return [
                p
                for p in children(os.getpid())
                if "spawn_main" in cmdline(p) and "resource_tracker" not in cmdline(p)
            ]


def make_target(impl: str, spawn: int | None = None) -> Any:
    if impl == "grpc":
        return GrpcBaseline(spawn or 1)
    if impl == "tcp":
        return TcpBaseline(spawn or 1)
    if impl in ("distaff", "wool"):
        return Framework(impl, spawn or 2)
    if impl == "distaff-grpc":  # the caller's environment says DISTAFF_IPC=0
        return Framework("distaff", spawn or 2)
    raise SystemExit(f"unknown implementation {impl!r}")


# --------------------------------------------------------------------------
# workloads


async def fan_out(call: Callable[[], Awaitable[Any]], total: int, inflight: int) -> None:
    """Make ``total`` calls with at most ``inflight`` outstanding (bounded lanes)."""
    left = total

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    async with asyncio.TaskGroup() as group:
        for _ in range(min(inflight, total)):
            group.create_task(lane())


class CpuMeter:
    """CPU seconds used by this process and by the workers between start and stop."""

    def __init__(self, worker_pids: list[int]) -> None:
        self.pids = worker_pids
        self.before = [cpu_seconds(pid) for pid in self.pids]
        self.caller_before = time.process_time()  # all our threads, ns resolution

    def per_call_us(self, calls: int) -> dict[str, float]:
        caller = time.process_time() - self.caller_before
        after = [cpu_seconds(pid) for pid in self.pids]  # clock ticks: 10 ms resolution
        used = [
            (b - a) if a is not None and b is not None else math.nan
            for a, b in zip(self.before, after, strict=True)
        ]
        return {
            "caller_cpu_us_per_call": caller * 1e6 / calls,
            "worker_cpu_us_per_call": sum(used) * 1e6 / calls,
        }


async def w1_latency(t: Any, p: dict[str, int]) -> dict[str, float]:
    noop = t.noop
    for _ in range(p["warmup"]):
        await noop()
    clock = time.perf_counter_ns
    samples = []
    meter = CpuMeter(t.worker_pids())
    started = clock()
    for _ in range(p["calls"]):
        t0 = clock()
        await noop()
        samples.append(clock() - t0)
    elapsed = clock() - started
    cpu = meter.per_call_us(p["calls"])
    d = distribution(s / 1000.0 for s in samples)
    return {
        **cpu,
        "lat_p50_us": d["p50"],
        "lat_p90_us": d["p90"],
        "lat_p99_us": d["p99"],
        "lat_mean_us": d["mean"],
        "lat_max_us": d["max"],
        "calls_per_s": p["calls"] / (elapsed / 1e9),
    }


async def w2_throughput(t: Any, p: dict[str, int]) -> dict[str, float]:
    await fan_out(t.noop, p["warmup"], p["inflight"])
    meter = CpuMeter(t.worker_pids())
    started = time.perf_counter()
    await fan_out(t.noop, p["calls"], p["inflight"])
    elapsed = time.perf_counter() - started
    return {
        "calls_per_s": p["calls"] / elapsed,
        "elapsed_s": elapsed,
        **meter.per_call_us(p["calls"]),
    }


async def w3_payload(t: Any, p: dict[str, int]) -> dict[str, float]:
    payload = os.urandom(p["size"])
    echo = t.echo
    for _ in range(p["warmup"]):
        if await echo(payload) != payload:
            raise AssertionError("echo returned different bytes")
    clock = time.perf_counter_ns
    samples = []
    for _ in range(p["calls"]):
        t0 = clock()
        result = await echo(payload)
        samples.append(clock() - t0)
        if len(result) != len(payload):
            raise AssertionError(f"echo returned {len(result)} bytes, sent {len(payload)}")
    d = distribution(s / 1e6 for s in samples)
    mean_s = d["mean"] / 1000.0
    return {
        "ms_p50": d["p50"],
        "ms_p99": d["p99"],
        "ms_mean": d["mean"],
        "mib_per_s_each_way": p["size"] / (1 << 20) / mean_s,
    }


async def _consume(stream: AsyncIterator[int]) -> tuple[int, int]:
    n = total = 0
    async for item in stream:
        n += 1
        total += item
    return n, total


async def w4_streaming(t: Any, p: dict[str, int], *, ahead: bool = False) -> dict[str, float]:
    stream = t.stream_ahead if ahead else t.stream
    if stream is None:
        raise RuntimeError(f"{type(t).__name__} has no windowed stream")
    for _ in range(2):  # two calls: round robin reaches both workers
        await _consume(stream(p["warmup"]))
    items = p["items"]
    started = time.perf_counter()
    n, total = await _consume(stream(items))
    elapsed = time.perf_counter() - started
    if n != items or total != items * (items - 1) // 2:
        raise AssertionError(f"stream yielded {n} items (sum {total}), expected {items}")
    return {"items_per_s": n / elapsed, "elapsed_s": elapsed}


async def w5_cold_start(impl: str, p: dict[str, int]) -> dict[str, float]:
    target = make_target(impl, p["spawn"])
    t0 = time.perf_counter()
    await target.start()
    try:
        entered = time.perf_counter()
        await target.noop()
        first = time.perf_counter()
    finally:
        t_stop = time.perf_counter()
        await target.stop()
        stopped = time.perf_counter()
    return {
        "cold_start_s": first - t0,
        "enter_s": entered - t0,
        "teardown_s": stopped - t_stop,
    }


def _mib(kib: int | None) -> float:
    return kib / MIB if kib is not None else float("nan")


async def mem_growth(t: Any, p: dict[str, int]) -> dict[str, float]:
    me = os.getpid()
    pids = t.worker_pids()
    if not pids:
        raise RuntimeError("no worker pids to measure")
    for _ in range(20):
        await t.noop()
    await asyncio.sleep(0.5)
    idle = [_mib(rss_kib(pid)) for pid in pids]
    await fan_out(t.noop, p["warmup"], p["inflight"])
    await asyncio.sleep(0.5)
    caller0, workers0 = _mib(rss_kib(me)), [_mib(rss_kib(pid)) for pid in pids]
    started = time.perf_counter()
    await fan_out(t.noop, p["calls"], p["inflight"])
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)
    caller1, workers1 = _mib(rss_kib(me)), [_mib(rss_kib(pid)) for pid in pids]
    growth = [b - a for a, b in zip(workers0, workers1, strict=True)]
    return {
        "worker_idle_rss_mib": sum(idle) / len(idle),
        "caller_rss_start_mib": caller0,
        "caller_rss_end_mib": caller1,
        "caller_growth_mib": caller1 - caller0,
        "worker_rss_start_mib": max(workers0),
        "worker_growth_mib": max(growth),
        "workers": float(len(pids)),
        "calls_per_s": p["calls"] / elapsed,
    }


# ProcessPoolExecutor.map is tried with each of these; W7 reports its best
PPE_CHUNKSIZES = (64, 256, 1024, 4096, 16384)


async def _distaff_map_rate(fn: Any, items: int, chunksize: int | None = None) -> float:
    import distaff

    started = time.perf_counter()
    total = 0
    async for value in distaff.map(fn, range(items), chunksize=chunksize):
        total += value
    elapsed = time.perf_counter() - started
    if total != items * (items - 1):
        raise AssertionError(f"distaff.map summed to {total}, expected {items * (items - 1)}")
    return items / elapsed


def _ppe_rate(executor: Any, fn: Any, items: int, chunksize: int) -> float:
    started = time.perf_counter()
    total = sum(executor.map(fn, range(items), chunksize=chunksize))
    elapsed = time.perf_counter() - started
    if total != items * (items - 1):
        raise AssertionError(f"executor.map summed to {total}, expected {items * (items - 1)}")
    return items / elapsed


async def w7_map(t: Any, p: dict[str, int]) -> dict[str, float]:
    """100,000 trivial items: distaff.map (auto chunks) vs ProcessPoolExecutor.map."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import routines

    items = p["items"]
    for fn in (routines.double_plain, routines.double_async):
        await _distaff_map_rate(fn, p["warmup"])
    plain = max([await _distaff_map_rate(routines.double_plain, items) for _ in range(2)])
    coroutine = max([await _distaff_map_rate(routines.double_async, items) for _ in range(2)])
    # spawn, not fork: this process runs gRPC threads
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=t.spawn, mp_context=context) as executor:
        _ppe_rate(executor, routines.double, p["warmup"], 64)
        rates = {c: _ppe_rate(executor, routines.double, items, c) for c in PPE_CHUNKSIZES}
    best = max(rates, key=rates.__getitem__)
    fixed = max([await _distaff_map_rate(routines.double_plain, items, best) for _ in range(2)])
    return {
        "items_per_s": plain,
        "async_items_per_s": coroutine,
        "fixed_items_per_s": fixed,
        "ppe_items_per_s": rates[best],
        "ppe_best_chunksize": float(best),
        "ratio_to_ppe": plain / rates[best],
    }


async def _paired_latency(
    calls: dict[str, Callable[[], Awaitable[Any]]], rounds: int
) -> dict[str, dict[str, float]]:
    """Latency of each call, interleaved call by call (the first alternates)."""
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {kind: [] for kind in calls}
    kinds = list(calls)
    for i in range(rounds):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            t0 = clock()
            await calls[kind]()
            samples[kind].append(clock() - t0)
    return {kind: distribution(s / 1000.0 for s in samples[kind]) for kind in calls}


async def _paired_rate(
    t: Any, calls: dict[str, Callable[[], Awaitable[Any]]], total: int, inflight: int
) -> dict[str, tuple[float, float]]:
    """Calls/s and CPU µs per call (caller + workers) of each, in alternating blocks (ABBA)."""
    blocks = 10
    size = max(1, total // blocks)
    spent: dict[str, list[float]] = {kind: [0.0, 0.0] for kind in calls}  # seconds, CPU µs
    kinds = list(calls)
    for i in range(blocks):
        for kind in kinds if i % 4 in (0, 3) else kinds[::-1]:
            meter = CpuMeter(t.worker_pids())
            started = time.perf_counter()
            await fan_out(calls[kind], size, inflight)
            spent[kind][0] += time.perf_counter() - started
            spent[kind][1] += sum(meter.per_call_us(size).values()) * size
    n = size * blocks
    return {kind: (n / seconds, cpu / n) for kind, (seconds, cpu) in spent.items()}


async def wa_actor(t: Any, p: dict[str, int]) -> dict[str, float]:
    """An actor's no-op method next to the no-op routine: W1 and W2 shapes, one worker.

    The pool has one worker (``SPAWN``), so the routine's calls and the
    actor's land on the same process and the ratio is one call's cost to
    another's, not parallelism. The W1 shape calls an actor with the default
    turns (one at a time); the W2 shape an actor with ``concurrency=None``,
    whose calls may interleave on the worker as the routine's do. So that
    drift in a shared machine's load hits both alike, the W1 shape
    alternates routine and actor call by call, and the W2 shape runs them
    in alternating blocks.
    """
    from bench.routines import FreeNoopActor, NoopActor

    one_turn = await NoopActor.spawn()
    free = await FreeNoopActor.spawn()
    sequential = {"routine": t.noop, "actor": one_turn.noop}
    concurrent = {"routine": t.noop, "actor": free.noop}
    for kind in sequential:
        for _ in range(p["warmup"]):
            await sequential[kind]()
        await fan_out(concurrent[kind], p["w2_warmup"], p["inflight"])
    latency = await _paired_latency(sequential, 2 * p["calls"])
    rates = await _paired_rate(t, concurrent, 2 * p["w2_calls"], p["inflight"])
    out: dict[str, float] = {}
    for kind in sequential:
        out[f"{kind}_lat_p50_us"] = latency[kind]["p50"]
        out[f"{kind}_lat_p99_us"] = latency[kind]["p99"]
        out[f"{kind}_calls_per_s"], out[f"{kind}_cpu_us_per_call"] = rates[kind]
    await one_turn.close()
    await free.close()
    return out


WORKLOAD_FUNCTIONS: dict[str, Callable[..., Awaitable[dict[str, float]]]] = {
    "W1": w1_latency,
    "W2": w2_throughput,
    "W3": w3_payload,
    "W4": w4_streaming,
    "W4W": functools.partial(w4_streaming, ahead=True),
    "W7": w7_map,
    "WA": wa_actor,
    "MEM": mem_growth,
}


# workers per pool where a workload needs other than the default
SPAWN = {"WA": 1}  # the actor and the routine on the same single worker


async def run(impl: str, workload: str, params: dict[str, int]) -> dict[str, float]:
    if workload == "W5":
        return await w5_cold_start(impl, params)
    target = make_target(impl, SPAWN.get(workload))
    await target.start()
    try:
        return await WORKLOAD_FUNCTIONS[workload](target, params)
    finally:
        await target.stop()


def versions(impl: str) -> dict[str, str]:
    info = {"python": platform.python_version(), "executable": sys.executable}
    for name in ("grpc", "google.protobuf", "cloudpickle", impl):
        module = sys.modules.get(name)
        if module is None and name in ("grpc", "google.protobuf"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
        version = getattr(module, "__version__", None)
        if version:
            info[name] = str(version)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runner")
    parser.add_argument("impl", choices=("grpc", "tcp", "distaff", "distaff-grpc", "wool"))
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--params", required=True, help="the workload's sizes, as JSON")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args()
    record: dict[str, Any] = {"impl": args.impl, "workload": args.workload, "pid": os.getpid()}
    code = 0
    try:
        record["metrics"] = asyncio.run(run(args.impl, args.workload, json.loads(args.params)))
        record["ok"] = True
    except BaseException as exc:
        record["ok"] = False
        record["error"] = "".join(traceback.format_exception(exc))
        code = 1
    record["versions"] = versions(args.impl)
    tmp = args.result + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, args.result)
    sys.exit(code)


if __name__ == "__main__":
    main()

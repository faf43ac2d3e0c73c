"""Three "hosts" on a private LAN of network namespaces, found by LAN discovery.

Two namespaces run ``python -m distaff worker --discovery lan --insecure``
bound to their own address; the third runs a caller (this module run with
``python -m``) whose ``WorkerPool(discovery=LanDiscovery())`` spawns nothing
and learns the workers from multicast DNS alone. The test drives the caller
over stdin (one JSON command a line) and reads what it sees on stdout (one
JSON object a line: each worker admitted or removed, with the caller's clock,
and each command's reply).

Run as a script, this module is that caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import routines as r
from .durable import ROOT, DurableWorker, start_worker
from .netns import Host, IsolatedLan, NetnsUnavailable, unavailable_reason

pytestmark = pytest.mark.netns

Event = dict[str, Any]


@pytest.fixture
def lan() -> Iterator[IsolatedLan]:
    """Three host namespaces on one bridge; skip where namespaces cannot be made."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    segment = IsolatedLan(3)
    try:
        segment.create()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield segment
    finally:
        segment.destroy()


class Caller:
    """The caller process in its namespace, seen through its JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._ids = itertools.count()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, host: Host, stderr: Path) -> Caller:
        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *host.exec_prefix(),
                sys.executable,
                "-m",
                __name__,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=1 << 20,
            )
        return cls(process, stderr)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
                self._changed.set()
        finally:
            self._changed.set()

    async def wait_event(self, match: Callable[[Event], bool], timeout: float) -> Event:
        """The first event (already seen or coming) that ``match`` accepts."""
        problem = "timed out"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    found = next((e for e in self.events if match(e)), None)
                    if found is not None:
                        return found
                    if self._reader.done():
                        problem = "the caller's output ended"
                        break
                    self._changed.clear()
                    await self._changed.wait()
        raise AssertionError(f"caller: expected event not seen ({problem}); {self.diagnostics()}")

    async def admitted(self, pid: int, timeout: float = 15.0) -> Event:
        return await self.wait_event(
            lambda e: e.get("event") == "admitted" and e["pid"] == pid, timeout
        )

    async def removed(self, pid: int, timeout: float = 15.0) -> Event:
        return await self.wait_event(
            lambda e: e.get("event") == "removed" and e["pid"] == pid, timeout
        )

    async def command(self, cmd: str, **args: Any) -> Event:
        """Send a command; return its reply (it comes within ``args["timeout"]`` + 5 s)."""
        assert self.process.stdin is not None
        ident = next(self._ids)
        line = json.dumps({"id": ident, "cmd": cmd, "args": args}) + "\n"
        self.process.stdin.write(line.encode())
        await self.process.stdin.drain()
        return await self.wait_event(lambda e: e.get("reply") == ident, args["timeout"] + 5)

    async def serve(self, *pids: int, timeout: float = 15.0) -> Event:
        """Exactly ``pids`` serve plain calls (within ``timeout``), without errors."""
        reply = await self.command("serve", expect=sorted(pids), timeout=timeout)
        assert reply["ok"], f"{reply!r}; {self.diagnostics()}"
        assert reply["errors"] == [], reply
        return reply

    async def nested(self, *pids: int, timeout: float = 15.0) -> Event:
        """Each of ``pids`` makes nested calls that reach each of ``pids``, and no one else."""
        reply = await self.command("nested", pids=sorted(pids), timeout=timeout)
        assert reply["ok"], f"{reply!r}; {self.diagnostics()}"
        assert reply["errors"] == [], reply
        assert {p for pair in reply["pairs"] for p in pair[:2]} == set(pids), reply
        for outer_task, (_, inner_caller, _), _ in reply["results"]:
            assert inner_caller == outer_task, reply  # the nested call is the outer's child
        return reply

    async def quit(self, timeout: float = 15.0) -> int:
        """Close stdin: the caller leaves its pool and exits; return its status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    def diagnostics(self) -> str:
        stderr = self.stderr.read_text(errors="replace")[-3000:] if self.stderr.exists() else ""
        return f"events={self.events!r} stderr={stderr!r}"


async def test_workers_on_other_hosts_are_found_used_dropped_and_replaced(
    lan: IsolatedLan, tmp_path: Path
) -> None:
    h0, h1, h2 = lan.hosts
    figures: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as cleanup:  # kills every process, on every path
        cleanup.callback(report, figures)

        async def worker_on(host: Host, name: str) -> tuple[DurableWorker, float]:
            """Start a worker; record spawn -> "serving on"; return it and that moment."""
            spawned = time.time()
            args = ("--discovery", "lan", "--insecure", "--host", host.address)
            worker = await start_worker(*args, prefix=host.exec_prefix())
            serving = time.time()
            cleanup.push_async_callback(worker.kill)
            figures[f"{name}: spawn -> 'serving on'"] = serving - spawned
            assert worker.address.startswith(f"{host.address}:")
            return worker, serving

        a, _ = await worker_on(h0, "A")

        # a caller that comes up after a worker finds it by querying
        caller = await Caller.start(h2, tmp_path / "caller.err")
        cleanup.push_async_callback(caller.kill)
        ready = await caller.wait_event(lambda e: e.get("event") == "ready", 30)
        seen_a = await caller.admitted(a.pid)
        figures["A: caller's pool ready -> admitted (query)"] = seen_a["t"] - ready["t"]
        assert seen_a["address"] == a.address

        # a worker that comes up after the caller is found by its announcements
        b, b_serving = await worker_on(h1, "B")
        seen_b = await caller.admitted(b.pid)
        figures["B: 'serving on' -> admitted (announce)"] = seen_b["t"] - b_serving
        assert seen_b["address"] == b.address
        await caller.serve(a.pid, b.pid)

        # a routine on each host makes nested calls through the proxy shipped with
        # it; those proxies find the workers by LAN discovery from inside their
        # own namespaces, and reach the worker on the other host as well
        reply = await caller.nested(a.pid, b.pid)
        figures["shipped proxies: all nested (host, host) pairs"] = reply["seconds"]

        # SIGTERM: the worker says goodbye, the caller stops using it
        sigterm = time.time()
        assert await a.terminate() == 0
        gone = await caller.removed(a.pid)
        figures["A: SIGTERM -> removed (goodbye)"] = gone["t"] - sigterm
        reply = await caller.serve(b.pid)
        assert reply["windows"] == 1  # not one call went to the stopped worker

        # a new worker on the first host is taken into use, by the caller and by
        # the proxies already running on the workers
        c, c_serving = await worker_on(h0, "C")
        seen_c = await caller.admitted(c.pid)
        figures["C: 'serving on' -> admitted (announce)"] = seen_c["t"] - c_serving
        assert seen_c["address"] == c.address
        await caller.serve(b.pid, c.pid)
        reply = await caller.nested(b.pid, c.pid)
        figures["shipped proxies after the change: all pairs"] = reply["seconds"]

        assert await caller.quit() == 0


def report(figures: dict[str, float]) -> None:
    lines = "".join(f"\n  {name}: {seconds * 1000:.0f} ms" for name, seconds in figures.items())
    print(f"\nLAN discovery timings (negative: admitted before 'serving on'):{lines}")


# The caller, run in its namespace as ``python -m tests.integration.test_multihost``.


def emit(**fields: Any) -> None:
    print(json.dumps({"t": time.time(), **fields}), flush=True)


async def watch(proxy: Any) -> None:
    """Report every worker the proxy admits or removes, when it does."""
    seen: dict[str, Any] = {}

    def changed(workers: list[Any]) -> bool:
        return {m.uid for m in workers} != seen.keys()

    while True:
        await proxy.wait_for(changed, timeout=3600)
        now = {m.uid: m for m in proxy.workers}
        for uid in now.keys() - seen.keys():
            emit(event="admitted", uid=uid, pid=now[uid].pid, address=now[uid].address)
        for uid in seen.keys() - now.keys():
            emit(event="removed", uid=uid, pid=seen[uid].pid, address=seen[uid].address)
        seen.clear()
        seen.update(now)


async def serve(expect: list[int], timeout: float) -> Event:
    """Call ``pid`` in windows of 20 calls until one window sees exactly ``expect``."""
    window: set[int] = set()
    errors: list[str] = []
    windows = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while window != set(expect):
                window = set()
                windows += 1
                for _ in range(20):
                    try:
                        window.add(await r.pid())
                    except Exception as exc:
                        errors.append(repr(exc))
    ok = window == set(expect)
    return {"ok": ok, "pids": sorted(window), "windows": windows, "errors": errors[:10]}


async def nested(pids: list[int], timeout: float) -> Event:
    """Call ``nested_info`` until every (outer PID, nested PID) pair of ``pids`` is seen.

    The reply has the first 10 results, and each pair seen with its count and
    when it was first seen (seconds into the command).
    """
    start = time.monotonic()
    wanted = {(outer, inner) for outer in pids for inner in pids}
    results: list[Any] = []
    pairs: dict[tuple[int, int], list[float]] = {}
    errors: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not wanted <= pairs.keys():
                try:
                    result = await r.nested_info()
                except Exception as exc:
                    errors.append(repr(exc))
                    continue
                results.append(result)
                pair = pairs.setdefault((result[2], result[1][2]), [0, time.monotonic() - start])
                pair[0] += 1
    return {
        "ok": wanted <= pairs.keys(),
        "seconds": time.monotonic() - start,
        "pairs": [[*pair, *seen] for pair, seen in sorted(pairs.items())],
        "results": results[:10],
        "errors": errors[:10],
    }


async def caller() -> None:
    import distaff

    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    handlers = {"serve": serve, "nested": nested}
    async with distaff.WorkerPool(discovery=distaff.LanDiscovery()) as pool:
        emit(event="ready")
        watcher = asyncio.ensure_future(watch(pool.proxy))
        try:
            while line := await commands.readline():
                command = json.loads(line)
                reply = await handlers[command["cmd"]](**command["args"])
                emit(reply=command["id"], **reply)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(caller())

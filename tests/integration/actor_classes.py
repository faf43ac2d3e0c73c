"""Actor classes the integration tests spawn on real workers (importable by them)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import distaff
from distaff.runtime.worker.actors import registry


@distaff.actor
class Counter:
    """A counter; its methods record the order they start in."""

    def __init__(self, start: int = 0, *, fail: bool = False) -> None:
        if fail:
            raise ValueError("constructor refused")
        self.value = start
        self.started: list[Any] = []
        self.running = 0
        self.most_running = 0
        self.ready = False

    async def on_start(self) -> None:
        self.ready = True

    async def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    async def get(self) -> int:
        return self.value

    async def echo(self, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs

    async def is_ready(self) -> bool:
        return self.ready

    async def record(self, token: Any, pause: float = 0.0) -> None:
        """Note ``token`` on entry; hold the turn for ``pause`` seconds."""
        self.started.append(token)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if pause:
                await asyncio.sleep(pause)
        finally:
            self.running -= 1

    async def log(self) -> list[Any]:
        return list(self.started)

    async def peak(self) -> int:
        return self.most_running

    async def fail(self, message: str) -> None:
        raise KeyError(message)

    async def pid(self) -> int:
        return os.getpid()

    async def mark_then_sleep(self, path: str, token: str, seconds: float) -> str:
        """Append ``token`` to ``path`` (one line per run), then sleep."""
        with open(path, "a") as f:  # noqa: ASYNC230 - one tiny local append
            f.write(token + "\n")
        await asyncio.sleep(seconds)
        return token

    async def mark_then_hold(self, path: str, token: str, gate: str) -> str:
        """Append ``token`` to ``path``, then wait until the file ``gate`` exists (60 s at most)."""
        with open(path, "a") as f:  # noqa: ASYNC230 - one tiny local append
            f.write(token + "\n")
        async with asyncio.timeout(60):
            while not os.path.exists(gate):  # another process makes the file
                await asyncio.sleep(0.01)
        return token

    async def countdown(self, n: int) -> AsyncGenerator[int, Any]:
        while n > 0:
            yield n
            n -= 1

    async def accumulate(self, start: int) -> AsyncGenerator[Any, Any]:
        """The body of the routines' parity generator (``routines._accumulate``)."""
        total = start
        while True:
            try:
                sent = yield total
            except ValueError as exc:
                total = -1
                yield f"recovered from {exc}"
                continue
            if sent == "stop":
                return
            total += sent if isinstance(sent, int) else 1

    async def echo_sent(self) -> AsyncGenerator[Any, Any]:
        """Yield what is sent in; catch ValueError thrown in and yield its message."""
        received: Any = "start"
        try:
            while True:
                try:
                    received = yield received
                except ValueError as error:
                    received = f"caught {error}"
        finally:
            self.started.append("echo closed")

    async def self_call(self, me: distaff.ActorHandle[Any], depth: int) -> int:
        """Call this very actor through its handle ``depth`` times, nested."""
        if depth == 0:
            return self.value
        return await me.self_call(me, depth - 1) + 1

    async def ping_pong(self, other: distaff.ActorHandle[Any], me: distaff.ActorHandle[Any]) -> str:
        """A -> B -> A: ask ``other`` to call back into this actor."""
        return await other.call_back(me)

    async def call_back(self, caller: distaff.ActorHandle[Any]) -> str:
        return f"back:{await caller.get()}"

    async def through_routine(self, me: distaff.ActorHandle[Any]) -> int:
        """A -> routine -> A: the chain travels with the routine call."""
        return int(await read_through(me)) + 1


@distaff.actor(concurrency=None)
class ConcurrentCounter(Counter):
    """A Counter whose methods interleave freely (local-object semantics)."""


@distaff.actor(concurrency=2)
class PairCounter(Counter):
    """A Counter that runs two turns at once."""


@distaff.routine
async def live_actors() -> int:
    """How many actors live on the worker this runs on."""
    return len(registry())


@distaff.routine
async def add_through(handle: distaff.ActorHandle[Any], n: int) -> tuple[int, int]:
    """From a routine on some worker: call the actor; return (its value, this pid)."""
    return await handle.add(n), os.getpid()


@distaff.routine
async def find_and_get(name: str) -> int:
    """Find a named actor from a worker and read it."""
    handle = await distaff.get_actor(name)
    return int(await handle.get())


def read_lines(path: str) -> list[str]:
    """The lines of ``path`` (empty if it does not exist)."""
    p = pathlib.Path(path)
    return p.read_text().splitlines() if p.exists() else []


@distaff.routine
async def issue_from_worker(handle: distaff.ActorHandle[Any], n: int) -> list[Any]:
    """From a routine on a worker (a freshly restored pool): n concurrent calls, then the log."""
    await asyncio.gather(*(handle.record(i) for i in range(n)))
    log: list[Any] = await handle.log()
    return log


@distaff.routine
async def spawn_nested(start: int) -> distaff.ActorHandle[Any]:
    """Spawn a Counter from a routine on a worker (through that worker's pool copy)."""
    handle: distaff.ActorHandle[Any] = await Counter.spawn(start)
    return handle


@distaff.routine
async def read_through(handle: distaff.ActorHandle[Any]) -> int:
    """A plain routine in the middle of a chain: call the actor back."""
    return int(await handle.get())


@dataclasses.dataclass(frozen=True)
class DropBlindSubscriber:
    """Follows ``inner`` but never reports a worker leaving: a slow discovery
    (a DNS record that outlives its worker), which real local discovery is
    too quick to be."""

    inner: Any

    def __aiter__(self) -> AsyncIterator[distaff.DiscoveryEvent]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[distaff.DiscoveryEvent]:
        events = aiter(self.inner)
        try:
            async for event in events:
                if event.type is not distaff.DiscoveryEventType.WORKER_DROPPED:
                    yield event
        finally:
            await events.aclose()


@dataclasses.dataclass(frozen=True)
class DropBlindDiscovery:
    """A real local discovery whose subscribers never see a worker leave."""

    inner: distaff.LocalDiscovery

    def publisher(self) -> Any:
        return self.inner.publisher()

    def subscriber(self) -> DropBlindSubscriber:
        return DropBlindSubscriber(self.inner.subscriber())

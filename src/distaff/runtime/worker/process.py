"""WorkerProcess: a worker in a child process, started and stopped by its parent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
import struct
import sys
from typing import Any

import cloudpickle

from ..._exceptions import WorkerStartError
from ...serialization.metadata import WorkerMetadata, decode_metadata
from .._malloc import worker_environment
from .server import WorkerConfig
from .template import ChildSignaller, ForkedChild, WorkerTemplate

# when the whole pool stops: our word on a child's stdin, its answer on its
# readiness descriptor once it has drained (see ``Worker.leave_together``)
LEAVE = b"L"
DRAINED = b"D"


class _Spawned:
    """A worker started as a fresh interpreter: our child, its stdin our pipe."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self._signaller = ChildSignaller(process.pid)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)

    def tell(self, word: bytes) -> bool:
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            return False
        stdin.write(word)
        return True

    def close_lifeline(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()

    def send_signal(self, sig: int) -> None:
        if self.process.returncode is None:
            self._signaller.send(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int | None:
        returncode = await self.process.wait()
        self._signaller.close()
        return returncode


class _Forked:
    """A worker forked by the pool's template; its stdin is a pipe we hold."""

    def __init__(self, child: ForkedChild) -> None:
        self.child = child
        self.pid = child.pid

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    async def send(self, data: bytes) -> None:
        lifeline = self.child.lifeline
        if lifeline is not None:  # a blocking write in a thread: the child reads it at once
            # a child that died first fails the write; its readiness pipe says why
            with contextlib.suppress(OSError):
                await asyncio.to_thread(lifeline.write, data)

    def tell(self, word: bytes) -> bool:
        lifeline = self.child.lifeline
        if lifeline is None:
            return False
        try:  # a few bytes into an empty pipe: never blocks
            lifeline.write(word)
        except OSError:  # it exited
            return False
        return True

    def close_lifeline(self) -> None:
        self.child.close_lifeline()

    def send_signal(self, sig: int) -> None:
        self.child.send_signal(sig)

    def kill(self) -> None:
        self.child.kill()

    async def wait(self) -> int | None:
        return await self.child.wait()


class WorkerProcess:
    """One spawned worker process; its owner must ``stop()`` it.

    The child is a fresh interpreter, or, given a running ``template``, a fork
    of that warm template process (no fork of this process: it runs gRPC). It
    gets ``sys_path`` (default: the parent's ``sys.path`` when ``start`` is
    called) and the pickled config, serves, and exits when stopped or when its
    parent goes away (its stdin, a pipe this process holds, closes).
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        sys_path: list[str] | None = None,
        template: WorkerTemplate | None = None,
    ) -> None:
        self.config = config
        self.sys_path = sys_path
        self.template = template
        self._process: _Spawned | _Forked | None = None
        self._reports: _Reports | None = None  # the child's readiness descriptor, kept open
        self.metadata: WorkerMetadata | None = None

    @property
    def pid(self) -> int | None:
        """The child's PID once started."""
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """True from the spawn until the child has exited."""
        return self._process is not None and self._process.returncode is None

    async def wait(self) -> int | None:
        """Wait until the child exits; return its status (None: never spawned, or unknown)."""
        if self._process is None:
            return None
        status = await self._process.wait()
        self._close_reports()  # it exited: nothing more will come
        return status

    async def start(self, timeout: float = 60.0) -> WorkerMetadata:
        """Spawn the worker and wait until it serves; return its metadata.

        Raises:
            WorkerStartError: the child failed or did not report in time; the
                child's own error text is in the message.
        """
        read_fd, write_fd = os.pipe()
        try:
            if self.template is not None and self.template.running:
                self._process = await self._fork(self.template, write_fd)
            else:
                self._process = await self._spawn(write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            report = await self._handshake(read_fd, timeout)
        except BaseException:
            await self.kill()  # cancelled or failed: no half-started child stays
            raise
        if report[:2] != b"OK":
            await self.kill()
            detail = report[2:].decode(errors="replace") or "exited before reporting"
            raise WorkerStartError(f"worker failed to start:\n{detail}")
        self.metadata = decode_metadata(report[2:])
        return self.metadata

    async def _spawn(self, ready_fd: int) -> _Spawned:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "distaff.runtime.worker._main",
            str(ready_fd),
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(ready_fd,),
            env=worker_process_environment(),
        )
        return _Spawned(process)

    async def _fork(self, template: WorkerTemplate, ready_fd: int) -> _Forked:
        lifeline, ours = os.pipe()
        writer = os.fdopen(ours, "wb", buffering=0)
        try:
            child = await template.fork(lifeline, ready_fd, writer)
        except BaseException:
            writer.close()
            raise
        finally:
            os.close(lifeline)
        return _Forked(child)

    async def _handshake(self, read_fd: int, timeout: float) -> bytes:
        assert self._process is not None
        payload = cloudpickle.dumps(self.config, protocol=pickle.HIGHEST_PROTOCOL)
        sys_path = sys.path if self.sys_path is None else self.sys_path
        header = json.dumps({"sys_path": sys_path}).encode() + b"\n"
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self._process.send(header + struct.pack("!Q", len(payload)) + payload)
                except BaseException:
                    os.close(read_fd)
                    raise
                report, self._reports = await _read_report(read_fd)
                return report
        except TimeoutError:
            raise WorkerStartError(f"worker did not report ready within {timeout} s") from None

    def leave_together(self) -> bool:
        """Ask the child to stop with its whole pool (see ``Worker.leave_together``).

        Returns False if it cannot (it is not running, or reports nothing):
        ``stop()`` stops it alone.
        """
        process = self._process
        if process is None or process.returncode is not None or self._reports is None:
            return False
        return process.tell(LEAVE)

    async def drained(self) -> None:
        """Wait until the child, asked to ``leave_together``, has drained (or exited)."""
        reports = self._reports
        if reports is not None:
            await reports.next()

    def go(self) -> None:
        """Tell a drained child to exit now (the end of its stdin)."""
        if self._process is not None:
            self._process.close_lifeline()

    async def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM, wait for the drain (``grace`` plus a margin), then SIGKILL."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            process.close_lifeline()
            process.send_signal(signal.SIGTERM)
            limit = (self.config.grace if grace is None else grace) + 5.0
            try:
                async with asyncio.timeout(limit):
                    await process.wait()
            except TimeoutError:
                process.kill()
        status = await process.wait()
        self._close_reports()
        return status

    def _close_reports(self) -> None:
        reports, self._reports = self._reports, None
        if reports is not None:
            reports.close()

    async def kill(self) -> None:
        """SIGKILL the child (if running) and reap it."""
        process = self._process
        if process is not None:
            if process.returncode is None:
                process.kill()
            await process.wait()
        self._close_reports()


def worker_process_environment() -> dict[str, str]:
    """The environment a worker process starts with (the caller's, tuned)."""
    env = dict(os.environ)
    # workers see peers come and go routinely: keep gRPC's INFO chatter out
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    worker_environment(env)
    return env


class _Reports:
    """The child's readiness descriptor, kept open after ``OK`` for its later reports."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
        self._reader = reader
        self._transport = transport

    async def next(self) -> bytes:
        """The next report byte; empty once the child has exited (and then closed)."""
        data = await self._reader.read(1)
        if not data:
            self.close()
        return bytes(data)

    def close(self) -> None:
        self._transport.close()


async def _read_report(fd: int) -> tuple[bytes, _Reports | None]:
    """``OK`` + metadata, with the descriptor kept open; or ``ER`` + why, read to the end."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        kind = await reader.readexactly(2)
        if kind == b"OK":
            (size,) = struct.unpack("!I", await reader.readexactly(4))
            report = kind + await reader.readexactly(size)
            return report, _Reports(reader, transport)
        rest: Any = await reader.read()
        report = kind + bytes(rest)
    except asyncio.IncompleteReadError as exc:  # it exited before reporting
        report = bytes(exc.partial)
    except BaseException:
        transport.close()
        raise
    transport.close()
    return report, None

"""WorkerTemplate: a warm process that forks a pool's workers on request.

Starting a worker as a fresh interpreter costs its imports every time (about
0.3 s of CPU); forking it from a template that has already imported them,
and started no thread and no gRPC, costs a few milliseconds. The children are
the template's, not ours: we signal them through pidfds, the template reports
their exit, and each keeps the lifeline (its stdin) to us. Linux only
(``available()``); elsewhere workers start as fresh interpreters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import struct
import sys
from typing import IO

from ..._exceptions import WorkerStartError

# the template's wire (see ``_template``): its records, and our requests
MESSAGE = struct.Struct("!cqq")
REQUEST = struct.Struct("!q")


def available() -> bool:
    """True where workers can be forked from a template (Linux: fork, pidfds, SCM_RIGHTS)."""
    return sys.platform == "linux" and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


class ChildSignaller:
    """Signals one child of ours through a pidfd: never by a pid that may be reused, never polling.

    Not ``Popen.send_signal``/``kill``: they poll (``waitpid``) before they
    signal, and so reap a child that has just exited before asyncio's child
    watcher does; the watcher's own ``waitpid`` then fails, logs "exit
    status already read" and reports 255 instead of the real status (seen on
    3.12 as a pool's workers left together). A pidfd names this child alone,
    exited or not, whoever reaps it. Without pidfds (an old kernel, not
    Linux) it signals by pid; ``close`` once the child's exit is known.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd: int | None = None
        self._gone = False  # gone before we could name it: never signal its pid
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # its exit is on its way to whoever reaps it
                self._gone = True
            except OSError:  # no pidfds here: signal by pid
                pass

    def send(self, sig: int) -> None:
        """Signal the child, unless it is known to be gone."""
        if self._gone:
            return
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)

    def close(self) -> None:
        """The child's exit is known: release the pidfd and signal nothing more."""
        self._gone = True
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)


class ForkedChild:
    """A worker forked by the template: signalled through a pidfd, reaped by the template."""

    def __init__(self, pid: int, lifeline: IO[bytes]) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.lifeline: IO[bytes] | None = lifeline  # closing it tells the child to stop
        self._exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._signaller = ChildSignaller(pid)

    def close_lifeline(self) -> None:
        """Close our end of the child's stdin; it stops when it sees the end."""
        lifeline, self.lifeline = self.lifeline, None
        if lifeline is not None:
            with contextlib.suppress(OSError):
                lifeline.close()

    def send_signal(self, sig: int) -> None:
        """Signal the child, unless it has exited."""
        if self.returncode is None:
            self._signaller.send(sig)

    def kill(self) -> None:
        """SIGKILL the child, unless it has exited."""
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int | None:
        """Wait for the child's exit; its return code (None: unknown, the template died)."""
        return await asyncio.shield(self._exited)

    def exited(self, returncode: int | None) -> None:
        """Record the child's exit (the template reaped it, or the template is gone)."""
        if self._exited.done():
            return
        self.returncode = returncode
        self.close_lifeline()
        self._signaller.close()
        self._exited.set_result(returncode)


class WorkerTemplate:
    """One pool's template process; ``aclose`` ends it (its children stay ours to stop)."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._signaller: ChildSignaller | None = None
        self._control: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedChild] = {}
        self._early: dict[int, int] = {}  # exits reported before their child was registered
        self._ready: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        """True while the template can fork."""
        return self._reader is not None and not self._reader.done()

    async def start(self, sys_path: list[str], env: dict[str, str], timeout: float = 60.0) -> None:
        """Start the template and wait until it has imported everything.

        Raises:
            WorkerStartError: it failed or did not report in time.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "distaff.runtime.worker._template",
                str(theirs.fileno()),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._signaller = ChildSignaller(self._process.pid)
        ours.setblocking(False)
        self._control = ours
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"sys_path": sys_path}).encode() + b"\n")
        self._process.stdin.close()
        self._ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, TimeoutError | ConnectionError):
                raise WorkerStartError(f"the worker template did not start: {exc!r}") from None
            raise

    async def fork(self, lifeline: int, ready: int, lifeline_writer: IO[bytes]) -> ForkedChild:
        """Fork a worker whose stdin is ``lifeline`` and whose readiness pipe is ``ready``.

        Raises:
            WorkerStartError: the template is gone or could not fork.
        """
        if not self.running or self._control is None:
            raise WorkerStartError("the worker template is not running")
        request = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._pending[request] = answer
        try:
            socket.send_fds(self._control, [REQUEST.pack(request)], [lifeline, ready])
            pid = await answer
        except OSError as exc:
            raise WorkerStartError(f"the worker template could not fork: {exc}") from None
        finally:
            self._pending.pop(request, None)
        child = ForkedChild(pid, lifeline_writer)
        self._children[pid] = child
        if pid in self._early:
            self._exit(pid, self._early.pop(pid))
        return child

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._control is not None
        buffer = b""
        try:
            while data := await loop.sock_recv(self._control, 4096):
                buffer += data
                while len(buffer) >= MESSAGE.size:
                    self._on(*MESSAGE.unpack_from(buffer))
                    buffer = buffer[MESSAGE.size :]
        except OSError:
            pass
        finally:
            self._lost()

    def _on(self, kind: bytes, a: int, b: int) -> None:
        if kind == b"R" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif kind == b"P" and a in self._pending and not self._pending[a].done():
            self._pending[a].set_result(b)
        elif kind == b"F" and a in self._pending and not self._pending[a].done():
            self._pending[a].set_exception(OSError(b, os.strerror(b)))
        elif kind == b"X":
            if a in self._children:
                self._exit(a, b)
            else:
                self._early[a] = b

    def _exit(self, pid: int, returncode: int | None) -> None:
        child = self._children.pop(pid, None)
        if child is not None:
            child.exited(returncode)

    def _lost(self) -> None:
        """The template is gone: nothing more will be reported, so its children go too."""
        gone = ConnectionError("the worker template exited")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(gone)
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(gone)
        for pid in list(self._children):
            self._children[pid].kill()
            self._exit(pid, None)

    async def aclose(self) -> None:
        """End the template (its running children are not touched); idempotent."""
        control, self._control = self._control, None
        if control is not None:
            control.shutdown(socket.SHUT_WR)  # the template sees end-of-file and exits
        process = self._process
        if process is not None:
            try:
                async with asyncio.timeout(5.0):
                    await process.wait()
            except TimeoutError:
                if process.returncode is None and self._signaller is not None:
                    self._signaller.send(signal.SIGKILL)
                await process.wait()
            if self._signaller is not None:
                self._signaller.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if control is not None:
            control.close()

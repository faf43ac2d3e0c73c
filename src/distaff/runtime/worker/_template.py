"""Entry point of a pool's worker template (``python -m ...worker._template FD``).

The template imports what a worker needs (distaff, grpc, cloudpickle) and then
only forks: it starts no thread and no gRPC, so each child begins from a clean,
warm interpreter. The parent writes ``sys.path`` as one JSON line on our stdin,
and then speaks over the Unix socket ``FD``:

- parent to template: an 8-byte request id with two descriptors attached
  (``SCM_RIGHTS``): the child's lifeline (read end, becomes its stdin) and its
  readiness pipe (write end). The child then runs as ``_main`` does.
- template to parent: ``MESSAGE`` records: ``R`` ready; ``P`` request id, child
  pid; ``F`` request id, errno (fork failed); ``X`` pid, return code (negative:
  killed by that signal), once the child is reaped.

End-of-file on the socket (the parent is gone) ends the template; its children
live on until their own lifelines close.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback

from .._malloc import trim_heap
from .template import MESSAGE, REQUEST


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _wake_only(signum: int, frame: object) -> None:
    """SIGCHLD's handler: none needed, the wakeup pipe has woken ``serve`` already."""


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass


class _Template:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.wakeup = -1  # read end of the pipe SIGCHLD writes to
        self._wakeup_w = -1

    def send(self, kind: bytes, a: int, b: int) -> None:
        self.control.sendall(MESSAGE.pack(kind, a, b))

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            try:
                self.send(b"X", pid, _returncode(status))
            except OSError:
                return

    def serve(self) -> None:
        # SIGCHLD only wakes this loop, through a pipe the interpreter writes
        # to the instant the signal arrives; the reaping happens here. A
        # Python handler that reaped would run only between bytecodes, so a
        # child that exited just before the blocking receive below stayed
        # unreaped (and its exit unreported) until the next fork request:
        # seen when a pool's workers all exit at once.
        self.wakeup, self._wakeup_w = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(self._wakeup_w, False)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _wake_only)
        self.send(b"R", 0, 0)
        control = self.control.fileno()
        while True:
            self.reap()
            readable, _, _ = select.select([control, self.wakeup], [], [])
            if self.wakeup in readable:
                _drain(self.wakeup)
            if control not in readable:
                continue
            try:
                data, fds, _, _ = socket.recv_fds(self.control, REQUEST.size, 2)
            except ConnectionError:
                return
            if not data:
                return
            if len(data) != REQUEST.size or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            (request,) = REQUEST.unpack(data)
            self.fork(request, *fds)

    def fork(self, request: int, lifeline: int, ready: int) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(lifeline)
            os.close(ready)
            self.send(b"F", request, exc.errno or 0)
            return
        if pid == 0:
            signal.set_wakeup_fd(-1)
            os.close(self.wakeup)
            os.close(self._wakeup_w)
            _child(self.control, lifeline, ready)
        os.close(lifeline)
        os.close(ready)
        self.send(b"P", request, pid)


def _child(control: socket.socket, lifeline: int, ready: int) -> None:
    """Become a worker; never returns."""
    code = 1
    try:
        control.close()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.dup2(lifeline, 0)
        os.close(lifeline)
        from ._main import run

        code = run(ready)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    sys.path[:] = json.loads(sys.stdin.buffer.readline())["sys_path"]
    # what every worker imports, once, before any thread or gRPC exists here
    import cloudpickle  # noqa: F401
    import grpc  # noqa: F401

    from . import _main, server  # noqa: F401

    with contextlib.suppress(ImportError):  # the loop workers run on, when installed
        import uvloop  # noqa: F401

    # what the imports left behind goes back before the forks copy it, and the
    # survivors are frozen so that no child's collector touches (copies) them
    gc.collect()
    gc.freeze()
    trim_heap()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the workers and the caller
    _Template(control).serve()
    # nothing left to clean up: skip tearing down every module imported above
    # (tens of ms that the pool's exit would wait for)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

"""Sessions with a worker on this host over its Unix socket instead of gRPC.

A worker spawned by a pool also listens on a Unix socket in the abstract
namespace (Linux), named in its metadata as the ``ipc`` option
(``@distaff-<uid>``). A caller on the same host carries its session there:
the same envelopes and state machine as over gRPC, framed by
:mod:`distaff.serialization.frames`, without HTTP/2 and gRPC's core in the
way (see docs/architecture.md, "The wire on one host").

The caller talks to the socket only if the process at the other end is the
worker the metadata names (its pid, by ``SO_PEERCRED``) and runs as the same
user; otherwise, or if it cannot connect (another network namespace, another
host of the same name), the session goes over gRPC as usual, and so do the
connection's later sessions. The worker, in turn, serves only its own user.
Unary RPCs (Stop, Describe, health) always use gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable

from .._proc import process_state
from ..serialization.frames import FramedStream
from ..serialization.metadata import WorkerMetadata
from ..serialization.wire import Message
from .transport import Transport

log = logging.getLogger(__name__)

IPC_OPTION = "ipc"
NAME_PREFIX = "@distaff-"
_ENV = "DISTAFF_IPC"
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_HOST = socket.gethostname()
# how often an open session looks whether its worker process is stopped
FROZEN_CHECK = 4.0
_STOPPED = (b"T", b"t")


def ipc_enabled() -> bool:
    """False when ``DISTAFF_IPC=0``: every session goes over gRPC."""
    return sys.platform == "linux" and os.environ.get(_ENV, "1") != "0"


def socket_address(name: str) -> str:
    """The address to bind or dial for a published name (``@`` is the abstract namespace)."""
    return "\0" + name[1:] if name.startswith("@") else name


def ipc_name(metadata: WorkerMetadata) -> str | None:
    """The worker's socket if this caller may use it: same host, plaintext, enabled.

    Only a worker's own kind of name (``@distaff-...``, abstract) is taken:
    discovery is a hint, and must not point a caller at another local socket.
    """
    if metadata.secure or metadata.host != _HOST or not ipc_enabled():
        return None
    for key, value in metadata.options:
        if key == IPC_OPTION and value.startswith(NAME_PREFIX) and "\0" not in value:
            return value
    return None


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """``(pid, uid)`` of the process at the other end of a Unix socket."""
    pid, uid, _ = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return pid, uid


class UnixTransport:
    """A session on a worker's Unix socket, or over gRPC if that is not possible.

    Args:
        name: the worker's published socket name.
        pid: the worker's pid, as published: the peer must be that process.
        target: the worker's address, named in errors.
        fallback: makes a gRPC transport to the same worker.
        fell_back: called once if the socket could not be used.
    """

    __slots__ = ("_connecting", "_fallback", "_fell_back", "_name", "_pid", "_via", "target")

    def __init__(
        self,
        name: str,
        pid: int,
        target: str,
        fallback: Callable[[], Transport],
        fell_back: Callable[[], None],
    ) -> None:
        self.target = target
        self._name = name
        self._pid = pid
        self._fallback = fallback
        self._fell_back = fell_back
        self._via: FramedStream | Transport | None = None
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> FramedStream | Transport:
        loop = asyncio.get_running_loop()
        why = ""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # connected here, not by create_unix_connection: uvloop's takes no
            # abstract name
            await loop.sock_connect(sock, socket_address(self._name))
            pid, uid = peer_credentials(sock)
            if pid == self._pid and uid == os.getuid():
                _, stream = await loop.create_unix_connection(
                    lambda: FramedStream(self.target), sock=sock
                )
                self._watch(stream, stream.received, 0)
                return stream
            why = f"its peer is pid {pid} of uid {uid}, not the worker's pid {self._pid}"
        except OSError as exc:
            why = str(exc) or type(exc).__name__
        except BaseException:
            sock.close()
            raise
        sock.close()
        log.debug("%s: Unix socket %s not usable (%s): using gRPC", self.target, self._name, why)
        self._fell_back()
        return self._fallback()

    def _watch(self, stream: FramedStream, seen: int, stopped: int) -> None:
        """Every ``FROZEN_CHECK`` s: cut the session if the worker stays stopped.

        What gRPC's keepalive does over the network, told here by the worker
        process's state: one that is stopped (SIGSTOP, a debugger) and sent
        nothing for two looks in a row is taken for gone (its calls end with
        ``WorkerLostError``). A worker whose loop is busy is running, not
        stopped: its calls wait, as over gRPC.
        """
        if stream.transport is None or stream.transport.is_closing():
            return
        if stream.received != seen:
            stopped = 0
        elif process_state(self._pid)[0] in _STOPPED:
            stopped += 1
            if stopped >= 2:
                stream.abort(f"the worker (pid {self._pid}) is stopped and silent")
                return
        else:
            stopped = 0
        asyncio.get_running_loop().call_later(
            FROZEN_CHECK, self._watch, stream, stream.received, stopped
        )

    async def _ready(self) -> FramedStream | Transport:
        via = self._via
        if via is None:
            via = self._via = await asyncio.shield(self._connecting)
        return via

    async def read(self) -> Message | None:
        """The next envelope, or None once the worker ended the session."""
        return await (await self._ready()).read()

    async def write(self, envelope: Message) -> None:
        """Send one envelope."""
        await (await self._ready()).write(envelope)

    async def done_writing(self) -> None:
        """Half-close: the worker ends the session once its calls have answered."""
        via = await self._ready()
        if isinstance(via, FramedStream):
            via.end()
        else:
            await via.done_writing()

    def close(self) -> None:
        """Abandon the session (the worker cancels what it runs for it)."""
        via = self._via
        if via is None:
            if not self._connecting.done():
                self._connecting.cancel()
                return
            if self._connecting.cancelled() or self._connecting.exception() is not None:
                return
            via = self._via = self._connecting.result()
        if isinstance(via, FramedStream):
            via.abort()
        else:
            via.close()

"""The worker's Unix socket: the same sessions as its gRPC ``Session``, on one host.

Bound in the abstract namespace (Linux) as ``@distaff-<uid>`` and published
as the ``ipc`` option of the worker's metadata; a caller on the same host
uses it (``distaff.proxy.ipc``). Only processes of the worker's own user are
served (``SO_PEERCRED``); a loopback gRPC port, by contrast, takes anyone on
the host. Each connection is one session, served by the same
:class:`WorkerService` as a gRPC stream: a caller's ``END`` frame is its
half-close, a connection cut without one is a caller gone (its calls are
cancelled, as gRPC cancels the RPC), and the session ends with ``END`` (OK)
or ``STATUS`` (the protocol broke).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from ..._exceptions import RpcError, StatusCode
from ...proxy.ipc import NAME_PREFIX, peer_credentials, socket_address
from ...serialization import session as s
from ...serialization.frames import FramedStream
from .service import WorkerService

log = logging.getLogger(__name__)


class _Connection(FramedStream):
    """One caller's connection: its session runs as a task of the server."""

    def __init__(self, server: IpcServer) -> None:
        super().__init__("a caller on this host")
        self._server = server
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        try:
            pid, uid = peer_credentials(transport.get_extra_info("socket"))
        except OSError:
            pid, uid = 0, -1
        if uid != os.getuid():
            log.warning("refused a Unix socket connection from pid %d of uid %d", pid, uid)
            self.abort("another user")
            return
        self.peer = f"pid {pid} on this host"
        self.task = self._server.serve(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._cut()

    def eof_received(self) -> bool:
        keep = super().eof_received()
        self._cut()
        return keep

    def _cut(self) -> None:
        # the caller went away without its half-close: stop what it asked for
        if not self.peer_ended and self.task is not None:
            self.task.cancel()


class IpcServer:
    """Serves sessions on the worker's Unix socket.

    Args:
        service: the worker's service (the one its gRPC server uses).
        uid: the worker's uid, which names the socket.
    """

    def __init__(self, service: WorkerService, uid: str) -> None:
        self.name = f"{NAME_PREFIX}{uid}"
        self._service = service
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per open session

    async def start(self) -> None:
        """Bind and listen."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(socket_address(self.name))  # bound here: uvloop's would not take it
        except OSError:
            sock.close()
            raise
        self._server = await loop.create_unix_server(
            lambda: _Connection(self), sock=sock, backlog=1024
        )

    def serve(self, connection: _Connection) -> asyncio.Task[None]:
        """Run one connection's session as a task."""
        task = asyncio.get_running_loop().create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, connection: _Connection) -> None:
        try:
            await self._service.serve(connection)
        except s.ProtocolError as exc:
            connection.fail(StatusCode.FAILED_PRECONDITION, str(exc))
        except RpcError as exc:  # the caller's frames broke, or the connection did
            connection.fail(exc.code, exc.details)
        except asyncio.CancelledError:  # the caller went away, or the worker stops
            connection.abort()
        except Exception as exc:  # a bug: the caller must not wait for an answer
            log.exception("a session on the Unix socket failed")
            connection.fail(StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        else:
            connection.end()
            connection.close()

    async def stop(self) -> None:
        """Stop listening; cut the sessions still open (after ``finish``, none).

        A cancelled session's task aborts its connection itself (``_serve``).
        """
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

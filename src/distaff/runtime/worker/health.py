"""The worker's standard gRPC health service (``grpc.health.v1``).

NOT_SERVING until the worker is ready, SERVING while it takes calls, and
NOT_SERVING again from the first moment of a drain: a caller watching it, or
a Kubernetes ``grpc:`` probe, learns of a drain before any DNS change. The
overall status (service ``""``) and ``distaff.v1.Worker`` move together; any
other service name answers NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch).

A drain is final, so a Watch stream sends NOT_SERVING and then ends: the
server's stop finds no stream still open.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ...serialization.rpc import SERVICE

SERVICES = frozenset({"", SERVICE})
_Response = health_pb2.HealthCheckResponse


class _HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.serving = False
        self.drained = False
        self._changed = asyncio.Event()

    def status(self, service: str) -> Any:
        if service not in SERVICES:
            return _Response.SERVICE_UNKNOWN
        return _Response.SERVING if self.serving else _Response.NOT_SERVING

    def set(self, serving: bool) -> None:
        self.drained = self.drained or (self.serving and not serving)
        self.serving = serving
        self._changed.set()
        self._changed = asyncio.Event()

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        status = self.status(request.service)
        if status == _Response.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return _Response(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        last = None
        while True:
            # read the state once, before the write: a drain that lands while
            # the write is awaited must still be written, not just end the stream
            changed = self._changed
            status = self.status(request.service)
            final = self.drained
            if status != last:
                await context.write(_Response(status=status))
                last = status
            if final:
                return
            await changed.wait()


class WorkerHealth:
    """One health servicer, registered on the worker's server and on a probe server."""

    def __init__(self) -> None:
        self._servicer = _HealthServicer()

    @property
    def serving(self) -> bool:
        """True between ready and the start of a drain."""
        return self._servicer.serving

    def register(self, server: grpc.aio.Server) -> None:
        """Serve health on ``server``."""
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the worker (NOT_SERVING after SERVING is final)."""
        self._servicer.set(serving)

    async def open_probe_server(self, host: str, port: int) -> grpc.aio.Server:
        """Start a plaintext server on ``host:port`` that serves health and nothing else.

        Raises:
            OSError: the address could not be bound.
        """
        server = grpc.aio.server()
        self.register(server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not server.add_insecure_port(address):
            raise OSError(f"could not bind the health port {address}")
        await server.start()
        return server

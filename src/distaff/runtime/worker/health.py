"""The worker's standard gRPC health service (``grpc.health.v1``).

NOT_SERVING until the worker is ready, SERVING while it takes calls, and
NOT_SERVING again from the first moment of a drain: a caller watching it, or
a Kubernetes ``grpc:`` probe, learns of a drain before any DNS change. The
overall status (service ``""``) and ``distaff.v1.Worker`` move together.
"""

from __future__ import annotations

from typing import Any

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ...serialization.rpc import SERVICE

SERVICES = ("", SERVICE)


class WorkerHealth:
    """One health servicer, registered on the worker's server and on a probe server."""

    def __init__(self) -> None:
        self._servicer: Any = health_aio.HealthServicer()
        self.serving = False

    def register(self, server: grpc.aio.Server) -> None:
        """Serve health on ``server``."""
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the worker."""
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in SERVICES:
            await self._servicer.set(service, status)

    async def open_probe_server(self, host: str, port: int) -> grpc.aio.Server:
        """Start a plaintext server on ``host:port`` that serves health and nothing else.

        Raises:
            OSError: the address could not be bound.
        """
        server = grpc.aio.server()
        self.register(server)
        if not server.add_insecure_port(
            f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        ):
            raise OSError(f"could not bind the health port {host}:{port}")
        await server.start()
        return server

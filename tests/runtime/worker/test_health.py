"""The worker's gRPC health service: a drain is always written before the stream ends."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distaff.runtime.worker.health import WorkerHealth, _HealthServicer
from tests.runtime.discovery.following import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REQUEST = health_pb2.HealthCheckRequest(service="distaff.v1.Worker")


class _DrainDuringWrite:
    """A stand-in for the gRPC servicer context whose first write lets the drain land.

    A real server gives this interleaving only by chance (SIGTERM arriving
    while the SERVING write is still awaited: about 1 run in 10 of a worker
    stopped with no call in flight), so the test makes it certain.
    """

    def __init__(self, servicer: _HealthServicer) -> None:
        self.servicer = servicer
        self.sent: list[Any] = []

    async def write(self, message: Any) -> None:
        self.sent.append(message.status)
        await asyncio.sleep(0)
        if len(self.sent) == 1:
            self.servicer.set(False)


async def test_a_drain_that_lands_during_a_write_is_still_written() -> None:
    servicer = _HealthServicer()
    servicer.set(True)
    context = _DrainDuringWrite(servicer)

    await asyncio.wait_for(servicer.Watch(REQUEST, context), 5)

    assert context.sent == [SERVING, NOT_SERVING]


async def test_a_watch_over_grpc_sees_serving_then_not_serving_then_its_end() -> None:
    health = WorkerHealth()
    port = free_port()
    server = await health.open_probe_server("127.0.0.1", port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(REQUEST)
            assert (await watch.read()).status == NOT_SERVING
            health.set_serving(True)
            assert (await watch.read()).status == SERVING
            health.set_serving(False)
            assert (await watch.read()).status == NOT_SERVING
            assert await watch.read() is grpc.aio.EOF
            assert await watch.code() == grpc.StatusCode.OK
    finally:
        await server.stop(0)

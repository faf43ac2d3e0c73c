"""Talking to a worker known only by its address: Describe and the health service."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ...serialization.metadata import WorkerMetadata
from ...serialization.rpc import SERVICE, call_describe

# a silently dead peer ends the health watch within about 8 s
_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 4_000),
    ("grpc.keepalive_timeout_ms", 4_000),
    ("grpc.http2.ping_timeout_ms", 4_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
_SERVING = health_pb2.HealthCheckResponse.SERVING


class Draining(Exception):
    """The worker answered Describe but is draining: do not admit it."""


class Dial:
    """One channel to one worker address, for Describe, health Check and Watch.

    Args:
        address: ``host:port`` (IPv6 in brackets).
        credentials: the proxy's ``WorkerCredentials``, or None for plaintext.
    """

    def __init__(self, address: str, credentials: Any) -> None:
        self.address = address
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
        else:
            options = _OPTIONS + tuple(credentials.channel_options())
            self._channel = grpc.aio.secure_channel(
                address, credentials.channel_credentials(), options=options
            )
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def describe(self, timeout: float) -> WorkerMetadata:
        """Ask the worker who it is; the metadata carries the address dialled.

        Raises:
            Draining: the worker is draining.
            grpc.aio.AioRpcError: unreachable, refused, or not a distaff worker.
        """
        reply = await call_describe(self._channel, timeout)
        if reply.draining:
            raise Draining(self.address)
        return WorkerMetadata(
            uid=reply.uid,
            address=self.address,
            pid=reply.pid,
            host=reply.host,
            version=reply.version,
            tags=frozenset(reply.tags),
            secure=reply.secure,
            options=tuple(sorted(reply.options.items())),
            python=reply.python,
            protocol=reply.protocol,
            cloudpickle=reply.cloudpickle,
        )

    async def serving(self, timeout: float) -> bool:
        """One health Check: True only for a SERVING answer within ``timeout``."""
        try:
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            reply = await self._health.Check(request, timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == _SERVING)

    async def watch(self, serving: asyncio.Future[None] | None = None) -> bool:
        """Return when the worker stops serving: False for NOT_SERVING (a drain),
        True when the stream broke or ended (the worker died or was replaced).

        ``serving``, if given, is resolved at the first SERVING status: from
        then on the worker holds the stream open, so a drain reaches it as
        NOT_SERVING rather than as a refused stream.
        """
        call = self._health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        try:
            async for reply in call:
                if reply.status != _SERVING:
                    return False
                if serving is not None and not serving.done():
                    serving.set_result(None)
        except grpc.aio.AioRpcError:
            return True
        finally:
            call.cancel()
        return True

    async def aclose(self) -> None:
        """Close the channel; idempotent."""
        await self._channel.close()

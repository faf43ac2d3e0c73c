"""Bearer-token authentication of callers, checked before anything is read."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ...serialization.rpc import SERVICE

_PREFIX = f"/{SERVICE}/"
_STREAMING = frozenset({f"{_PREFIX}Session"})


async def _deny_unary(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


async def _deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every Worker-service call whose ``authorization`` is not ``Bearer <token>``.

    The check runs on the call's headers, before its handler exists, so no
    request of an unauthenticated caller is ever deserialized (let alone
    unpickled). The comparison is constant-time. Other services (health)
    pass unchecked: probes carry no token.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._deny_unary = grpc.unary_unary_rpc_method_handler(_deny_unary)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(_deny_stream)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        if not method.startswith(_PREFIX) or self._authorized(handler_call_details):
            return await continuation(handler_call_details)
        return self._deny_stream if method in _STREAMING else self._deny_unary

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        ok = False
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                ok |= hmac.compare_digest(given, self._expected)
        return ok

"""The Worker service's gRPC plumbing, typed, without generated stubs.

The ``service Worker`` block of ``distaff.proto`` is the contract; these are
its method paths bound to the generated message types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ._generated.distaff_pb2 import DescribeReply as DescribeReply
from ._generated.distaff_pb2 import DescribeRequest as DescribeRequest
from .wire import StopReply, StopRequest, decode, encode

SERVICE = "distaff.v1.Worker"
SESSION = f"/{SERVICE}/Session"
STOP = f"/{SERVICE}/Stop"
DESCRIBE = f"/{SERVICE}/Describe"


def open_session(channel: grpc.aio.Channel) -> Any:
    """Open a Session stream on ``channel``; returns the grpc.aio call."""
    method = channel.stream_stream(
        SESSION,
        request_serializer=encode,
        response_deserializer=decode,
    )
    return method()


async def call_stop(channel: grpc.aio.Channel, grace: float, timeout: float | None) -> StopReply:
    """Call Stop with ``grace`` on ``channel``."""
    method = channel.unary_unary(
        STOP,
        request_serializer=StopRequest.SerializeToString,
        response_deserializer=StopReply.FromString,
    )
    reply: StopReply = await method(StopRequest(grace=grace), timeout=timeout)
    return reply


async def call_describe(channel: grpc.aio.Channel, timeout: float | None) -> DescribeReply:
    """Call Describe on ``channel``."""
    method = channel.unary_unary(
        DESCRIBE,
        request_serializer=DescribeRequest.SerializeToString,
        response_deserializer=DescribeReply.FromString,
    )
    reply: DescribeReply = await method(DescribeRequest(), timeout=timeout)
    return reply


def add_worker_service(
    server: grpc.aio.Server,
    session: Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]],
    stop: Callable[[StopRequest, grpc.aio.ServicerContext], Awaitable[StopReply]],
    describe: Callable[[DescribeRequest, grpc.aio.ServicerContext], Awaitable[DescribeReply]],
) -> None:
    """Register the handlers of the Worker service on ``server``."""
    handlers = {
        "Session": grpc.stream_stream_rpc_method_handler(
            session,
            request_deserializer=decode,
            response_serializer=encode,
        ),
        "Stop": grpc.unary_unary_rpc_method_handler(
            stop,
            request_deserializer=StopRequest.FromString,
            response_serializer=StopReply.SerializeToString,
        ),
        "Describe": grpc.unary_unary_rpc_method_handler(
            describe,
            request_deserializer=DescribeRequest.FromString,
            response_serializer=DescribeReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

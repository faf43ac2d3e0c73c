"""The caller's byte pipe to a worker: a gRPC Session stream, or anything alike.

A transport moves whole envelopes and nothing else; the session state
machine decides what they mean. ``GrpcTransport`` is the one place where a
``grpc.aio.AioRpcError`` from a call stream becomes a distaff error.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import grpc
import grpc.aio

from .._exceptions import RpcError, StatusCode, TransientRpcError
from ..serialization import rpc
from ..serialization.wire import Message

_TLS_HINT = (
    " (over TLS: check that the worker's certificate is signed by the pool's CA, "
    "is valid now and names the address dialled, and, with mutual TLS, that "
    "this caller presents a certificate from that CA)"
)


def map_rpc_error(error: grpc.aio.AioRpcError, target: str, *, secure: bool = False) -> RpcError:
    """Map a gRPC failure that happened before any call was sent.

    Transient codes become :class:`TransientRpcError`. gRPC reports a failed
    TLS handshake as a bare UNAVAILABLE ("Socket closed"); on a secure
    connection the message says what to check.
    """
    code = StatusCode.from_name(error.code().name)
    details = error.details() or ""
    if secure and code is StatusCode.UNAVAILABLE:
        details += _TLS_HINT
    cls = TransientRpcError if code.transient else RpcError
    return cls(code, details, target)


class Transport(Protocol):
    """One bidirectional stream of envelopes to a worker."""

    async def read(self) -> Message | None:
        """The next envelope (with its blobs), or None when the worker ended the stream.

        Raises:
            RpcError: the stream broke; the code says how.
        """
        ...

    async def write(self, envelope: Message) -> None:
        """Send one envelope (with its blobs). Raises RpcError if the stream broke."""
        ...

    async def done_writing(self) -> None:
        """Half-close: this side will send nothing more."""
        ...

    def close(self) -> None:
        """Abandon the stream (cancel it); idempotent, never blocks."""
        ...


class GrpcTransport:
    """A ``Session`` call on a gRPC channel."""

    __slots__ = ("_call", "_secure", "_spoke", "target")

    def __init__(self, channel: grpc.aio.Channel, target: str, *, secure: bool) -> None:
        self.target = target
        self._secure = secure
        self._spoke = False  # the worker sent something: TLS is not the problem
        self._call: Any = rpc.open_session(channel)

    def _error(self, error: grpc.aio.AioRpcError) -> RpcError:
        return map_rpc_error(error, self.target, secure=self._secure and not self._spoke)

    async def read(self) -> Message | None:
        """The next envelope (with its blobs), or None at the end of the stream."""
        try:
            envelope = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc
        if envelope is grpc.aio.EOF:
            return None
        self._spoke = True
        result: Message = envelope
        return result

    async def write(self, envelope: Message) -> None:
        """Send one envelope."""
        try:
            await self._call.write(envelope)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:  # after it ended
            raise RpcError(StatusCode.CANCELLED, str(exc), self.target) from exc

    async def done_writing(self) -> None:
        """Half-close the call."""
        try:
            await self._call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise RpcError(StatusCode.CANCELLED, str(exc), self.target) from exc

    def close(self) -> None:
        """Cancel the call."""
        self._call.cancel()

"""The exceptions distaff raises, in one place.

Hierarchy::

    DistaffError                  base of everything distaff raises itself
    ├── NoWorkersAvailable        no worker was left to try for a call
    ├── RpcError                  a worker could not be reached or talked to
    │   └── TransientRpcError     ... for a reason that may pass (retry elsewhere)
    ├── SerializationError        a value could not be pickled or unpickled
    │                             (also a TypeError)
    ├── WorkerStartError          a worker process did not come up
    ├── InsecureBindError         a non-loopback bind without TLS credentials
    └── RemoteException           stand-in for a remote exception that could
                                  not travel as itself

Every ``grpc.aio.AioRpcError`` is mapped to ``RpcError`` or
``TransientRpcError`` at one boundary (the worker connection); no gRPC
exception reaches a user.
"""

from __future__ import annotations

from typing import Any


class DistaffError(Exception):
    """Base class of the errors distaff raises itself."""


class NoWorkersAvailable(DistaffError):
    """No worker was left to try: the balancer ran out of candidates."""

    def __init__(self, message: str = "no workers available") -> None:
        super().__init__(message)


class RpcError(DistaffError):
    """A worker could not be reached, or broke the conversation.

    Attributes:
        code: the gRPC status code name (``"UNAVAILABLE"``, ...).
        details: the status details the transport gave.
        target: the worker address, when known.
    """

    def __init__(self, code: str, details: str, target: str | None = None) -> None:
        where = f" at {target}" if target else ""
        super().__init__(f"worker{where}: {code}: {details}")
        self.code = code
        self.details = details
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.details, self.target))


class TransientRpcError(RpcError):
    """An RpcError that may pass: the call never started, try another worker.

    Raised for ``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` and
    ``RESOURCE_EXHAUSTED`` (which includes a draining worker's refusal).
    """


class SerializationError(DistaffError, TypeError):
    """A value could not be pickled or unpickled; the message names which."""


class WorkerStartError(DistaffError):
    """A worker process failed to start; the cause is chained."""


class InsecureBindError(DistaffError):
    """A worker was asked to bind a non-loopback address without TLS."""


class RemoteException(DistaffError):
    """Stand-in for a remote exception that could not be sent as itself.

    Attributes:
        type_name: qualified name of the original exception class.
        message: ``str()`` of the original exception.
        remote_traceback: the traceback formatted on the worker.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.remote_traceback))

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n\nRemote traceback:\n{self.remote_traceback}"

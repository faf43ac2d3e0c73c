"""The exceptions distaff raises, in one place.

Hierarchy::

    DistaffError                  base of everything distaff raises itself
    ├── NoWorkersAvailable        no worker was left to try for a call
    ├── RpcError                  a worker could not be reached or talked to
    │   ├── TransientRpcError     ... and the call never started: retry elsewhere
    │   └── WorkerLostError       ... after the call was sent: it may have run
    ├── SerializationError        a value could not be pickled or unpickled
    │                             (also a TypeError)
    ├── WorkerStartError          a worker process did not come up
    ├── InsecureBindError         a non-loopback bind without TLS credentials
    ├── ActorDiedError            an actor is gone (worker lost, drained,
    │                             closed, constructor failed)
    └── RemoteException           stand-in for a remote exception that could
                                  not travel as itself

Whether a failed call may be sent to another worker is told by the class, not
by the status code: ``TransientRpcError`` means the worker never started it,
whatever the code; ``WorkerLostError`` (and any other ``RpcError``) means it
may have run. Every ``grpc.aio.AioRpcError`` is mapped at one boundary (the
worker connection's transport); no gRPC exception reaches a user.
"""

from __future__ import annotations

import enum
from typing import Any


class StatusCode(enum.StrEnum):
    """Why a conversation with a worker failed (the gRPC status names)."""

    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"

    @classmethod
    def from_name(cls, name: str) -> StatusCode:
        """The member named ``name``; UNKNOWN for a name distaff does not know."""
        return cls.__members__.get(name, cls.UNKNOWN)

    @property
    def transient(self) -> bool:
        """True for failures that say nothing bad about the worker (skip, don't evict)."""
        return self in _TRANSIENT


_TRANSIENT = frozenset(
    {StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.RESOURCE_EXHAUSTED}
)


class DistaffError(Exception):
    """Base class of the errors distaff raises itself."""


class NoWorkersAvailable(DistaffError):
    """No worker was left to try: the balancer ran out of candidates."""

    def __init__(self, message: str = "no workers available") -> None:
        super().__init__(message)


class RpcError(DistaffError):
    """A worker could not be reached, or broke the conversation.

    A plain ``RpcError`` does not say whether the call ran: do not send it
    again unless the routine is idempotent.

    Attributes:
        code: a :class:`StatusCode` (compares equal to its name).
        details: what happened, in words.
        target: the worker address, when known.
    """

    def __init__(self, code: str, details: str, target: str | None = None) -> None:
        where = f" at {target}" if target else ""
        super().__init__(f"worker{where}: {code}: {details}")
        self.code = StatusCode.from_name(str(code))
        self.details = details
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self.code), self.details, self.target))

    def copy(self) -> RpcError:
        """A fresh instance: one exception object must not be raised in many tasks."""
        return type(self)(self.code, self.details, self.target)


class TransientRpcError(RpcError):
    """The call never started on that worker: it is safe to try another.

    Raised when the worker could not be reached, did not answer the session
    handshake in time, was draining, refused the call (``RESOURCE_EXHAUSTED``),
    or the session broke before the call was written to it.
    """


class WorkerLostError(RpcError):
    """The connection to the worker was lost after the call was sent to it.

    The call may have run, partly or wholly; distaff never sends it again on
    its own (at most once). Retry only idempotent work.
    """


class SerializationError(DistaffError, TypeError):
    """A value could not be pickled or unpickled; the message names which."""


class WorkerStartError(DistaffError):
    """A worker process failed to start; the cause is chained."""


class InsecureBindError(DistaffError):
    """A worker was asked to bind a non-loopback address without TLS."""


class ActorDiedError(DistaffError):
    """The actor a call was addressed to is gone, for good.

    Calls on a dead actor fail at once and are never sent anywhere else.

    Attributes:
        actor: the actor's id (or name, when it has one).
        reason: one of ``"worker lost"``, ``"drained"``, ``"closed"``,
            ``"constructor failed"``.
        details: what happened, in words.
    """

    WORKER_LOST = "worker lost"
    DRAINED = "drained"
    CLOSED = "closed"
    CONSTRUCTOR_FAILED = "constructor failed"

    def __init__(self, actor: str, reason: str, details: str = "") -> None:
        tail = f": {details}" if details else ""
        super().__init__(f"actor {actor} died ({reason}){tail}")
        self.actor = actor
        self.reason = reason
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.actor, self.reason, self.details))


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

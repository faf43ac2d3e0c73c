"""WorkerConnection: the one place that knows gRPC calls.

A connection owns one channel to one worker and, on it, one long-lived
``Session`` stream that every call is multiplexed on. ``dispatch`` sends the
task and waits for the worker's ack; the returned :class:`RemoteCall` then
reads that call's frames. gRPC errors become distaff errors here and nowhere
else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from .._exceptions import RpcError, TransientRpcError
from ..serialization import rpc
from ..serialization.wire import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    Outbox,
)
from .call import RemoteCall

if TYPE_CHECKING:
    from ..runtime.task import Task

TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# Keepalive makes a silently dead peer (host gone, cable cut, process frozen)
# fail its calls within about 8 s; a killed process on a live host fails them
# at once anyway.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 4_000),
    ("grpc.keepalive_timeout_ms", 4_000),
    # recent gRPC cores time keepalive pings out by this (default 60 s)
    ("grpc.http2.ping_timeout_ms", 4_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # a new connection to a frozen peer gives up after this, not after 20 s
    ("grpc.min_reconnect_backoff_ms", 4_000),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # each side bounds what it sends; a lower limit on the receiving side would
    # otherwise break the stream that every call shares
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


_TLS_HINT = (
    " (over TLS: check that the worker's certificate is signed by the pool's CA, "
    "is valid now and names the address dialled, and, with mutual TLS, that "
    "this caller presents a certificate from that CA)"
)


def map_rpc_error(error: grpc.aio.AioRpcError, target: str, *, secure: bool = False) -> RpcError:
    """Classify a gRPC failure: transient codes may be retried elsewhere.

    gRPC reports a failed TLS handshake as a bare UNAVAILABLE ("Socket
    closed"); on a secure connection the message says what to check.
    """
    code = error.code()
    cls = TransientRpcError if code in TRANSIENT_CODES else RpcError
    details = error.details() or ""
    if secure and code == grpc.StatusCode.UNAVAILABLE:
        details += _TLS_HINT
    return cls(code.name, details, target)


def _copy(error: RpcError) -> RpcError:
    """A fresh instance: one exception object must not be raised in many tasks."""
    return type(error)(error.code, error.details, error.target)


@dataclasses.dataclass(frozen=True)
class ConnectionStatistics:
    """Counters a load-aware balancer can read."""

    in_flight: int
    completed: int
    failed: int


class _Session:
    """One multiplexed Session stream; owned by its WorkerConnection."""

    def __init__(self, connection: WorkerConnection) -> None:
        self.target = connection.target
        self._connection = connection
        self.outbox = Outbox()
        self._calls: dict[int, RemoteCall] = {}
        # resolves to None when the worker accepts, or to its refusal reason
        self._acks: dict[int, asyncio.Future[str | None]] = {}
        self._proxies: set[str] = set()
        self._broken: RpcError | None = None
        self._ready = asyncio.Event()  # the worker answered our hello (or we broke)
        hello = self.outbox.add()
        hello.hello.protocol = PROTOCOL_VERSION
        self._call = rpc.open_session(connection._channel)
        self._tasks = (
            asyncio.ensure_future(self._write_loop()),
            asyncio.ensure_future(self._read_loop()),
        )

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def release(self, call_id: int, *, failed: bool) -> None:
        if self._calls.pop(call_id, None) is not None:
            self._connection._count(failed=failed)

    async def _write_loop(self) -> None:
        # a failed write is reported by the read loop, which sees the status
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self.outbox.pump(self._call.write)

    async def _read_loop(self) -> None:
        error: RpcError
        try:
            while True:
                envelope = await self._call.read()
                if envelope is grpc.aio.EOF:
                    # calls not yet acked never started there: safe to retry
                    error = TransientRpcError(
                        "UNAVAILABLE", "the worker closed the session", self.target
                    )
                    break
                self._deliver(envelope)
        except grpc.aio.AioRpcError as exc:
            # the TLS hint only fits a failure before the worker ever answered
            connecting = self._connection.secure and not self._ready.is_set()
            error = map_rpc_error(exc, self.target, secure=connecting)
        except asyncio.CancelledError:
            error = RpcError("CANCELLED", "the connection was closed", self.target)
            self._fail_all(error)
            raise
        self._fail_all(error)

    def _deliver(self, envelope: Envelope) -> None:
        for frame in envelope.frames:
            call_id = frame.call
            kind = frame.WhichOneof("kind")
            if kind == "hello":
                self._ready.set()
                continue
            ack = self._acks.pop(call_id, None)
            if ack is not None and not ack.done():
                ack.set_result(frame.reject.reason or "refused" if kind == "reject" else None)
                if kind in ("ack", "reject"):
                    continue
            call = self._calls.get(call_id)
            if call is not None and kind != "ack":
                call._feed(frame)

    def _fail_all(self, error: RpcError) -> None:
        self._broken = error
        self._ready.set()
        self._connection._idle.set()  # nothing can run here any more
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(_copy(error))
        self._acks.clear()
        # after the ack the call may have run: report a plain RpcError, not a
        # transient one, so nobody mistakes it for safe to retry; one instance
        # per call, since each raise grows its own traceback
        details = f"connection lost mid-call: {error.details}"
        for call in list(self._calls.values()):
            call._fail(RpcError(error.code, details, self.target))

    async def start(self, task: Task, call_id: int, timeout: float | None) -> RemoteCall:
        if not self._ready.is_set():
            # nothing goes out before the worker's hello: a failure until then
            # is transient, the call cannot have run
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                raise TransientRpcError(
                    "DEADLINE_EXCEEDED", f"no hello within {timeout} s", self.target
                ) from None
        if self._broken is not None:
            raise _copy(self._broken)
        routine, arguments = task.encode()
        frame = self.outbox.add()
        frame.call = call_id
        start = frame.start
        start.task_id = task.id
        if task.caller:
            start.caller = task.caller
        start.routine = routine
        start.arguments = arguments
        if task.proxy is not None:
            proxy_id, proxy_bytes = task.proxy.serialized()
            start.proxy_id = proxy_id
            if proxy_id not in self._proxies:
                start.proxy = proxy_bytes
                self._proxies.add(proxy_id)
        if task.timeout:
            start.timeout = task.timeout
        if task.dispatch_timeout:
            start.dispatch_timeout = task.dispatch_timeout
        start.generator = task.generator
        if task.window:
            start.window = task.window
        if task.attempt:
            start.attempt = task.attempt
        call = RemoteCall(self, call_id, task.generator, task.window)
        self._calls[call_id] = call
        ack = self._acks[call_id] = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                refusal = await ack
            else:
                async with asyncio.timeout(timeout):
                    refusal = await ack
        except TimeoutError:
            self._acks.pop(call_id, None)
            call._cancel_remote()
            raise TransientRpcError(
                "DEADLINE_EXCEEDED", f"no ack within {timeout} s", self.target
            ) from None
        except RpcError:
            # the start went out on a live session: the worker may have run it
            # (a call done in its first step sends no ack), so no retry
            # elsewhere; reading the call reports the lost connection
            return call
        except BaseException:
            self._acks.pop(call_id, None)
            call._cancel_remote()
            raise
        if refusal is not None:
            self.release(call_id, failed=True)
            raise TransientRpcError(
                "RESOURCE_EXHAUSTED", f"worker refused the call: {refusal}", self.target
            )
        return call

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._call.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class WorkerConnection:
    """A pooled connection to one worker address.

    Args:
        target: the worker's ``host:port``.
        credentials: gRPC channel credentials for TLS; None for plaintext.
        options: extra gRPC channel options.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        self.target = target
        self.secure = credentials is not None
        opts = DEFAULT_CHANNEL_OPTIONS + tuple(options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self._session: _Session | None = None
        self._ids = itertools.count(1)
        self._completed = 0
        self._failed = 0
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    def _count(self, *, failed: bool) -> None:
        if failed:
            self._failed += 1
        else:
            self._completed += 1
        if self._session is None or not self._session._calls:
            self._idle.set()

    def statistics(self) -> ConnectionStatistics:
        """Return in-flight, completed and failed call counts."""
        in_flight = len(self._session._calls) if self._session else 0
        return ConnectionStatistics(in_flight, self._completed, self._failed)

    async def dispatch(self, task: Task, *, timeout: float | None = None) -> RemoteCall:
        """Send ``task`` and wait until the worker accepts it.

        Args:
            task: the call to run.
            timeout: seconds to wait for the worker's ack (None: no bound).

        Returns:
            The call's result stream.

        Raises:
            TransientRpcError: the worker is unreachable, slow to accept, or
                draining; the call did not start there.
            RpcError: any other transport failure.
        """
        if self._closed:
            raise RpcError("CANCELLED", "the connection is closed", self.target)
        session = self._session
        if session is None or session.broken:
            # replace it before awaiting anything: concurrent dispatches must
            # share the new session, not each open (and leak) their own
            old, session = session, _Session(self)
            self._session = session
            if old is not None:
                await old.aclose()
        self._idle.clear()
        try:
            return await session.start(task, next(self._ids), timeout)
        finally:
            if not session._calls:
                self._idle.set()

    async def stop_worker(self, grace: float, *, timeout: float | None = None) -> int:
        """Ask the worker to drain for ``grace`` seconds and stop; return cancelled count."""
        try:
            reply = await rpc.call_stop(self._channel, grace, timeout)
        except grpc.aio.AioRpcError as exc:
            raise map_rpc_error(exc, self.target, secure=self.secure) from exc
        return int(reply.cancelled)

    async def aclose_when_idle(self) -> None:
        """Close once no call is in flight (or the session broke); for evictions.

        In-flight calls keep their connection and finish normally; if this
        task is cancelled first, the connection is closed at once.
        """
        try:
            while not self._idle.is_set() and not (self._session and self._session.broken):
                await self._idle.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the session and the channel; in-flight calls fail. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._session is not None:
                await self._session.aclose()
        finally:
            await self._channel.close()

    def __repr__(self) -> str:
        return f"WorkerConnection({self.target!r})"

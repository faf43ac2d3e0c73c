"""WorkerConnection: one worker's channel and the session multiplexed on it.

The connection owns one channel and, on it, at most one live ``Session``
stream; a :class:`CallerSession` decides what every frame means, and the
driver here only moves envelopes and wakes waiting calls. ``dispatch`` sends
a task and returns its :class:`RemoteCall` once the worker took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from .._exceptions import RpcError, StatusCode, TransientRpcError
from ..balancers.base import ConnectionStatistics
from ..serialization import rpc
from ..serialization import session as s
from ..serialization.task import Task
from ..serialization.wire import MAX_MESSAGE_BYTES, Pump, unpack
from .call import RemoteCall
from .ipc import UnixTransport
from .transport import GrpcTransport, Transport, map_rpc_error

# Keepalive makes a silently dead peer (host gone, cable cut, process frozen)
# fail its calls within about 8 s; a killed process on a live host fails them
# at once anyway. Pings go out only while a session is open: a connection
# whose session ended for idleness (SESSION_IDLE) costs nothing at either end.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 4_000),
    ("grpc.keepalive_timeout_ms", 4_000),
    # recent gRPC cores time keepalive pings out by this (default 60 s)
    ("grpc.http2.ping_timeout_ms", 4_000),
    ("grpc.keepalive_permit_without_calls", 0),
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

TransportFactory = Callable[[], Transport]

# hand-offs in this process, in order: a connection's ``turn`` is its latest
_turns = itertools.count(1)
# a worker's load report counts for this long
REPORT_TTL = 1.0
# peak-EWMA latency decays toward new samples with this time constant (s)
_LATENCY_DECAY = 2.0
# a failed or refused attempt counts as a call this slow (s)
_FAILURE_PENALTY = 1.0
# closing an idle session: how long the worker gets to end it with OK after
# the half-close, before the stream is cancelled (a frozen worker never does)
_CLOSE_PATIENCE = 0.25
# a session with no call open for this long ends (unless its connection is
# told to keep it): the channel stays connected, the next call opens a new
# session, and meanwhile nothing pings. A new stream and its hello cost a
# few unary calls' time, so a caller that calls at least this often never
# pays it, and an idle pool goes quiet after this long.
SESSION_IDLE = 30.0
_SESSION_IDLE_ENV = "DISTAFF_SESSION_IDLE"


def session_idle_from_env() -> float | None:
    """``DISTAFF_SESSION_IDLE`` in seconds (default 30; 0 keeps idle sessions open)."""
    value = os.environ.get(_SESSION_IDLE_ENV)
    if value is None:
        return SESSION_IDLE
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"{_SESSION_IDLE_ENV} must be a number of seconds >= 0, not {value!r}")
    return seconds or None


async def _end_idle(driver: _SessionDriver) -> None:
    """End an idle session: half-close, and the worker's OK (or, after a while, cancel)."""
    # its error, if any, is the stream's, and nobody is left to tell
    with contextlib.suppress(Exception):
        await driver.aclose(_CLOSE_PATIENCE)


class _SessionDriver:
    """Runs one CallerSession over one transport; owned by its connection.

    One task (``_run``) owns the stream: in a TaskGroup it reads envelopes
    into the session and pumps the session's envelopes out. When the stream
    ends, every open call gets its final ``Lost`` event.
    """

    def __init__(self, connection: WorkerConnection, transport: Transport) -> None:
        self.target = connection.target
        self._connection = connection
        self._transport = transport
        self.session = s.CallerSession()
        self.ready = asyncio.Event()  # the hello came back, or the stream ended
        self.error: RpcError | None = None  # why the stream ended
        self._sent: list[asyncio.Future[None]] = []
        self._pump = Pump(self._take, transport.write)
        self._pump.wake()  # the hello goes first
        self.loop = asyncio.get_running_loop()
        self._runner = self.loop.create_task(self._run())

    # CallLink

    def step(self, call: int, kind: int, payload: bytes = b"", credit: int = 0) -> None:
        self.session.step(call, kind, payload, credit)
        self._pump.wake()

    def cancel(self, call: int) -> None:
        if self.session.cancel(call):
            self._connection._finished(failed=True, call=None)
            self._pump.wake()

    # the stream

    def _take(self) -> list[Any]:
        envelopes = self.session.data_to_send()
        if envelopes and self._sent:
            sent, self._sent = self._sent, []
            for future in sent:
                if not future.done():
                    future.set_result(None)
        return envelopes

    def wake(self, *, eager: bool = False) -> None:
        """Let the pump write what is queued (``eager``: now, if it is idle)."""
        self._pump.wake(eager=eager)

    async def sent(self) -> None:
        """Wait until everything queued so far went to the transport."""
        future = self.loop.create_future()
        self._sent.append(future)
        self._pump.wake()
        await future

    async def _run(self) -> None:
        error = RpcError(StatusCode.CANCELLED, "the connection was closed", self.target)
        try:
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(self._write())
                error = await self._read()
                pump.cancel()
        finally:
            self._end(error)

    async def _write(self) -> None:
        # a broken stream is reported by the read side, which sees its status
        with contextlib.suppress(RpcError):
            await self._pump.run()
            # closed because the worker drains and nothing is left to say: tell
            # it no Start can follow, so it can end the stream and lose nothing
            await self._transport.done_writing()

    def _half_close_if_drained(self) -> None:
        if self.session.draining and not self.session.calls:
            self._pump.close()

    async def _read(self) -> RpcError:
        try:
            while (message := await self._transport.read()) is not None:
                envelope, _ = unpack(message)
                if envelope.HasField("load"):
                    self._connection._reported(envelope.load)
                self._deliver(self.session.receive(message))
                if self.session.has_data():
                    self._pump.wake()
                self._half_close_if_drained()
        except RpcError as exc:
            return exc
        except s.ProtocolError as exc:
            return RpcError(StatusCode.INTERNAL, f"protocol violation: {exc}", self.target)
        return TransientRpcError(
            StatusCode.UNAVAILABLE, "the worker closed the session", self.target
        )

    def _deliver(self, events: list[s.Event]) -> None:
        connection = self._connection
        for event in events:
            kind = event.__class__
            if kind is s.Accepted or kind is s.Item or kind is s.Output:
                event.owner.feed(event)  # type: ignore[union-attr]
            elif kind is s.Ready:
                self.ready.set()
            elif kind is s.Draining:
                connection._drained = True
            else:  # a final event
                failed = kind is not s.Result and kind is not s.Done
                connection._finished(failed=failed, call=event.owner)  # type: ignore[union-attr]
                event.owner.feed(event)  # type: ignore[union-attr]

    def _end(self, error: RpcError) -> None:
        self.error = error
        self._transport.close()
        self.ready.set()
        for future in self._sent:
            if not future.done():
                future.set_result(None)
        self._deliver(list(self.session.lose()))

    async def aclose(self, patience: float = 0.0) -> None:
        """End the stream; open calls end with ``Lost``. Idempotent.

        With no call open, first half-close and give the worker ``patience``
        seconds to end the session with OK, so it never sees a cancelled
        stream; with calls open, or after that, abandon (cancel) the stream.
        """
        if patience > 0 and self.error is None and not self.session.calls:
            self._pump.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience):
                    await asyncio.shield(self._runner)
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner

    @property
    def usable(self) -> bool:
        return self.error is None and self.session.accepts_calls


class WorkerConnection:
    """A pooled connection to one worker address.

    Args:
        target: the worker's ``host:port``.
        credentials: gRPC channel credentials for TLS; None for plaintext.
        options: extra gRPC channel options.
        transport: makes the session stream (default: a gRPC ``Session``
            call on this connection's channel); tests join a caller to an
            in-process worker service with it.
        session_idle: end the session once no call was open for this many
            seconds (0: keep it open); the next call opens another. None
            (the default): ``DISTAFF_SESSION_IDLE``, else 30.
        keep_session: while this returns True, an idle session stays open
            (its worker holds state that lives as long as the session, such
            as actors spawned over it).
        ipc: the worker's Unix socket name and pid, if it is on this host
            and offers one: sessions go there (see ``ipc.py``) unless it
            cannot be used, and then over gRPC from then on.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: tuple[tuple[str, Any], ...] = (),
        transport: TransportFactory | None = None,
        session_idle: float | None = None,
        keep_session: Callable[[], bool] | None = None,
        ipc: tuple[str, int] | None = None,
    ) -> None:
        self.target = target
        self.secure = credentials is not None
        opts = DEFAULT_CHANNEL_OPTIONS + tuple(options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self._ipc = ipc
        self._transport = transport or (self._ipc_transport if ipc else self._grpc_transport)
        self._driver: _SessionDriver | None = None
        self._drained = False  # a drain is final: it outlives the session that heard it
        self._completed = 0
        self._failed = 0
        self._reserved = 0  # dispatches between the balancer's hand-off and open_call
        self.turn = 0  # when a balancer last handed this worker a call (a sequence number)
        self._latency = 0.0
        self._service_time = 0.0
        self._latency_at = 0.0
        self._report: Any = None  # the worker's last Load, and when it came
        self._report_at = 0.0
        self._report_mine = 0  # our in-flight count when it came
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._session_idle = (
            session_idle_from_env() if session_idle is None else session_idle or None
        )
        self._keep_session = keep_session
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_turn = 0  # ``turn`` when the idle timer last looked
        self._ended_at = 0.0  # when a call that is not timed (a stream) last ended
        self._ending: asyncio.Task[None] | None = None  # an idle session's end

    def _grpc_transport(self) -> Transport:
        return GrpcTransport(self._channel, self.target, secure=self.secure)

    def _ipc_transport(self) -> Transport:
        assert self._ipc is not None
        name, pid = self._ipc
        return UnixTransport(name, pid, self.target, self._grpc_transport, self._no_ipc)

    def _no_ipc(self) -> None:
        self._transport = self._grpc_transport

    @property
    def via_ipc(self) -> bool:
        """True while sessions go to the worker's Unix socket (none has failed to)."""
        return self._transport == self._ipc_transport

    @property
    def draining(self) -> bool:
        """True once the worker said it refuses new calls (it stays True: a drain is final)."""
        return self._drained

    def _finished(self, *, failed: bool, call: RemoteCall | None) -> None:
        if failed:
            self._failed += 1
        else:
            self._completed += 1
        if call is not None and call.born is not None:
            now = time.monotonic()
            self._observe(now - call.born, call.ahead, failed, now)
        else:  # a stream or a cancel: not timed, but the session's idle time counts from here
            self._ended_at = time.monotonic()
        driver = self._driver
        if driver is None or not driver.session.calls:
            self._idle.set()

    def _observe(
        self, seconds: float, ahead: int = 0, failed: bool = False, now: float = 0.0
    ) -> None:
        """Fold one completion time into the peak-weighted moving averages.

        ``ahead`` is how many of this caller's calls were on the worker when
        this one was sent: its share of the time is ``seconds / (ahead + 1)``.
        Peak-weighted: a higher sample counts at once, a lower one pulls the
        average down by ``1 - weight``, the weight decaying with the time
        since the previous sample (``_LATENCY_DECAY``).
        """
        if failed:
            seconds = max(seconds, _FAILURE_PENALTY)
        now = now or time.monotonic()
        weight = math.exp((self._latency_at - now) / _LATENCY_DECAY)
        latency = self._latency
        self._latency = seconds if seconds > latency else latency * weight + seconds * (1 - weight)
        share = seconds if failed else seconds / (ahead + 1)
        service = self._service_time
        self._service_time = share if share > service else service * weight + share * (1 - weight)
        self._latency_at = now

    def _reported(self, load: Any) -> None:
        self._report = (load.running, load.capacity)
        self._report_at = time.monotonic()
        self._report_mine = self.in_flight

    @property
    def in_flight(self) -> int:
        """This caller's calls on the worker, counted from the balancer's hand-off."""
        driver = self._driver
        return self._reserved + (len(driver.session.calls) if driver is not None else 0)

    @property
    def latency(self) -> float:
        """Peak-weighted moving average of completion time (s); 0.0 if unknown."""
        return self._latency

    @property
    def service_time(self) -> float:
        """Peak-weighted moving average of completion time per call queued (s).

        Each call's completion time divided by (this caller's calls already on
        the worker when it was sent + 1): for a worker that runs calls one at a
        time, its time per call; 0.0 if unknown. Failures count as slow.
        """
        return self._service_time

    def _fresh_report(self) -> tuple[int, int] | None:
        if self._report is None or time.monotonic() - self._report_at > REPORT_TTL:
            return None
        report: tuple[int, int] = self._report
        return report

    @property
    def load(self) -> float:
        """Calls on the worker from every caller, as best known (``inf`` when full)."""
        mine = self.in_flight
        report = self._fresh_report()
        if report is None:
            return float(mine)
        running, capacity = report
        total = mine + max(running - self._report_mine, 0)
        if capacity and total >= capacity:
            return math.inf
        return float(total)

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of in-flight, completed, failed, latency and the last report."""
        report = self._fresh_report()
        return ConnectionStatistics(
            self.in_flight,
            self._completed,
            self._failed,
            self._latency,
            report[0] if report else None,
            report[1] if report else None,
            self._service_time,
        )

    def open_calls(self) -> list[RemoteCall]:
        """The calls that have not ended yet."""
        if self._driver is None:
            return []
        return [c for c in self._driver.session.owners() if isinstance(c, RemoteCall)]

    def _live_driver(self) -> _SessionDriver:
        driver = self._driver
        if driver is None or driver.error is not None:
            # replace it before awaiting anything: concurrent dispatches must
            # share the new session, not each open (and leak) their own
            driver = self._driver = _SessionDriver(self, self._transport())
            self._watch_idle(driver)
        return driver

    # idle sessions end

    def _watch_idle(self, driver: _SessionDriver) -> None:
        """Look at the new session again once it may have been idle for ``session_idle``."""
        if self._session_idle is None:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_turn = self.turn
        self._idle_timer = driver.loop.call_later(self._session_idle, self._idle_check)

    def _idle_check(self) -> None:
        """End the session if no call was open or handed here for ``session_idle`` s.

        Costs nothing per call: a call leaves only its turn and completion
        time behind, and this timer, once per ``session_idle``, reads them.
        """
        self._idle_timer = None
        driver, idle = self._driver, self._session_idle
        if driver is None or driver.error is not None or self._closed or idle is None:
            return
        # since the last call ended (``_observe`` times coroutine calls)
        quiet = time.monotonic() - max(self._latency_at, self._ended_at)
        busy = (
            driver.session.calls
            or self._reserved
            or (self._keep_session is not None and self._keep_session())
        )
        if busy or self.turn != self._idle_turn or quiet < idle:
            self._idle_turn = self.turn
            # idle, or the rest of it since the last call ended (a few ms
            # late at most, so a pool is quiet once the period has passed)
            wait = idle if busy else max(idle - quiet, 0.01)
            self._idle_timer = driver.loop.call_later(wait, self._idle_check)
            return
        # the next dispatch opens a new session; this one half-closes and
        # the worker ends it with OK
        self._driver = None
        self._ending = driver.loop.create_task(_end_idle(driver))

    async def dispatch(self, task: Task, *, timeout: float | None = None) -> RemoteCall:
        """Send ``task`` and return its call once the worker has taken it.

        ``timeout`` bounds reaching the worker: the session handshake and
        writing the call. Once written, the call may run: it is never sent
        again, and waiting for the worker's first answer is not bounded here
        (the call's own deadline bounds it).

        Raises:
            SerializationError: the task cannot be encoded; no worker was asked.
            TransientRpcError: the call did not start on this worker
                (unreachable, slow to answer the handshake, draining, refused).
            RpcError: the connection is closed.
        """
        fields = task.start_fields()  # may raise: nothing was sent
        if self._closed:
            raise RpcError(StatusCode.CANCELLED, "the connection is closed", self.target)
        driver = self._live_driver()
        self._idle.clear()
        # counted before the first await, so a balancer choosing for the next
        # dispatch in the same tick already sees this one
        calls = driver.session.calls  # the session's open calls
        opened = len(calls)
        ahead = self._reserved + opened  # in_flight, with the driver at hand
        self._reserved += 1
        self.turn = next(_turns)
        reservation = [True]  # handed over to the session when the call opens
        try:
            if timeout is None and driver.ready.is_set():
                # the common case: nothing to wait for before the call is queued
                call = self._open(driver, fields, task, reservation, ahead)
                # a lone call goes out in this turn; with others in flight, the
                # next turn's write carries everything queued meanwhile
                driver.wake(eager=not opened)
            else:
                call = await self._open_within(driver, fields, task, timeout, reservation, ahead)
            answer = await call.first_answer()
            if answer.__class__ is s.Refused or answer.__class__ is s.Lost:
                self._refused(answer)
            return call
        except TransientRpcError:
            self._observe(0.0, failed=True)  # refused or unreachable: slow, for now
            raise
        finally:
            if reservation[0]:
                self._reserved -= 1
            if not calls:
                self._idle.set()

    def _refused(self, answer: s.Refused | s.Lost) -> None:
        """Raise if the worker's first answer says the call never started."""
        if isinstance(answer, s.Refused):
            # busy: at its concurrency limit; otherwise draining (going away)
            code = StatusCode.RESOURCE_EXHAUSTED if answer.busy else StatusCode.UNAVAILABLE
            raise TransientRpcError(code, f"worker refused the call: {answer.reason}", self.target)
        if isinstance(answer, s.Lost) and not answer.may_have_run:
            raise TransientRpcError(
                StatusCode.UNAVAILABLE, "the session ended before the call was sent", self.target
            )

    def _open(
        self,
        driver: _SessionDriver,
        fields: s.StartFields,
        task: Task,
        reservation: list[bool],
        ahead: int,
    ) -> RemoteCall:
        """Queue the call on a session that answered its handshake.

        ``ahead``: this caller's calls on the worker when the balancer handed
        it over (the connection's time per call divides by it, plus one).
        """
        if driver.error is not None:
            raise driver.error.copy()
        if driver.session.draining:
            raise TransientRpcError(StatusCode.UNAVAILABLE, "the worker is draining", self.target)
        call = RemoteCall(driver, task.generator, task.window)
        call.ahead = ahead
        call.id = driver.session.open_call(fields, owner=call)
        self._reserved -= 1  # now counted among the session's open calls
        reservation[0] = False
        return call

    async def _open_within(
        self,
        driver: _SessionDriver,
        fields: s.StartFields,
        task: Task,
        timeout: float | None,
        reservation: list[bool],
        ahead: int,
    ) -> RemoteCall:
        """Wait for the handshake, queue the call and see it written, within ``timeout``."""
        call: RemoteCall | None = None
        try:
            async with asyncio.timeout(timeout):
                await driver.ready.wait()
                call = self._open(driver, fields, task, reservation, ahead)
                if timeout is None:
                    driver.wake()  # nothing to bound: the pump writes it next
                else:
                    await driver.sent()
        except TimeoutError:
            if call is None or driver.session.phase(call.id) is s.Phase.QUEUED:
                if call is not None:
                    call.cancel()  # taken back before it was sent: nothing ran
                what = "send the call" if call is not None else "finish the session handshake"
                raise TransientRpcError(
                    StatusCode.DEADLINE_EXCEEDED,
                    f"could not {what} within {timeout} s",
                    self.target,
                ) from None
            # it went out as the time ran out: it may run, so it is this worker's now
        except BaseException:
            if call is not None:
                call.cancel()
            raise
        assert call is not None
        return call

    async def stop_worker(self, grace: float, *, timeout: float | None = None) -> int:
        """Ask the worker to drain for ``grace`` seconds and stop; return cancelled count."""
        try:
            reply = await rpc.call_stop(self._channel, grace, timeout)
        except grpc.aio.AioRpcError as exc:
            raise map_rpc_error(exc, self.target, secure=self.secure) from exc
        return int(reply.cancelled)

    def close_suspended_streams(self, reason: str) -> int:
        """Close the generator calls nobody is reading; return how many."""
        closed = sum(call.close_suspended(reason) for call in self.open_calls())
        if closed and self._driver is not None:
            self._driver._pump.wake()
        return closed

    async def aclose_when_idle(self) -> None:
        """Close once no call is in flight (or the session broke); for evictions.

        In-flight calls keep their connection and finish normally; if this
        task is cancelled first, the connection is closed at once.
        """
        try:
            await self.quiet()
        finally:
            await self.aclose()

    async def quiet(self) -> None:
        """Return once no call is in flight here (or the session broke)."""
        while not self._idle.is_set():
            driver = self._driver
            if driver is not None and driver.error is not None:
                break
            await self._idle.wait()

    async def aclose(self) -> None:
        """Close the session and the channel; open calls end. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        try:
            if self._driver is not None:
                await self._driver.aclose(_CLOSE_PATIENCE)
            if self._ending is not None:
                await self._ending
        finally:
            self._idle.set()
            await self._channel.close()

    def __repr__(self) -> str:
        return f"WorkerConnection({self.target!r})"

"""A worker: a gRPC server that runs routines, published through discovery."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import logging
import os
import platform
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle
import grpc
import grpc.aio

from ..._exceptions import InsecureBindError
from ..._version import __version__
from ...proxy.credentials import WorkerCredentials
from ...proxy.ipc import IPC_OPTION, ipc_enabled
from ...serialization.metadata import WorkerMetadata
from ...serialization.rpc import DescribeReply, DescribeRequest, add_worker_service
from ...serialization.wire import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, StopReply, StopRequest
from .._malloc import trim_heap
from ..discovery.base import DiscoveryEvent, DiscoveryEventType, DiscoveryLike
from . import loops
from .auth import TokenInterceptor
from .health import WorkerHealth
from .ipc import IpcServer
from .monitor import LoopMonitor, threshold_from_env
from .output import install as capture_output
from .output import uninstall as release_output
from .proxies import ProxyRegistry
from .service import WorkerService

log = logging.getLogger(__name__)

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # each side bounds what it sends; a lower limit on the receiving side would
    # otherwise break the stream that every call shares
    ("grpc.max_receive_message_length", -1),
    # The worker pings its callers only to learn that one vanished silently
    # (its calls then end within ~25 s); a caller pings every 4 s, as it must
    # notice a frozen worker fast. Pinging every 5 s here too cost an idle
    # caller as much again as its own pings (one per connection per ping).
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
)


# how long sessions get to flush their last frames once every call has ended
_FINISH_TIMEOUT = 1.0
# collections (and the pauses between them) that free a stopped proxy's calls
_COLLECT_ROUNDS = 3
_COLLECT_PAUSE = 0.25


@dataclasses.dataclass
class WorkerConfig:
    """How to run one worker.

    Attributes:
        host: address to bind; loopback unless TLS or ``insecure``.
        port: port to bind; 0 picks a free one.
        tags: labels published with the worker.
        discovery: where to publish the worker (None: nowhere).
        credentials: TLS material; None serves plaintext.
        insecure: allow a non-loopback bind without TLS.
        grace: seconds in-flight calls get to finish when stopping.
        proxy_idle: seconds after which a shipped proxy that dispatched
            nothing (and has nothing in flight) is stopped, closing its
            connections (whose keepalive pings cost CPU at both ends); it
            restarts on its next use (``DISTAFF_PROXY_IDLE``, default 5).
        uid: the worker's unique id.
        advertise: the host published (and described) instead of ``host``,
            e.g. the pod IP when binding a wildcard.
        health_port: also serve the health service alone, plaintext, on this
            port of ``host`` (for Kubernetes probes); None: no such port.
        max_concurrency: the most calls run at once (None: no limit); over
            it, new calls are refused before unpickling (callers move on).
        pretend_python: for tests only: the Python version Describe and the
            published metadata report instead of the real one.
        metrics_port: serve Prometheus metrics on this port (0: a free one,
            published as the ``metrics_port`` option); None: no metrics.
        metrics_host: the address the metrics are served on (loopback).
        metrics_routines: distinct routine names the metrics label; the
            rest are counted as ``other``.
        event_loop: the loop the worker process runs on: ``auto`` (uvloop
            if installed), ``asyncio`` or ``uvloop``; ``DISTAFF_WORKER_LOOP``
            sets the default. Used where the process starts (a spawned
            worker's entry point, ``distaff worker``), not by ``Worker`` itself.
        ipc: also serve sessions on a Unix socket (Linux, plaintext only),
            which callers on this host use instead of gRPC; a pool's spawned
            workers do (``DISTAFF_IPC=0`` turns it off).
    """

    host: str = "127.0.0.1"
    port: int = 0
    tags: frozenset[str] = frozenset()
    discovery: DiscoveryLike | None = None
    credentials: WorkerCredentials | None = None
    insecure: bool = False
    grace: float = 5.0
    proxy_idle: float = dataclasses.field(
        default_factory=lambda: float(os.environ.get("DISTAFF_PROXY_IDLE", "5"))
    )
    uid: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    advertise: str | None = None
    health_port: int | None = None
    pretend_python: str | None = None
    max_concurrency: int | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_routines: int = 100
    event_loop: str = dataclasses.field(default_factory=loops.default)
    ipc: bool = False


class BindError(OSError):
    """The worker's address could not be bound."""


def is_loopback(host: str) -> bool:
    """True if ``host`` names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def format_address(host: str, port: int) -> str:
    """``host:port`` with IPv6 hosts bracketed."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def check_bind_policy(config: WorkerConfig) -> None:
    """Refuse a non-loopback bind that would let anyone who reaches it run code.

    Raises:
        InsecureBindError: no TLS, or TLS that does not authenticate callers,
            on a non-loopback address without ``insecure``.
    """
    if config.insecure or is_loopback(config.host):
        return
    credentials = config.credentials
    if credentials is None:
        raise InsecureBindError(
            f"refusing to bind {config.host!r} without TLS credentials: anyone who "
            "can reach it could run code here; pass TLS credentials (--ca/--cert/--key) "
            "that authenticate callers (--mutual or --token-file FILE), or "
            "--insecure (insecure=True) if the network is trusted"
        )
    if not credentials.authenticates_callers:
        raise InsecureBindError(
            f"refusing to bind {config.host!r} with one-way TLS: it proves the worker "
            "to callers, not callers to the worker, so anyone who can reach it could "
            "run code here; authenticate callers with --mutual (client certificates) "
            "or --token-file FILE (a bearer token), or pass --insecure (insecure=True) "
            "if the network is trusted"
        )


class Worker:
    """Runs the server until stopped by ``stop()``, a Stop call, or a signal."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._released = asyncio.Event()  # told to go (see leave_together)
        self._together = False
        self._proxies = ProxyRegistry(config.credentials)
        self._service = WorkerService(
            self._proxies, self._stop.set, config.uid, max_concurrency=config.max_concurrency
        )
        self._publisher: Any = None
        self._health = WorkerHealth()
        self.metadata: WorkerMetadata | None = None
        self._metrics: Any = None
        self._metrics_port: int | None = None
        self.started = time.monotonic()

    def stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self._stop.set()

    def leave_together(self) -> None:
        """Stop as one of a whole pool that stops at once (its parent's word).

        The worker refuses new calls and drains its own, but ends no
        connection: it tells its parent it has drained (``run``'s
        ``drained``) and, once told to ``go()``, exits without ending its
        sessions. The parent says go only when every worker of the pool has
        drained and its own calls have their answers, so no frame is still
        owed to anyone who waits for it; ending hundreds of worker-to-worker
        sessions one by one would be work for nobody. Ignored once a stop
        has begun (a signal came first): that stop stays graceful.
        """
        if not self._stop.is_set():
            self._together = True
            self._stop.set()

    def go(self) -> None:
        """The parent's word (or its end): stop; after ``leave_together``, exit at once."""
        self._released.set()
        self._stop.set()

    async def run(
        self,
        ready: Callable[[WorkerMetadata], None],
        drained: Callable[[], None] | None = None,
    ) -> None:
        """Serve until stopped; call ``ready`` once reachable and published.

        ``drained`` (a spawned worker's report to its parent) is what makes
        ``leave_together`` possible: after it is called the worker waits for
        ``go()`` and then ends the process (``os._exit``) where it stands.
        """
        config = self.config
        check_bind_policy(config)
        server = self._server()
        self._health.set_serving(False)
        address = format_address(config.host, config.port)
        try:
            if config.credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, config.credentials.server_credentials())
        except RuntimeError:  # grpc's way of saying it could not bind
            port = 0
        if not port:
            raise BindError(f"could not bind {address}: in use or not an address of this host")
        await server.start()
        probes = None
        ipc: IpcServer | None = None
        capture_output()
        try:
            if config.ipc and config.credentials is None and ipc_enabled():
                ipc = await self._open_ipc()
            if config.health_port is not None:
                probes = await self._health.open_probe_server(config.host, config.health_port)
            if config.metrics_port is not None:
                self._serve_metrics(config)
            self.metadata = self._describe_self(port, ipc)
            await self._publish(DiscoveryEventType.WORKER_ADDED)
            self._service.address = self.metadata.address
            self._health.set_serving(True)
            monitor = LoopMonitor(threshold_from_env(), busy=lambda: self._service.running > 0)
            self._service.on_busy = monitor.wake
            self._service.instruments.monitor = monitor
            monitor.sink_of = self._service.output_of
            ready(self.metadata)
            self._log_started()
            monitor.start()
            try:
                async with asyncio.TaskGroup() as group:
                    reaper = group.create_task(self._stop_idle_proxies())
                    await self._stop.wait()
                    reaper.cancel()
            finally:
                monitor.stop()
            log.info(
                "stopping: leaving discovery, draining %d running call(s) for up to %g s",
                self._service.running,
                config.grace,
            )
            together = self._together and drained is not None
            # stopping together, the sessions stay open to the end: no caller
            # is told to end them (a call that comes is still refused)
            self._service.refuse_new_calls(tell=not together)
            self._health.set_serving(False)
            if not together:
                # shipped proxies with nothing in flight stop following the pool
                # now, rather than each watching every other worker of a
                # stopping pool go
                await self._proxies.stop_idle(0.0)
                await self._publish(DiscoveryEventType.WORKER_DROPPED)
            cancelled = await self._service.drain(config.grace)
            if cancelled:
                log.warning("drain grace ran out: cancelled %d call(s)", cancelled)
            if together:
                assert drained is not None
                await self._leave(drained)
            await self._proxies.aclose()
            # every call has ended: let each session write its last frames and
            # end with an OK status, so no caller sees a stream cut mid-call
            await self._service.finish(_FINISH_TIMEOUT)
        finally:
            await self._close_publisher()
            if ipc is not None:
                await ipc.stop()
            await server.stop(_FINISH_TIMEOUT)
            if probes is not None:
                await probes.stop(0)
            if self._metrics is not None:
                await asyncio.to_thread(self._metrics.close)
            release_output()
            log.info("stopped")

    async def _leave(self, drained: Callable[[], None]) -> None:
        """Report the drain, serve (refusing calls) until told to go, and exit."""
        drained()
        await self._released.wait()
        log.info("stopped (with the whole pool)")
        release_output()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)

    def _log_started(self) -> None:
        meta = self.metadata
        assert meta is not None
        discovery = self.config.discovery
        log.info(
            "serving on %s (pid %d, distaff %s, Python %s, %s, tags [%s], discovery %s%s)",
            meta.address,
            meta.pid,
            meta.version,
            meta.python,
            "TLS" if meta.secure else "plaintext",
            ",".join(sorted(meta.tags)),
            "none" if discovery is None else type(discovery).__name__,
            "" if self._metrics_port is None else f", metrics on port {self._metrics_port}",
        )

    def _serve_metrics(self, config: WorkerConfig) -> None:
        from .metrics import WorkerMetrics  # prometheus-client: only when asked for

        service = self._service
        metrics = WorkerMetrics(
            lambda: service.running,
            config.metrics_routines,
            labels={"uid": config.uid},
            sessions=lambda: service.sessions,
        )
        self._metrics = service.instruments.metrics = metrics
        assert config.metrics_port is not None
        self._metrics_port = metrics.serve(config.metrics_host, config.metrics_port)

    def _server(self) -> grpc.aio.Server:
        credentials = self.config.credentials
        interceptors = []
        if credentials is not None and credentials.token is not None:
            interceptors.append(TokenInterceptor(credentials.token))
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
        add_worker_service(server, self._service.session, self._stop_rpc, self._describe)
        self._health.register(server)
        return server

    async def _open_ipc(self) -> IpcServer | None:
        ipc = IpcServer(self._service, self.config.uid)
        try:
            await ipc.start()
        except OSError as exc:  # callers use gRPC alone
            log.warning("no Unix socket for sessions (%s): callers use gRPC", exc)
            return None
        return ipc

    def _describe_self(self, port: int, ipc: IpcServer | None = None) -> WorkerMetadata:
        config = self.config
        options = {} if ipc is None else {IPC_OPTION: ipc.name}
        if self._metrics_port is not None:
            options["metrics_port"] = str(self._metrics_port)
        return WorkerMetadata(
            uid=config.uid,
            address=format_address(config.advertise or config.host, port),
            pid=os.getpid(),
            host=socket.gethostname(),
            version=__version__,
            tags=config.tags,
            secure=config.credentials is not None,
            python=config.pretend_python or platform.python_version(),
            protocol=PROTOCOL_VERSION,
            cloudpickle=cloudpickle.__version__,
            options=tuple(sorted(options.items())),
        )

    async def _stop_rpc(self, request: StopRequest, context: grpc.aio.ServicerContext) -> StopReply:
        # leave the pool before draining, as on SIGTERM: new calls go elsewhere
        log.info("asked to stop by %s (Stop, grace %g s)", context.peer(), request.grace)
        self._service.refuse_new_calls()
        self._health.set_serving(False)
        await self._publish(DiscoveryEventType.WORKER_DROPPED)
        return await self._service.stop(request, context)

    async def _describe(
        self, request: DescribeRequest, context: grpc.aio.ServicerContext
    ) -> DescribeReply:
        meta = self.metadata
        if meta is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the worker is starting")
        assert meta is not None
        return DescribeReply(
            uid=meta.uid,
            address=meta.address,
            host=meta.host,
            pid=meta.pid,
            tags=sorted(meta.tags),
            secure=meta.secure,
            version=meta.version,
            protocol=meta.protocol,
            python=meta.python,
            cloudpickle=meta.cloudpickle,
            draining=not self._health.serving,
            options=dict(meta.options),
            in_flight=self._service.running,
            completed=self._service.instruments.completed,
            failed=self._service.instruments.failed,
            uptime=time.monotonic() - self.started,
            rss=resident_bytes(),
        )

    async def _stop_idle_proxies(self) -> None:
        # No polling while idle: sleep until the least recently used running
        # proxy may be idle; with none running and no call that could start
        # one, until a task brings a proxy along.
        idle = self.config.proxy_idle
        proxies = self._proxies
        while True:
            due = proxies.due(idle)
            if due is None and self._service.running == 0:
                proxies.used.clear()
                await proxies.used.wait()
                continue
            # a proxy still busy at its due (calls in flight) is looked at again
            await asyncio.sleep(max(idle if due is None else due + 0.01, idle / 4, 0.05))
            try:
                stopped = await proxies.stop_idle(idle)
            except Exception:  # a proxy that fails to stop must not stop the reaper
                log.exception("stopping an idle proxy failed")
                await asyncio.sleep(idle)  # not again at once
                continue
            if stopped:
                await _collect_released_calls()

    async def _publish(self, kind: DiscoveryEventType) -> None:
        if self.config.discovery is None or self.metadata is None:
            return
        if self._publisher is None:
            self._publisher = self.config.discovery.publisher()
        await self._publisher.publish(DiscoveryEvent(kind, self.metadata))

    async def _close_publisher(self) -> None:
        if self._publisher is not None:
            publisher, self._publisher = self._publisher, None
            await publisher.aclose()


async def _collect_released_calls() -> None:
    """Collect the gRPC calls of closed connections, so their sockets close.

    A cancelled call ends up in reference cycles (tracebacks, task groups),
    and gRPC lets go of some of it only after the first collection; until
    then the TCP connections stay open, with keepalive pings at both ends.
    Nothing else collects in an idle worker (its allocations trigger GC).
    The memory freed is then given back to the OS.
    """
    for _ in range(_COLLECT_ROUNDS):
        if not gc.collect():
            break
        await asyncio.sleep(_COLLECT_PAUSE)
    trim_heap()  # what the connections' buffers held (about 0.5 MiB at 16 of them)


def resident_bytes() -> int:
    """This process's resident memory in bytes (Linux ``/proc``); 0 if unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def install_signal_handlers(worker: Worker) -> None:
    """Make SIGTERM and SIGINT stop ``worker`` gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.stop)

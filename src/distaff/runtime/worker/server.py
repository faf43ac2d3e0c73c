"""A worker: a gRPC server that runs routines, published through discovery."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import signal
import socket
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from ..._exceptions import InsecureBindError
from ..._version import __version__
from ...proxy.credentials import WorkerCredentials
from ...serialization.metadata import WorkerMetadata
from ...serialization.rpc import add_worker_service
from ...serialization.wire import MAX_MESSAGE_BYTES
from ..discovery.base import DiscoveryEvent, DiscoveryEventType, DiscoveryLike
from .proxies import ProxyRegistry
from .service import WorkerService

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # each side bounds what it sends; a lower limit on the receiving side would
    # otherwise break the stream that every call shares
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
)


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
            nothing (and has nothing in flight) is stopped; it restarts on
            its next use (``DISTAFF_PROXY_IDLE``, default 60).
        uid: the worker's unique id.
    """

    host: str = "127.0.0.1"
    port: int = 0
    tags: frozenset[str] = frozenset()
    discovery: DiscoveryLike | None = None
    credentials: WorkerCredentials | None = None
    insecure: bool = False
    grace: float = 5.0
    proxy_idle: float = dataclasses.field(
        default_factory=lambda: float(os.environ.get("DISTAFF_PROXY_IDLE", "60"))
    )
    uid: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


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


class Worker:
    """Runs the server until stopped by ``stop()``, a Stop call, or a signal."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._proxies = ProxyRegistry(config.credentials)
        self._service = WorkerService(self._proxies, self._stop.set)
        self._publisher: Any = None
        self.metadata: WorkerMetadata | None = None

    def stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self._stop.set()

    async def run(self, ready: Callable[[WorkerMetadata], None]) -> None:
        """Serve until stopped; call ``ready`` once reachable and published."""
        config = self.config
        if config.credentials is None and not config.insecure and not is_loopback(config.host):
            raise InsecureBindError(
                f"refusing to bind {config.host!r} without TLS credentials: anyone who "
                "can reach it could run code here; pass TLS credentials, or "
                "--insecure (insecure=True) if the network is trusted"
            )
        server = grpc.aio.server(options=SERVER_OPTIONS)
        add_worker_service(server, self._service.session, self._service.stop)
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
        try:
            self.metadata = WorkerMetadata(
                uid=config.uid,
                address=format_address(config.host, port),
                pid=os.getpid(),
                host=socket.gethostname(),
                version=__version__,
                tags=config.tags,
                secure=config.credentials is not None,
            )
            await self._publish(DiscoveryEventType.WORKER_ADDED)
            ready(self.metadata)
            reaper = asyncio.ensure_future(self._stop_idle_proxies())
            try:
                await self._stop.wait()
            finally:
                reaper.cancel()
                await asyncio.gather(reaper, return_exceptions=True)
            await self._publish(DiscoveryEventType.WORKER_DROPPED)
            await self._service.drain(config.grace)
            await self._proxies.aclose()
        finally:
            await self._close_publisher()
            await server.stop(0)

    async def _stop_idle_proxies(self) -> None:
        idle = self.config.proxy_idle
        while True:
            await asyncio.sleep(max(idle / 2, 0.05))
            await self._proxies.stop_idle(idle)

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


def install_signal_handlers(worker: Worker) -> None:
    """Make SIGTERM and SIGINT stop ``worker`` gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.stop)

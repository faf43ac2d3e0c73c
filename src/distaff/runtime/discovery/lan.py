"""Discovery on a LAN: DNS-SD over multicast DNS, with ``zeroconf``.

One service per worker, of type ``_distaff._tcp.local.`` by default. The instance name (and the
SRV target host ``<instance>.local.``) is the worker uid when it is a DNS-safe label, else ``w-``
and a hash of it. SRV carries the worker's port; A/AAAA records carry addresses a peer can dial (a
wildcard bind becomes the machine's non-loopback addresses). TXT keys, each string well under the
255-byte limit:

* ``txtvers=1``: the layout version; records without it are foreign.
* ``ns=<namespace>``: present only when the publisher has a namespace.
* ``mc=<n>`` and ``m0`` .. ``m<n-1>``: the ``encode_metadata`` msgpack bytes, base64 (standard
  alphabet), cut into chunks of 240 characters.

Namespaces are a TXT filter: a subscriber with a namespace only reports records whose ``ns`` equals
it; without one it reports every distaff record. Records live ``record_ttl`` seconds (60 by
default), so a publisher that dies without goodbyes disappears within about that long plus
zeroconf's 10 s cache sweep. A record that does not resolve within ``resolve_timeout_ms`` is tried
again after 0.5 s, 1 s, 2 s ... (at most 30 s apart) until it resolves, changes or goes away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import ifaddr
from zeroconf import DNSQuestionType, InterfaceChoice, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ... import _checks
from ...serialization.metadata import WorkerMetadata, decode_metadata, encode_metadata
from .base import DiscoveryEvent, DiscoveryEventType
from .local import validate_namespace

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_distaff._tcp.local."
_CHUNK = 240
_MAX_PAYLOAD = 6000  # base64 characters; keeps a record well inside one mDNS packet
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
_TYPE_RE = re.compile(r"_[A-Za-z0-9][A-Za-z0-9-]{0,14}\._(tcp|udp)\.local\.")


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[ipv6]:port``; raise ``ValueError`` if malformed."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"worker address must be host:port, not {address!r}")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    """Join ``host`` and ``port``, bracketing IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _instance(uid: str) -> str:
    if _LABEL_RE.fullmatch(uid):
        return uid
    return "w-" + hashlib.sha256(uid.encode()).hexdigest()[:32]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.partition("%")[0])


async def advertised_addresses(host: str, interfaces: Sequence[str] | None = None) -> list[str]:
    """Return the addresses to put in A/AAAA records for a worker bound to ``host``.

    A wildcard (``0.0.0.0``, ``::``) becomes the machine's non-loopback addresses (IPv6 link-local
    excluded), limited to ``interfaces`` when given, falling back to loopback only when nothing
    else is left. A host name resolves, dropping loopback answers when there are others. Never
    loopback for a non-loopback bind.
    """
    try:
        ip = _ip(host)
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError:
            return []
        found = list(dict.fromkeys(str(_ip(str(info[4][0]))) for info in infos))
        public = [a for a in found if not _ip(a).is_loopback]
        return public or found
    if not ip.is_unspecified:
        return [str(ip)]
    wanted = {4} if ip.version == 4 else {4, 6}
    found = []
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            addr = _ip(entry.ip if isinstance(entry.ip, str) else entry.ip[0])
            if addr.version in wanted and not (addr.is_loopback or addr.is_link_local):
                found.append(str(addr))
    if interfaces is not None:
        allowed = {str(_ip(i)) for i in interfaces}
        found = [a for a in found if a in allowed]
    fallback = ["127.0.0.1"] if ip.version == 4 else ["127.0.0.1", "::1"]
    return list(dict.fromkeys(found)) or fallback


def encode_txt(metadata: WorkerMetadata, namespace: str | None) -> dict[str, str]:
    """Return the TXT properties for ``metadata`` (layout in the module doc)."""
    payload = base64.b64encode(encode_metadata(metadata)).decode("ascii")
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError(f"metadata of {metadata.uid!r} is too large for a TXT record")
    chunks = [payload[i : i + _CHUNK] for i in range(0, len(payload), _CHUNK)]
    props = {"txtvers": "1"}
    if namespace is not None:
        props["ns"] = namespace
    props["mc"] = str(len(chunks))
    props.update((f"m{i}", chunk) for i, chunk in enumerate(chunks))
    return props


def decode_txt(props: dict[bytes, bytes | None], namespace: str | None) -> WorkerMetadata:
    """Decode TXT properties; raise ``ValueError`` if foreign or malformed."""
    if props.get(b"txtvers") != b"1":
        raise ValueError("not a distaff record (no txtvers=1)")
    if namespace is not None and props.get(b"ns") != namespace.encode():
        raise ValueError(f"namespace {props.get(b'ns')!r} is not {namespace!r}")
    count = props.get(b"mc") or b""
    if not count.isdigit() or not 0 < int(count) <= _MAX_PAYLOAD // _CHUNK + 1:
        raise ValueError(f"bad chunk count {count!r}")
    chunks = [props.get(f"m{i}".encode()) for i in range(int(count))]
    if any(chunk is None for chunk in chunks):
        raise ValueError("missing metadata chunk")
    raw = base64.b64decode(b"".join(c for c in chunks if c is not None), validate=True)
    return decode_metadata(raw)


def _dialable(metadata: WorkerMetadata, info: AsyncServiceInfo) -> WorkerMetadata:
    """Replace the metadata address by the best resolved ``ip:port``."""
    addresses: list[str] = info.parsed_scoped_addresses()
    if not addresses or not info.port:
        return metadata
    with contextlib.suppress(ValueError):
        if split_address(metadata.address)[0] in addresses:
            return metadata

    def rank(address: str) -> int:
        ip = _ip(address)
        return 3 if ip.is_link_local else 2 if ip.is_loopback else ip.version - 4

    best = min(addresses, key=rank)
    return dataclasses.replace(metadata, address=format_address(best, info.port))


async def _close_zeroconf(aiozc: AsyncZeroconf) -> None:
    """Close with goodbyes; if cut short (cancelled), still release the sockets."""
    try:
        await aiozc.async_close()
    except BaseException:
        aiozc.zeroconf.close()
        raise


class LanPublisher:
    """Registers one DNS-SD service per published worker; ``aclose`` withdraws all.

    The zeroconf instance starts on the first ``publish``. An added worker is probed for and
    announced (about 1.7 s) before ``publish`` returns.
    """

    def __init__(self, config: LanSubscriber, record_ttl: int) -> None:
        self._config = config
        self._ttl = record_ttl
        self._zc: AsyncZeroconf | None = None
        self._infos: dict[str, AsyncServiceInfo] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def publish(self, event: DiscoveryEvent) -> None:
        """Register (added), re-register (updated) or unregister (dropped).

        Raises:
            RuntimeError: the publisher is closed.
            ValueError: the worker address is not ``host:port``, or the metadata is too large.
            zeroconf.NonUniqueNameException: another host holds the name.
        """
        if self._closed:
            raise RuntimeError("publisher is closed")
        meta = event.metadata
        async with self._locks.setdefault(meta.uid, asyncio.Lock()):
            if event.type is DiscoveryEventType.WORKER_DROPPED:
                info = self._infos.pop(meta.uid, None)
                if info is not None and self._zc is not None:
                    await (await self._zc.async_unregister_service(info))
                return
            info = await self._info(meta)
            if self._closed:
                raise RuntimeError("publisher is closed")
            if self._zc is None:
                self._zc = AsyncZeroconf(interfaces=self._config.zeroconf_interfaces())
            if meta.uid in self._infos:
                self._infos[meta.uid] = info
                await (await self._zc.async_update_service(info))
            else:
                announced = await self._zc.async_register_service(info)
                self._infos[meta.uid] = info
                await announced

    async def _info(self, meta: WorkerMetadata) -> AsyncServiceInfo:
        host, port = split_address(meta.address)
        instance = _instance(meta.uid)
        service_type = self._config.service_type
        return AsyncServiceInfo(
            service_type,
            f"{instance}.{service_type}",
            port=port,
            properties=encode_txt(meta, self._config.namespace),
            server=f"{instance}.local.",
            host_ttl=self._ttl,
            other_ttl=self._ttl,
            parsed_addresses=await advertised_addresses(host, self._config.interfaces),
        )

    async def aclose(self) -> None:
        """Unregister every published worker and close zeroconf; idempotent."""
        self._closed = True
        zc, self._zc = self._zc, None
        self._infos.clear()
        if zc is not None:
            await _close_zeroconf(zc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@dataclasses.dataclass(frozen=True)
class LanSubscriber:
    """Browses for workers; holds only configuration, so it pickles.

    Each ``__aiter__`` starts its own zeroconf instance and browser and yields ``WORKER_ADDED`` /
    ``UPDATED`` / ``DROPPED`` as services are resolved, change and go away. Foreign or malformed
    records are skipped (debug log). The yielded address is a resolved ``ip:port`` or
    ``[ipv6]:port`` when there is one. Closing the iterator closes the browser and zeroconf.
    """

    service_type: str = SERVICE_TYPE
    namespace: str | None = None
    interfaces: tuple[str, ...] | None = None
    resolve_timeout_ms: int = 3000

    def zeroconf_interfaces(self) -> Any:
        """Return the ``interfaces`` argument for ``AsyncZeroconf``."""
        return InterfaceChoice.All if self.interfaces is None else list(self.interfaces)

    def __aiter__(self) -> AsyncIterator[DiscoveryEvent]:
        """Open a subscription."""
        return self._follow()

    def describe(self) -> str:
        """Say what this follows: ``LanDiscovery('jobs')`` (None: every namespace)."""
        extra = "" if self.service_type == SERVICE_TYPE else f", service_type={self.service_type!r}"
        return f"LanDiscovery({self.namespace!r}{extra})"

    async def _follow(self) -> AsyncIterator[DiscoveryEvent]:
        aiozc = AsyncZeroconf(interfaces=self.zeroconf_interfaces())
        try:
            changes: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()

            def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
                changes.put_nowait((name, state_change))

            # QM: answers come back multicast. A worker runs two mDNS stacks (its
            # publisher and its shipped proxy's subscriber) on port 5353, and a
            # unicast answer reaches only one of them.
            browser = AsyncServiceBrowser(
                aiozc.zeroconf,
                self.service_type,
                handlers=[on_change],
                question_type=DNSQuestionType.QM,
            )
            retries = _Retries(changes)
            try:
                known: dict[str, WorkerMetadata] = {}
                while True:
                    name, change = await changes.get()
                    retries.cancel(name)
                    try:
                        event = await self._transition(aiozc, known, name, change)
                    except _Unresolved:
                        retries.schedule(name)
                        continue
                    if event is not None:
                        yield event
            finally:
                retries.close()
                await browser.async_cancel()
        finally:
            await _close_zeroconf(aiozc)

    async def _transition(
        self,
        aiozc: AsyncZeroconf,
        known: dict[str, WorkerMetadata],
        name: str,
        change: ServiceStateChange,
    ) -> DiscoveryEvent | None:
        meta = None
        if change is not ServiceStateChange.Removed:
            info = AsyncServiceInfo(self.service_type, name)
            if not await info.async_request(
                aiozc.zeroconf, self.resolve_timeout_ms, question_type=DNSQuestionType.QM
            ):
                raise _Unresolved(name)
            try:
                meta = _dialable(decode_txt(info.properties, self.namespace), info)
            except ValueError as exc:
                logger.debug("skipping discovery record %s: %s", name, exc)
        old = known.pop(name, None)
        if meta is None:
            return None if old is None else DiscoveryEvent(DiscoveryEventType.WORKER_DROPPED, old)
        known[name] = meta
        if old is None:
            return DiscoveryEvent(DiscoveryEventType.WORKER_ADDED, meta)
        if old != meta:
            return DiscoveryEvent(DiscoveryEventType.WORKER_UPDATED, meta)
        return None


class _Unresolved(Exception):
    """A record did not resolve within the timeout."""


class _Retries:
    """Re-queues a record that failed to resolve, after a growing delay (0.5 s .. 30 s).

    A worker whose answer was lost once must not stay unseen until its
    record changes. A newer change of the same record replaces the retry.
    """

    def __init__(self, changes: asyncio.Queue[tuple[str, ServiceStateChange]]) -> None:
        self._changes = changes
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._attempts: dict[str, int] = {}

    def schedule(self, name: str) -> None:
        attempt = self._attempts[name] = self._attempts.get(name, 0) + 1
        delay = min(30.0, 0.5 * 2 ** (attempt - 1))
        logger.debug("could not resolve %s; retry %d in %.1f s", name, attempt, delay)
        self._pending[name] = asyncio.get_running_loop().call_later(
            delay, self._changes.put_nowait, (name, ServiceStateChange.Updated)
        )

    def cancel(self, name: str) -> None:
        handle = self._pending.pop(name, None)
        if handle is not None:
            handle.cancel()
        else:  # a fresh change, not a retry: start the backoff over
            self._attempts.pop(name, None)

    def close(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()


class LanDiscovery:
    """Discovery over DNS-SD/mDNS on the local network.

    Args:
        namespace: only see (and publish into) this namespace; None: see all.
        service_type: the DNS-SD service type.
        interfaces: IP addresses of the interfaces to use (``["127.0.0.1"]``); None: all.
        record_ttl: seconds a published record lives without refresh.

    Raises:
        ValueError: a bad namespace, service type, interface or TTL.
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        service_type: str = SERVICE_TYPE,
        interfaces: Sequence[str] | None = None,
        record_ttl: int = 60,
    ) -> None:
        if namespace is not None:
            validate_namespace(namespace)
        if not _TYPE_RE.fullmatch(service_type):
            raise ValueError(f"bad DNS-SD service type {service_type!r} (like {SERVICE_TYPE!r})")
        if interfaces is not None:
            if isinstance(interfaces, str):
                raise TypeError(f"interfaces must be a list of IP addresses, not {interfaces!r}")
            try:
                interfaces = tuple(str(ipaddress.ip_address(i)) for i in interfaces)
            except ValueError as exc:
                raise ValueError(f"interfaces: {exc}") from None
        self._config = LanSubscriber(service_type, namespace, interfaces)
        self.record_ttl = _checks.integer("record_ttl", record_ttl, minimum=1)

    @property
    def namespace(self) -> str | None:
        """The namespace, or None for all."""
        return self._config.namespace

    def publisher(self) -> LanPublisher:
        """Return a new publisher (the caller closes it)."""
        return LanPublisher(self._config, self.record_ttl)

    def subscriber(self) -> LanSubscriber:
        """Return a pickle-safe subscriber."""
        return self._config

    def __repr__(self) -> str:
        return f"LanDiscovery({self.namespace!r}, service_type={self._config.service_type!r})"

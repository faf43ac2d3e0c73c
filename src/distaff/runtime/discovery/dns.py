"""Discovery by DNS: every address a name resolves to is a worker.

The name of a Kubernetes headless Service resolves to its ready pods' IPs;
an SRV name (``_grpc._tcp.workers``) gives hosts and ports. The platform
publishes; this side only follows (see ``_follow`` for the policy).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from ._addresses import join_host_port, split_host_port
from ._follow import follow_addresses
from .base import DiscoveryEvent

_FAILURES = (dns.exception.DNSException, OSError)


@dataclasses.dataclass(frozen=True)
class DnsDiscovery:
    """Follow the workers a DNS name resolves to (A/AAAA, or SRV).

    Subscribe-only: pickles as this configuration, so a proxy shipped to a
    worker follows the same name from there. Every ``refresh`` seconds (with
    jitter) the name is resolved again; new addresses are described
    (``Describe``), incompatible or draining workers are not admitted, and
    each admitted worker's health is watched so a draining one leaves at once.

    Args:
        name: the name to resolve (``workers``, ``workers.ns.svc``, or an SRV
            name such as ``_grpc._tcp.workers``). Relative names use the
            resolver's search list, as ``/etc/resolv.conf`` says.
        port: the workers' port for A/AAAA records (not used with SRV).
        srv: look up SRV records (implied by a name starting with ``_``).
        refresh: mean seconds between resolutions.
        nameservers: ``"host"`` or ``"host:port"`` servers to ask instead of
            the system resolver.

    Raises:
        ValueError: no port without SRV, a bad port, refresh or nameserver.
    """

    name: str
    port: int | None = None
    srv: bool = False
    refresh: float = 5.0
    nameservers: tuple[str, ...] | None = None

    def __init__(
        self,
        name: str,
        port: int | None = None,
        *,
        srv: bool = False,
        refresh: float = 5.0,
        nameservers: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        srv = srv or name.startswith("_")
        if not name or name.strip(".") == "":
            raise ValueError("DnsDiscovery needs a name to resolve")
        if not srv and port is None:
            raise ValueError(f"DnsDiscovery({name!r}) needs a port (or srv=True)")
        if port is not None and not 0 < port <= 65535:
            raise ValueError(f"port must be in 1..65535, not {port}")
        if not refresh > 0:
            raise ValueError(f"refresh must be > 0 seconds, not {refresh}")
        servers = None
        if nameservers is not None:
            servers = tuple(nameservers)
            for server in servers:
                split_host_port(server, 53)
        for attr, value in (
            ("name", name),
            ("port", port),
            ("srv", srv),
            ("refresh", float(refresh)),
            ("nameservers", servers),
        ):
            object.__setattr__(self, attr, value)

    def subscriber(self) -> DnsDiscovery:
        """This object: it is its own pickle-safe subscriber."""
        return self

    def publisher(self) -> Any:
        """DNS is published by the platform, not by distaff.

        Raises:
            TypeError: always.
        """
        raise TypeError(
            "DnsDiscovery only follows: the platform (a Kubernetes Service, your DNS) "
            "publishes the workers; run them with `--discovery none`"
        )

    def __aiter__(self) -> AsyncIterator[DiscoveryEvent]:
        """Open a subscription without credentials (plaintext workers)."""
        return self.with_credentials(None).__aiter__()

    def with_credentials(self, credentials: Any) -> _Subscription:
        """A subscription that dials workers with ``credentials`` (not pickled)."""
        return _Subscription(self, credentials)

    def _resolver(self) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=self.nameservers is None)
        if self.nameservers is not None:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*split_host_port(s, 53)) for s in self.nameservers
            ]
        resolver.lifetime = min(self.refresh, 5.0)
        return resolver

    async def current_addresses(self) -> list[str] | None:
        """Resolve the workers' addresses once (``distaff status``); None if nothing resolved."""
        return await self.resolve(self._resolver())

    async def resolve(self, resolver: dns.asyncresolver.Resolver) -> list[str] | None:
        """The current worker addresses; None when the name did not resolve."""
        if self.srv:
            return await self._resolve_srv(resolver)
        assert self.port is not None
        hosts = await _addresses(resolver, self.name)
        return None if not hosts else [join_host_port(h, self.port) for h in hosts]

    async def _resolve_srv(self, resolver: dns.asyncresolver.Resolver) -> list[str] | None:
        try:
            answer = await resolver.resolve(self.name, "SRV", search=True)
        except _FAILURES:
            return None
        targets = [(r.target.to_text(), r.port) for r in answer if r.target != dns.name.root]
        found = await asyncio.gather(*(_addresses(resolver, t) for t, _ in targets))
        addresses = [
            join_host_port(host, port)
            for hosts, (_, port) in zip(found, targets, strict=True)
            for host in hosts or ()
        ]
        return addresses or None

    def __repr__(self) -> str:
        where = f"srv={self.srv}" if self.srv else f"port={self.port}"
        return f"DnsDiscovery({self.name!r}, {where}, refresh={self.refresh})"


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str] | None:
    """A and AAAA addresses of ``name``; None if neither resolved."""

    async def query(kind: str) -> list[str]:
        try:
            answer = await resolver.resolve(name, kind, search=True)
        except _FAILURES:
            return []
        return [r.to_text() for r in answer]

    v4, v6 = await asyncio.gather(query("A"), query("AAAA"))
    return (v4 + v6) or None


class _Subscription:
    """A DnsDiscovery bound to live credentials; never pickled."""

    def __init__(self, config: DnsDiscovery, credentials: Any) -> None:
        self._config = config
        self._credentials = credentials

    def __aiter__(self) -> AsyncIterator[DiscoveryEvent]:
        config = self._config
        resolver = config._resolver()

        async def resolve() -> list[str] | None:
            return await config.resolve(resolver)

        return follow_addresses(resolve, refresh=config.refresh, credentials=self._credentials)

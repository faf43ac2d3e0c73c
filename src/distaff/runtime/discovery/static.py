"""Discovery from a fixed list of worker addresses."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ._addresses import is_ip, join_host_port, split_host_port
from ._follow import follow_addresses
from .base import DiscoveryEvent


@dataclasses.dataclass(frozen=True)
class StaticDiscovery:
    """Follow the workers at a fixed list of ``host:port`` addresses.

    Host names are resolved again on every refresh (every address a name
    resolves to is a worker); each address is described (``Describe``) and its
    health watched, as with :class:`DnsDiscovery`. Subscribe-only; pickles as
    this list.

    Args:
        addresses: ``"10.0.0.5:7400"``, ``"worker-2:7400"``, ``"[fd00::5]:7400"``.
        refresh: mean seconds between resolutions.

    Raises:
        ValueError: an empty list, a malformed address, or refresh <= 0.
    """

    addresses: tuple[str, ...]
    refresh: float = 5.0

    def __init__(self, addresses: Iterable[str], *, refresh: float = 5.0) -> None:
        if isinstance(addresses, str):
            raise ValueError("StaticDiscovery takes a list of addresses, not one string")
        listed = tuple(addresses)
        if not listed:
            raise ValueError("StaticDiscovery needs at least one address")
        for address in listed:
            split_host_port(address)
        if not refresh > 0:
            raise ValueError(f"refresh must be > 0 seconds, not {refresh}")
        object.__setattr__(self, "addresses", listed)
        object.__setattr__(self, "refresh", float(refresh))

    def subscriber(self) -> StaticDiscovery:
        """This object: it is its own pickle-safe subscriber."""
        return self

    def publisher(self) -> Any:
        """A static list is written by hand, not published.

        Raises:
            TypeError: always.
        """
        raise TypeError("StaticDiscovery only follows a fixed list; nothing publishes to it")

    def __aiter__(self) -> AsyncIterator[DiscoveryEvent]:
        """Open a subscription without credentials (plaintext workers)."""
        return self.with_credentials(None).__aiter__()

    def with_credentials(self, credentials: Any) -> _Subscription:
        """A subscription that dials workers with ``credentials`` (not pickled)."""
        return _Subscription(self, credentials)

    async def current_addresses(self) -> list[str] | None:
        """Resolve the workers' addresses once (``distaff status``); None if nothing resolved."""
        return await self.resolve()

    async def resolve(self) -> list[str] | None:
        """The listed addresses with host names resolved; None if none resolved."""
        found = await asyncio.gather(*(_resolve(a) for a in self.addresses))
        addresses = [address for group in found for address in group]
        return addresses or None


async def _resolve(address: str) -> list[str]:
    host, port = split_host_port(address)
    if is_ip(host):
        return [join_host_port(host, port)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    hosts = dict.fromkeys(str(info[4][0]) for info in infos)
    return [join_host_port(h, port) for h in hosts]


class _Subscription:
    """A StaticDiscovery bound to live credentials; never pickled."""

    def __init__(self, config: StaticDiscovery, credentials: Any) -> None:
        self._config = config
        self._credentials = credentials

    def __aiter__(self) -> AsyncIterator[DiscoveryEvent]:
        config = self._config
        return follow_addresses(
            config.resolve, refresh=config.refresh, credentials=self._credentials
        )

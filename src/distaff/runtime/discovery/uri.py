"""Discovery from a URI, for the CLI and configuration files."""

from __future__ import annotations

import urllib.parse
from typing import Any

from .base import DiscoveryLike

SCHEMES = ("dns", "dns+srv", "static", "local", "lan")


def discovery_from_uri(uri: str) -> DiscoveryLike:
    """Build the discovery a URI names.

    ``dns://NAME:PORT`` (DnsDiscovery), ``dns+srv://_grpc._tcp.NAME``
    (DnsDiscovery over SRV), ``static://H:P,H:P`` (StaticDiscovery),
    ``local://NAMESPACE`` (LocalDiscovery), ``lan://NAMESPACE`` (LanDiscovery;
    ``lan://`` for every namespace). ``dns``, ``dns+srv`` and ``static`` take
    ``?refresh=SECONDS``; ``dns`` and ``dns+srv`` take ``&nameserver=HOST[:PORT]``
    (repeatable).

    Raises:
        ValueError: an unknown scheme or a malformed URI, naming what is wrong.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            f"discovery URI {uri!r} must start with one of " + ", ".join(f"{s}://" for s in SCHEMES)
        )
    where, _, query = rest.partition("?")
    params = urllib.parse.parse_qs(query, strict_parsing=bool(query))
    unknown = set(params) - {"refresh", "nameserver"}
    if unknown:
        raise ValueError(f"discovery URI {uri!r}: unknown parameter(s) {sorted(unknown)}")
    options: dict[str, Any] = {}
    if "refresh" in params:
        options["refresh"] = float(params["refresh"][-1])
    if "nameserver" in params:
        if not scheme.startswith("dns"):
            raise ValueError(f"discovery URI {uri!r}: nameserver= is for dns:// only")
        options["nameservers"] = params["nameserver"]
    if options and scheme in ("local", "lan"):
        raise ValueError(f"discovery URI {uri!r}: {scheme}:// takes no parameters")
    return _build(scheme, where, options, uri)


def _build(scheme: str, where: str, options: dict[str, Any], uri: str) -> DiscoveryLike:
    if scheme == "dns":
        from ._addresses import split_host_port
        from .dns import DnsDiscovery

        name, port = split_host_port(where)
        return DnsDiscovery(name, port, **options)
    if scheme == "dns+srv":
        from .dns import DnsDiscovery

        if not where:
            raise ValueError(f"discovery URI {uri!r} names no SRV record")
        return DnsDiscovery(where, srv=True, **options)
    if scheme == "static":
        from .static import StaticDiscovery

        return StaticDiscovery([a for a in where.split(",") if a], **options)
    if scheme == "local":
        from .local import LocalDiscovery

        return LocalDiscovery(where or "default")
    from .lan import LanDiscovery

    return LanDiscovery(where or None)

"""``host:port`` parsing shared by the address-based discoveries."""

from __future__ import annotations

import ipaddress


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port``, ``[v6]:port`` (or a bare host with ``default_port``).

    Raises:
        ValueError: naming the malformed text.
    """
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected [v6]:port")
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"bad address {text!r}: expected host:port with a port in 1..65535")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, IPv6 hosts bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip(host: str) -> bool:
    """True if ``host`` is an IP literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

"""Private test LANs made of Linux network namespaces (root and iproute2).

``IsolatedLan(n)`` builds ``n`` "hosts" on one layer-2 segment::

    <prefix>-sw   switch namespace: lo, bridge br0, ports p0 .. p<n-1>
    <prefix>-h0   host namespace:   lo, eth0 = 10.253.0.1/24  (veth peer of p0)
    <prefix>-h1   host namespace:   lo, eth0 = 10.253.0.2/24  (veth peer of p1)
    ...

Every link is created inside a test namespace (the veth pair is made in the
switch namespace with its peer placed straight into the host namespace), so
nothing is ever added to the root namespace and no packet can leave the
segment: the namespaces have no route anywhere else. Multicast is on for
every link and bridge snooping is off, so mDNS floods the segment like a
plain switch would. Names carry this process's PID and a random token, so
concurrent runs never collide; namespaces left by runs that died without
cleaning up (their PID is gone) are removed on the next build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence

PREFIX = "distaff"
_STALE = re.compile(rf"{PREFIX}-(\d+)-[0-9a-f]+-(?:sw|h\d+)")


class NetnsUnavailable(Exception):
    """This machine cannot build namespaces (not root, no iproute2, forbidden)."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be built here, or None if they may be."""
    if os.geteuid() != 0:
        return "network namespaces need root (euid 0)"
    if shutil.which("ip") is None:
        return "iproute2 (the `ip` command) is not installed"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise ``RuntimeError`` with its stderr if it fails."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def namespaces() -> list[str]:
    """Names of the existing named network namespaces."""
    listing = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def remove_stale() -> None:
    """Delete our namespaces whose creating process no longer exists."""
    for name in namespaces():
        match = _STALE.fullmatch(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            ip("netns", "delete", name, check=False)


@dataclasses.dataclass(frozen=True)
class Host:
    """One host namespace on the segment."""

    netns: str
    address: str
    interface: str = "eth0"

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command in this namespace.

        ``ip netns exec`` (and ``setpriv``, when present) exec the command, so
        the child's PID is the command's PID. ``setpriv --pdeathsig KILL``
        makes the command die with the test process even if that is killed
        outright, before any cleanup could run.
        """
        guard = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        return ["ip", "netns", "exec", self.netns, *guard]


class IsolatedLan:
    """A bridge in its own namespace and ``hosts`` namespaces plugged into it.

    Use ``create()`` then ``destroy()`` (idempotent, also after a failed
    ``create``), or the class as a context manager.
    """

    def __init__(self, hosts: int, subnet: str = "10.253.0.0/24") -> None:
        network = ipaddress.ip_network(subnet)
        if hosts < 1 or hosts >= network.num_addresses - 2:
            raise ValueError(f"{hosts} hosts do not fit in {subnet}")
        self.prefixlen = network.prefixlen
        self.tag = f"{PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.switch = f"{self.tag}-sw"
        addresses = list(network.hosts())
        self.hosts: Sequence[Host] = tuple(
            Host(f"{self.tag}-h{i}", str(addresses[i])) for i in range(hosts)
        )
        self._made: list[str] = []

    def create(self) -> IsolatedLan:
        """Build the namespaces and links.

        Raises:
            NetnsUnavailable: not root, no ``ip``, or a namespace or a bridge
                cannot be created (a sandbox forbids it, no bridge support).
            RuntimeError: a later step failed (already undone).
        """
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        remove_stale()
        try:
            self._add_namespace(self.switch)
        except RuntimeError as exc:
            raise NetnsUnavailable(f"cannot create a network namespace: {exc}") from exc
        try:
            sw = ("-n", self.switch)
            ip(*sw, "link", "set", "lo", "up")
            try:
                ip(*sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            except RuntimeError as exc:
                raise NetnsUnavailable(f"cannot create a bridge: {exc}") from exc
            ip(*sw, "link", "set", "br0", "multicast", "on", "up")
            for i, host in enumerate(self.hosts):
                self._add_namespace(host.netns)
                port = f"p{i}"
                peer = ("peer", "name", host.interface, "netns", host.netns)
                ip(*sw, "link", "add", port, "type", "veth", *peer)
                ip(*sw, "link", "set", port, "master", "br0")
                ip(*sw, "link", "set", port, "multicast", "on", "up")
                hn = ("-n", host.netns)
                ip(*hn, "link", "set", "lo", "up")
                ip(*hn, "addr", "add", f"{host.address}/{self.prefixlen}", "dev", host.interface)
                ip(*hn, "link", "set", host.interface, "multicast", "on", "up")
                # mDNS goes out of eth0 whatever socket options a library sets
                ip(*hn, "route", "add", "224.0.0.0/4", "dev", host.interface)
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)

    def destroy(self) -> None:
        """Delete every namespace made (their links go with them); idempotent.

        A namespace with a process in it outlives its name, so any process
        still inside one (the test should have stopped its own) is killed
        first, by PID: only this run's processes can be in its namespaces.
        """
        made, self._made = self._made, []
        for name in made:
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for name in reversed(made):
            ip("netns", "delete", name, check=False)

    def __enter__(self) -> IsolatedLan:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

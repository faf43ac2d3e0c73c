"""A real DNS server for tests (``dnslib``), whose records can change while it runs.

In process: ``with DnsServer() as dns: dns.set({...}); dns.port``. As a process
(``python -m tests.dnsserver ADDRESS PORT ZONE.json``), it answers from a JSON
file that it reads again on every query, so a test changes the records by
rewriting the file (atomically, with ``write_zone``). Records::

    {"workers.test.": [["A", "10.0.0.1"], ["AAAA", "fd00::1"]],
     "_grpc._tcp.workers.test.": [["SRV", "w1.test.", 7400]]}

A name that is not listed answers NXDOMAIN; a listed name without records of
the asked type answers NOERROR with no data. TTL is 0: nothing is cached.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import threading
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

Zone = dict[str, list[list[Any]]]
_QUIET = DNSLogger(logf=lambda _: None)


def _rdata(kind: str, values: list[Any]) -> Any:
    if kind == "A":
        return A(values[0])
    if kind == "AAAA":
        return AAAA(values[0])
    if kind == "SRV":
        return SRV(priority=0, weight=0, port=int(values[1]), target=values[0])
    raise ValueError(f"unsupported record type {kind}")


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers from a zone returned by ``source()`` at each query."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower()
        zone = {k.lower(): v for k, v in self._source().items()}
        if name not in zone:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        wanted = QTYPE[request.q.qtype]
        for kind, *values in zone[name]:
            if kind == wanted:
                reply.add_answer(RR(name, getattr(QTYPE, kind), rdata=_rdata(kind, values), ttl=0))
        return reply


class DnsServer:
    """A UDP DNS server on ``address`` (loopback), answering from a mutable zone."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self._zone: Zone = {}
        self._lock = threading.Lock()
        self.queries = 0
        self._server = DNSServer(
            ZoneResolver(self._current), port=0, address=address, logger=_QUIET
        )
        self.address = address
        self.port: int = self._server.server.server_address[1]

    def _current(self) -> Zone:
        with self._lock:
            self.queries += 1
            return dict(self._zone)

    def set(self, zone: Zone) -> None:
        """Replace every record."""
        with self._lock:
            self._zone = dict(zone)

    @property
    def nameserver(self) -> str:
        return f"{self.address}:{self.port}"

    def __enter__(self) -> DnsServer:
        self._server.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
        self._server.server.server_close()


def write_zone(path: pathlib.Path, zone: Zone) -> None:
    """Replace the zone file atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(zone))
    os.replace(tmp, path)


def _serve(address: str, port: int, path: pathlib.Path) -> None:
    def load() -> Zone:
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    server = DNSServer(ZoneResolver(load), port=port, address=address, logger=_QUIET)
    print("ready", flush=True)
    server.start()  # serves in this thread until killed


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3]))

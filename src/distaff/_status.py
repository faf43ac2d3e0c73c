"""``distaff status``: what every worker of a pool is doing, from its Describe answer.

Workers are found through any discovery URI, then asked with ``Describe``
(which runs no user code). A worker that does not answer is a row saying
why. Exit status: 0 when every worker answered, 1 when some did not (or
none was found), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from typing import Any

import grpc
import grpc.aio

from .proxy.credentials import WorkerCredentials
from .runtime.discovery.base import DiscoveryEventType
from .runtime.discovery.uri import discovery_from_uri
from .serialization.metadata import WorkerMetadata
from .serialization.rpc import call_describe

DEFAULT_URI = "local://default"


@dataclasses.dataclass(frozen=True)
class WorkerStatus:
    """One row of ``distaff status``; ``--json`` prints these fields as they are."""

    address: str
    state: str  # serving, draining or unreachable
    uid: str = ""
    host: str = ""
    pid: int = 0
    version: str = ""
    tags: tuple[str, ...] = ()
    tls: bool = False
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    uptime_seconds: float = 0.0
    rss_bytes: int = 0
    metrics_port: int | None = None
    error: str | None = None


def add_status_command(commands: Any) -> None:
    """Add ``distaff status`` to the CLI's subcommands."""
    status = commands.add_parser(
        "status",
        help="show what every worker of a pool is doing",
        description=(
            "Find workers through a discovery URI and ask each what it is doing "
            "(Describe: runs no user code). Exit 0 when every worker answered, 1 when "
            "some did not or none was found, 2 on bad arguments."
        ),
    )
    status.add_argument(
        "uri",
        nargs="?",
        default=DEFAULT_URI,
        help="local://NS, lan://NS, dns://NAME:PORT, static://H:P,... (default local://default)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object per worker and line")
    status.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until interrupted"
    )
    status.add_argument(
        "--timeout", type=float, default=3.0, help="seconds each worker gets to answer (3)"
    )
    status.add_argument(
        "--wait",
        type=float,
        default=None,
        help="seconds to collect announcements for local:// and lan:// (0.5 and 3)",
    )
    status.add_argument("--ca", metavar="FILE", help="PEM file of the pool's certificate authority")
    status.add_argument("--cert", metavar="FILE", help="PEM file of this caller's certificate")
    status.add_argument("--key", metavar="FILE", help="PEM file of this caller's private key")
    status.add_argument("--token-file", metavar="FILE", help="the pool's bearer token")
    status.add_argument("--server-name", metavar="NAME", help="name in the workers' certificates")


def run_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``distaff status``; return the exit status."""
    try:
        discovery = discovery_from_uri(args.uri)
    except ValueError as exc:
        parser.error(str(exc))
    if args.watch is not None and not args.watch > 0:
        parser.error(f"--watch needs a positive number of seconds, not {args.watch}")
    if not args.timeout > 0:
        parser.error(f"--timeout needs a positive number of seconds, not {args.timeout}")
    if (args.cert and not args.key) or (args.key and not args.cert):
        parser.error("--cert and --key go together")
    if (args.cert or args.token_file) and not args.ca:
        parser.error("--cert/--key and --token-file need --ca")
    credentials = None
    if args.ca:
        credentials = WorkerCredentials.from_files(
            args.ca,
            args.cert,
            args.key,
            mutual=bool(args.cert),
            token_file=args.token_file,
            server_name=args.server_name,
        )
    wait = args.wait if args.wait is not None else (3.0 if args.uri.startswith("lan") else 0.5)
    try:
        return asyncio.run(_main(discovery, credentials, args, wait))
    except KeyboardInterrupt:
        return 130


async def _main(discovery: Any, credentials: Any, args: argparse.Namespace, wait: float) -> int:
    previous: tuple[float, int] | None = None
    while True:
        rows = await collect(discovery, credentials, wait=wait, timeout=args.timeout)
        now, done = time.monotonic(), sum(r.completed + r.failed for r in rows)
        rate = None if previous is None else (done - previous[1]) / (now - previous[0])
        previous = (now, done)
        if args.json:
            for row in rows:
                print(json.dumps(dataclasses.asdict(row)))
        else:
            if args.watch is not None and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")
            if not (sys.stdout.isatty() and _print_rich(rows, rate, args.uri)):
                print(render(rows, rate, args.uri))
        sys.stdout.flush()
        answered = bool(rows) and all(r.state != "unreachable" for r in rows)
        if args.watch is None:
            return 0 if answered else 1
        await asyncio.sleep(args.watch)


async def collect(
    discovery: Any, credentials: Any, *, wait: float, timeout: float
) -> list[WorkerStatus]:
    """Find the workers and ask each; unreachable ones come back as rows saying why."""
    found: list[tuple[str, WorkerMetadata | None]]
    addresses = getattr(discovery, "current_addresses", None)
    if addresses is not None:  # DNS, a static list: the addresses are all we know
        found = [(address, None) for address in await addresses() or ()]
    else:
        found = [(m.address, m) for m in await _announced(discovery, wait)]
    rows = await asyncio.gather(*(ask(a, m, credentials, timeout) for a, m in found))
    return sorted(rows, key=lambda r: (r.host, r.address))


async def _announced(discovery: Any, wait: float) -> list[WorkerMetadata]:
    """The workers a publishing discovery (local, LAN) announces within ``wait`` s."""
    workers: dict[str, WorkerMetadata] = {}
    subscription = discovery.subscriber().__aiter__()
    try:
        async with asyncio.timeout(wait):
            async for event in subscription:
                if event.type is DiscoveryEventType.WORKER_DROPPED:
                    workers.pop(event.metadata.uid, None)
                else:
                    workers[event.metadata.uid] = event.metadata
    except TimeoutError:
        pass
    finally:
        aclose = getattr(subscription, "aclose", None)
        if aclose is not None:
            await aclose()
    return list(workers.values())


async def ask(
    address: str, known: WorkerMetadata | None, credentials: Any, timeout: float
) -> WorkerStatus:
    """Describe the worker at ``address``; a row either way."""
    secure = known.secure if known is not None else credentials is not None
    if secure and credentials is None:
        return _unreachable(address, known, "serves TLS: pass --ca (and --cert/--key)")
    if secure:
        options = tuple(credentials.channel_options())
        channel = grpc.aio.secure_channel(address, credentials.channel_credentials(), options)
    else:
        channel = grpc.aio.insecure_channel(address)
    try:
        reply = await call_describe(channel, timeout)
    except grpc.aio.AioRpcError as exc:
        reason = f"{exc.code().name.lower()}: {exc.details() or 'no answer'}"
        return _unreachable(address, known, reason)
    finally:
        await channel.close()
    port = reply.options.get("metrics_port")
    return WorkerStatus(
        address=address,
        state="draining" if reply.draining else "serving",
        uid=reply.uid,
        host=reply.host,
        pid=reply.pid,
        version=reply.version,
        tags=tuple(sorted(reply.tags)),
        tls=reply.secure,
        in_flight=reply.in_flight,
        completed=reply.completed,
        failed=reply.failed,
        uptime_seconds=round(reply.uptime, 1),
        rss_bytes=reply.rss,
        metrics_port=int(port) if port and port.isdigit() else None,
    )


def _unreachable(address: str, known: WorkerMetadata | None, reason: str) -> WorkerStatus:
    if known is None:
        return WorkerStatus(address=address, state="unreachable", error=reason)
    return WorkerStatus(
        address=address,
        state="unreachable",
        uid=known.uid,
        host=known.host,
        pid=known.pid,
        version=known.version,
        tags=tuple(sorted(known.tags)),
        tls=known.secure,
        error=reason,
    )


COLUMNS = (
    "ADDRESS", "UID", "HOST", "PID", "VERSION", "TAGS", "TLS", "STATE",
    "IN FLIGHT", "DONE", "FAILED", "UPTIME", "RSS", "METRICS",
)  # fmt: skip


def _cells(row: WorkerStatus) -> list[str]:
    if row.state == "unreachable":
        known = [row.address, row.uid[:8], row.host, str(row.pid or ""), row.version]
        return [*known, ",".join(row.tags), "yes" if row.tls else "no", row.state] + [""] * 6
    return [
        row.address,
        row.uid[:8],
        row.host,
        str(row.pid),
        row.version,
        ",".join(row.tags),
        "yes" if row.tls else "no",
        row.state,
        str(row.in_flight),
        str(row.completed),
        str(row.failed),
        _duration(row.uptime_seconds),
        _size(row.rss_bytes),
        str(row.metrics_port or ""),
    ]


def render(rows: list[WorkerStatus], rate: float | None, uri: str) -> str:
    """The table and its summary line, as plain aligned text."""
    if not rows:
        return summary(rows, rate, uri)
    table = [list(COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    lines.extend(f"{r.address}: unreachable: {r.error}" for r in rows if r.error)
    return "\n".join([*lines, summary(rows, rate, uri)])


def _print_rich(rows: list[WorkerStatus], rate: float | None, uri: str) -> bool:
    """Print the table with ``rich`` on a terminal; False if it is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    table = Table(*COLUMNS, box=None, header_style="bold")
    for row in rows:
        table.add_row(*_cells(row), style="red" if row.state == "unreachable" else None)
    console = Console()
    console.print(table)
    for row in rows:
        if row.error:
            console.print(f"{row.address}: unreachable: {row.error}", markup=False)
    console.print(summary(rows, rate, uri), markup=False)
    return True


def summary(rows: list[WorkerStatus], rate: float | None, uri: str) -> str:
    """``3 workers (2 serving, 1 unreachable), 5 in flight, 12.0 calls/s``."""
    if not rows:
        return f"no workers found through {uri}"
    states: dict[str, int] = {}
    for row in rows:
        states[row.state] = states.get(row.state, 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    line = f"{len(rows)} workers ({counts}), {sum(r.in_flight for r in rows)} in flight"
    if rate is not None:
        line += f", {rate:.1f} calls/s"
    return line


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _size(size: int) -> str:
    if not size:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"

"""``distaff worker | status | certs``: the command line."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence

from . import _checks
from ._certs import add_certs_command, run_certs
from ._cli_worker import add_cluster_options, cluster_config
from ._exceptions import InsecureBindError, WorkerStartError
from ._logging import FORMATS, LEVELS
from ._logging import configure as configure_logging
from ._status import add_status_command, run_status
from ._version import __version__
from .proxy.credentials import WorkerCredentials
from .runtime.discovery.base import DiscoveryLike
from .runtime.worker import loops
from .runtime.worker.server import BindError, Worker, WorkerConfig, install_signal_handlers
from .serialization.metadata import WorkerMetadata


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distaff",
        description="distaff: run async Python routines on pools of worker processes.",
    )
    parser.add_argument("--version", action="version", version=f"distaff {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = commands.add_parser(
        "worker",
        help="run one durable worker in the foreground",
        description=(
            "Run one durable worker: serve routine calls on HOST:PORT, publish it "
            "through discovery, and on SIGTERM/SIGINT unpublish, drain in-flight "
            "calls for --grace seconds and exit 0. A worker runs any code a caller "
            "sends, so binding anything but loopback needs TLS that authenticates "
            "callers (--mutual or --token-file) or --insecure."
        ),
    )
    worker.add_argument(
        "--host", default="127.0.0.1", type=_host, help="address to bind (default 127.0.0.1)"
    )
    worker.add_argument(
        "--port",
        type=_checks.port_number,
        default=0,
        help="port to bind, 0..65535 (default 0: any free port)",
    )
    worker.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_checks.non_empty,
        metavar="TAG",
        help="a label pools can require (repeatable)",
    )
    worker.add_argument(
        "--discovery",
        choices=("lan", "local", "none"),
        default="local",
        help="lan: DNS-SD multicast on the network; local: this host only; "
        "none: do not publish (default local)",
    )
    worker.add_argument(
        "--namespace",
        default=None,
        type=_namespace,
        help="discovery namespace; only pools using the same one see this worker "
        "(default: 'default' for local, all for lan)",
    )
    worker.add_argument(
        "--grace",
        type=_checks.non_negative_seconds,
        default=30.0,
        help="seconds in-flight calls get to finish on shutdown (default 30)",
    )
    worker.add_argument(
        "--ca",
        metavar="FILE",
        type=_checks.existing_file,
        help="PEM file of the pool's certificate authority",
    )
    worker.add_argument(
        "--cert",
        metavar="FILE",
        type=_checks.existing_file,
        help="PEM file of this worker's certificate",
    )
    worker.add_argument(
        "--key",
        metavar="FILE",
        type=_checks.existing_file,
        help="PEM file of this worker's private key",
    )
    worker.add_argument(
        "--mutual",
        action="store_true",
        help="mutual TLS: require callers to present a certificate signed by --ca",
    )
    worker.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without TLS that authenticates callers; "
        "only on a trusted network",
    )
    worker.set_defaults(usage=worker)  # errors found after parsing show this usage
    worker.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        type=_checks.existing_directory,
        help="a directory to import routines' modules from, put on sys.path after the "
        "working directory (repeatable); the working directory is always there, "
        "as with 'python -m'",
    )
    add_cluster_options(worker)
    worker.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        default="WARNING",
        help="distaff's own log lines at this level and above (INFO: start, peers, drain, "
        "refused calls; never one per call); default WARNING",
    )
    worker.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text (one line each) or json (one object per line); default text",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on /metrics at this port (0: any free port; "
        "needs distaff[metrics])",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics are served on (default 127.0.0.1)",
    )
    worker.add_argument(
        "--metrics-routines",
        type=int,
        default=100,
        metavar="N",
        help="distinct routine names the metrics label; the rest count as 'other' (default 100)",
    )
    add_certs_command(commands)
    add_status_command(commands)
    return parser


def _namespace(text: str) -> str:
    from .runtime.discovery.local import validate_namespace

    try:
        return validate_namespace(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host(text: str) -> str:
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address or a name that resolves ({exc})"
        ) from None
    return text


def _import_path(extra: Sequence[str]) -> None:
    """Put the working directory, then ``--path`` dirs, first on ``sys.path``."""
    wanted = [os.getcwd(), *extra]
    rest = [p for p in sys.path if p not in wanted and p not in ("", ".")]
    sys.path[:] = [*dict.fromkeys(wanted), *rest]


def _discovery(kind: str, namespace: str | None) -> DiscoveryLike | None:
    if kind == "local":
        from .runtime.discovery.local import LocalDiscovery

        return LocalDiscovery(namespace or "default")
    if kind == "lan":
        from .runtime.discovery.lan import LanDiscovery

        return LanDiscovery(namespace)
    return None


async def _run_worker(config: WorkerConfig) -> None:
    worker = Worker(config)
    install_signal_handlers(worker)

    def ready(metadata: WorkerMetadata) -> None:
        print(f"distaff worker {metadata.uid} serving on {metadata.address}", flush=True)

    await worker.run(ready)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distaff`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "certs":
        return run_certs(args)
    if args.command == "status":
        return run_status(args, parser)
    usage: argparse.ArgumentParser = getattr(args, "usage", parser)
    tls = (args.ca, args.cert, args.key)
    if any(tls) and not all(tls):
        usage.error("TLS needs all three of --ca, --cert and --key")
    credentials = None
    if all(tls):
        try:
            credentials = WorkerCredentials.from_files(
                *tls, mutual=args.mutual, token_file=args.token_file, server_name=args.server_name
            )
        except (OSError, ValueError) as exc:
            usage.error(f"bad TLS files: {exc}")
    if (args.mutual or args.token_file) and credentials is None:
        usage.error("--mutual and --token-file need --ca, --cert and --key")
    _import_path(args.path)
    try:
        cluster = cluster_config(args)
    except ValueError as exc:
        usage.error(str(exc))
    config = WorkerConfig(
        host=args.host,
        port=args.port,
        tags=frozenset(args.tag),
        discovery=_discovery(args.discovery, args.namespace),
        credentials=credentials,
        insecure=args.insecure,
        grace=args.grace,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_routines=args.metrics_routines,
        **cluster,
    )
    configure_logging(args.log_level, args.log_format, config.uid)
    try:
        loops.run(_run_worker(config), config.event_loop)
    except (InsecureBindError, BindError, WorkerStartError) as exc:
        print(f"distaff worker: {exc}", file=sys.stderr)
        return 2
    finally:
        # the worker has stopped: a repeated SIGTERM must not turn a clean
        # exit into death by signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())

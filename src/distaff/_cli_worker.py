"""The ``distaff worker`` options for pools beyond one machine: health, advertise, tokens."""

from __future__ import annotations

import argparse
from typing import Any

from .runtime.worker import loops


def add_cluster_options(worker: argparse.ArgumentParser) -> None:
    """Add --health-port, --advertise, --token-file, --server-name, --ipc, and more."""
    worker.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="also serve the standard gRPC health service alone, in plaintext, on this "
        "port (for Kubernetes grpc: probes); it exposes nothing else",
    )
    worker.add_argument(
        "--advertise",
        metavar="HOST",
        help="the address to publish when binding a wildcard (e.g. the pod IP)",
    )
    worker.add_argument(
        "--token-file",
        metavar="FILE",
        help="authenticate callers by the bearer token in FILE (its first line), over TLS",
    )
    worker.add_argument(
        "--server-name",
        metavar="NAME",
        help="the name to expect in other workers' certificates on nested calls "
        "(when they are dialled by IP with a certificate for a service name)",
    )
    worker.add_argument(
        "--max-concurrency",
        type=_positive_int,
        metavar="N",
        help="run at most N calls at once (open streams count); over it, refuse new "
        "calls before unpickling them, so callers try another worker (default: no limit)",
    )
    worker.add_argument(
        "--event-loop",
        choices=loops.EVENT_LOOPS,
        help="the event loop to run on: uvloop if installed (auto, the default; "
        "pip install 'distaff[uvloop]'), asyncio, or uvloop; DISTAFF_WORKER_LOOP sets "
        "the default",
    )
    worker.add_argument(
        "--ipc",
        action="store_true",
        help="also serve sessions on a Unix socket that callers on this host, of this "
        "user, use instead of gRPC (Linux, plaintext workers; faster per call)",
    )
    # for tests only: report another Python version in Describe and metadata
    worker.add_argument("--pretend-python", help=argparse.SUPPRESS)


def cluster_config(args: argparse.Namespace) -> dict[str, Any]:
    """The WorkerConfig fields these options set.

    Raises:
        ValueError: ``DISTAFF_WORKER_LOOP`` names no event loop.
    """
    return {
        "advertise": args.advertise,
        "health_port": args.health_port,
        "pretend_python": args.pretend_python,
        "max_concurrency": args.max_concurrency,
        "event_loop": args.event_loop or loops.default(),
        "ipc": args.ipc,
    }


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value

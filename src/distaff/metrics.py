"""Caller-side Prometheus metrics (``pip install 'distaff[metrics]'``).

Nothing is measured until ``enable`` (or ``serve``) is called; before that,
and without this module imported, the dispatch path pays one ``None`` check
per event. Metrics, in the registry given to ``enable`` (the default
``prometheus_client`` registry otherwise)::

    distaff_caller_dispatches_total{outcome}   ok, no_workers, timeout, error, cancelled
    distaff_caller_attempts_total              workers asked to take a call
    distaff_caller_retries_total               calls run again by a retry policy
    distaff_caller_evictions_total             workers evicted after a failure
    distaff_caller_no_workers_total            NoWorkersAvailable raised
    distaff_caller_workers_admitted            workers admitted, over all pools
    distaff_caller_call_duration_seconds{routine}  coroutine calls, end to end

Example::

    import distaff.metrics
    distaff.metrics.serve(9100)      # http://127.0.0.1:9100/metrics
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from .proxy import observe
from .runtime.worker.metrics import DURATION_BUCKETS

__all__ = ["CallerMetrics", "disable", "enable", "serve"]


class CallerMetrics:
    """The caller's metrics; an observer of every pool in this process.

    Args:
        registry: where the metrics are registered.
        routines: distinct routine names the duration is labelled with; the
            rest are counted as ``other``.
    """

    def __init__(self, registry: CollectorRegistry, routines: int = 100) -> None:
        self.registry = registry
        self._labels = observe.RoutineLabels(routines)
        self._dispatches = Counter(
            "distaff_caller_dispatches",
            "Dispatches by outcome.",
            ("outcome",),
            registry=registry,
        )
        self._attempts = Counter(
            "distaff_caller_attempts", "Workers asked to take a call.", registry=registry
        )
        self._retries = Counter(
            "distaff_caller_retries", "Calls run again by a retry policy.", registry=registry
        )
        self._evictions = Counter(
            "distaff_caller_evictions", "Workers evicted after a failure.", registry=registry
        )
        self._no_workers = Counter(
            "distaff_caller_no_workers", "NoWorkersAvailable raised.", registry=registry
        )
        self._admitted = Gauge(
            "distaff_caller_workers_admitted",
            "Workers admitted, over all pools.",
            registry=registry,
        )
        self._duration = Histogram(
            "distaff_caller_call_duration_seconds",
            "Coroutine calls from dispatch to result, by routine.",
            ("routine",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._outcomes: dict[str, Any] = {}
        self._durations: dict[str, Any] = {}

    def dispatched(self, outcome: str) -> None:
        """Count a dispatch that ended with ``outcome``."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self._dispatches.labels(outcome)
        child.inc()
        if outcome == "no_workers":
            self._no_workers.inc()

    def attempted(self) -> None:
        """Count a worker asked to take a call."""
        self._attempts.inc()

    def evicted(self) -> None:
        """Count a worker evicted after a failure."""
        self._evictions.inc()

    def admitted(self, delta: int) -> None:
        """Workers joined or left."""
        self._admitted.inc(delta)

    def retried(self) -> None:
        """Count a retry."""
        self._retries.inc()

    def finished(self, routine: str, seconds: float) -> None:
        """Observe one coroutine call's end-to-end duration."""
        child = self._durations.get(routine)
        if child is None:
            child = self._durations[routine] = self._duration.labels(self._labels(routine))
        child.observe(seconds)


_lock = threading.Lock()
_enabled: CallerMetrics | None = None


def enable(registry: CollectorRegistry | None = None, *, routines: int = 100) -> CallerMetrics:
    """Start measuring this process's calls into ``registry``; idempotent.

    Raises:
        RuntimeError: already enabled with another registry.
    """
    global _enabled
    with _lock:
        registry = REGISTRY if registry is None else registry
        if _enabled is not None:
            if _enabled.registry is not registry:
                raise RuntimeError(
                    "distaff caller metrics are already enabled with another registry; "
                    "call distaff.metrics.disable() first"
                )
            return _enabled
        _enabled = CallerMetrics(registry, routines)
        observe.install(_enabled)
        return _enabled


def disable() -> None:
    """Stop measuring; the metrics stay registered with their last values."""
    global _enabled
    with _lock:
        _enabled = None
        observe.install(None)


def serve(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Enable the metrics and serve ``/metrics`` on ``host:port`` from a thread.

    Returns the HTTP server (``server.server_port`` is the bound port;
    ``server.shutdown()`` stops it) and its thread.
    """
    metrics = enable(registry)
    server, thread = start_http_server(port, host, registry=metrics.registry)
    return server, thread

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
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .proxy import observe
from .runtime.worker.metrics import DURATION_BUCKETS

__all__ = ["CallerMetrics", "disable", "enable", "serve"]

_COUNTERS = (
    ("attempts", "distaff_caller_attempts", "Workers asked to take a call."),
    ("retries", "distaff_caller_retries", "Calls run again by a retry policy."),
    ("evictions", "distaff_caller_evictions", "Workers evicted after a failure."),
    ("no_workers", "distaff_caller_no_workers", "NoWorkersAvailable raised."),
)


class CallerMetrics:
    """The caller's metrics: an observer of every pool in this process, and a collector.

    Events are counted in plain Python (a few dictionary operations, no
    locks) and turned into metrics when the registry is scraped.

    Args:
        routines: distinct routine names the duration is labelled with; the
            rest are counted as ``other``.
    """

    def __init__(self, routines: int = 100) -> None:
        self._labels = observe.RoutineLabels(routines)
        self._outcomes: dict[str, int] = {}
        self._counts = dict.fromkeys((key for key, _, _ in _COUNTERS), 0)
        self._admitted = 0
        self._durations = observe.Histograms(DURATION_BUCKETS)

    def dispatched(self, outcome: str) -> None:
        """Count a dispatch that ended with ``outcome``."""
        self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
        if outcome == "no_workers":
            self._counts["no_workers"] += 1

    def attempted(self) -> None:
        """Count a worker asked to take a call."""
        self._counts["attempts"] += 1

    def evicted(self) -> None:
        """Count a worker evicted after a failure."""
        self._counts["evictions"] += 1

    def admitted(self, delta: int) -> None:
        """Workers joined or left."""
        self._admitted += delta

    def retried(self) -> None:
        """Count a retry."""
        self._counts["retries"] += 1

    def finished(self, routine: str, seconds: float) -> None:
        """Observe one coroutine call's end-to-end duration."""
        self._durations.observe(self._labels(routine), seconds)

    def collect(self) -> Iterator[Metric]:
        """The metrics now (called by the registry at scrape time)."""
        dispatches = CounterMetricFamily(
            "distaff_caller_dispatches", "Dispatches by outcome.", labels=("outcome",)
        )
        for outcome, count in self._outcomes.copy().items():
            dispatches.add_metric((outcome,), count)
        yield dispatches
        for key, name, documentation in _COUNTERS:
            yield CounterMetricFamily(name, documentation, value=self._counts[key])
        yield GaugeMetricFamily(
            "distaff_caller_workers_admitted",
            "Workers admitted, over all pools (counted from enable()).",
            value=self._admitted,
        )
        duration = HistogramMetricFamily(
            "distaff_caller_call_duration_seconds",
            "Coroutine calls from dispatch to result, by routine.",
            labels=("routine",),
        )
        for routine, (buckets, total) in self._durations.snapshot().items():
            duration.add_metric((routine,), buckets, total)
        yield duration


_lock = threading.Lock()
_enabled: tuple[CallerMetrics, CollectorRegistry] | None = None


def enable(registry: CollectorRegistry | None = None, *, routines: int = 100) -> CallerMetrics:
    """Start measuring this process's calls into ``registry`` (default: the global one).

    Idempotent for the same registry.

    Raises:
        RuntimeError: already enabled with another registry.
    """
    global _enabled
    with _lock:
        registry = REGISTRY if registry is None else registry
        if _enabled is not None:
            if _enabled[1] is not registry:
                raise RuntimeError(
                    "distaff caller metrics are already enabled with another registry; "
                    "call distaff.metrics.disable() first"
                )
            return _enabled[0]
        metrics = CallerMetrics(routines)
        registry.register(metrics)
        _enabled = (metrics, registry)
        observe.install(metrics)
        return metrics


def disable() -> None:
    """Stop measuring and unregister the metrics; idempotent."""
    global _enabled
    with _lock:
        observe.install(None)
        if _enabled is not None:
            metrics, registry = _enabled
            _enabled = None
            registry.unregister(metrics)


def serve(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Enable the metrics and serve ``/metrics`` on ``host:port`` from a thread.

    Returns the HTTP server (``server.server_port`` is the bound port;
    ``server.shutdown()`` stops it) and its thread.
    """
    registry = REGISTRY if registry is None else registry
    enable(registry)
    server, thread = start_http_server(port, host, registry=registry)
    return server, thread

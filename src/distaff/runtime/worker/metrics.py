"""A worker's Prometheus metrics, served from a thread (``prometheus-client``).

Imported only when a worker is given a metrics port: without one nothing of
this module or of ``prometheus_client`` is loaded, and the service pays one
``None`` check per call.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import start_http_server
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "worker metrics need prometheus-client: pip install 'distaff[metrics]'"
    ) from exc

from ..._version import __version__
from ...proxy.observe import Histograms, RoutineLabels

# 100 µs to 60 s, about three buckets per decade
DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class WorkerMetrics:
    """The worker's metrics, kept in plain counters and turned into metrics at scrape time.

    Counting a call costs a few dictionary operations on the loop (no
    locks); the scrape, in the HTTP server's thread, reads a copy. Each
    worker has its own registry (several may share a process in tests).

    Args:
        in_flight: returns the number of calls running now.
        sessions: returns the number of caller sessions open now.
        routines: how many distinct routine names get their own label value.
        labels: extra labels of ``distaff_worker_info``.
    """

    def __init__(
        self,
        in_flight: Callable[[], int],
        routines: int = 100,
        labels: dict[str, str] | None = None,
        sessions: Callable[[], int] | None = None,
    ) -> None:
        self._in_flight = in_flight
        self._sessions = sessions
        self._labels = RoutineLabels(routines)
        self._calls: dict[tuple[str, str], int] = {}
        self._items: dict[str, int] = {}
        self._durations = Histograms(DURATION_BUCKETS)
        self._info = {"version": __version__, "python": platform.python_version(), **(labels or {})}
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def finished(self, routine: str, outcome: str, started: float) -> None:
        """Count one call that ended with ``outcome`` (``started``: its perf_counter)."""
        label = self._labels(routine)
        key = (label, outcome)
        self._calls[key] = self._calls.get(key, 0) + 1
        if outcome != "rejected":
            self._durations.observe(label, time.perf_counter() - started)

    def item(self, routine: str) -> None:
        """Count one item a generator call yielded."""
        label = self._labels(routine)
        self._items[label] = self._items.get(label, 0) + 1

    def collect(self) -> Iterator[Metric]:
        """The metrics now (called by the registry at scrape time)."""
        calls = CounterMetricFamily(
            "distaff_worker_calls",
            "Calls that ended on this worker, by routine and outcome.",
            labels=("routine", "outcome"),
        )
        for (routine, outcome), count in self._calls.copy().items():
            calls.add_metric((routine, outcome), count)
        yield calls
        duration = HistogramMetricFamily(
            "distaff_worker_call_duration_seconds",
            "Time from a call's start to its end on this worker.",
            labels=("routine",),
        )
        for routine, (buckets, total) in self._durations.snapshot().items():
            duration.add_metric((routine,), buckets, total)
        yield duration
        items = CounterMetricFamily(
            "distaff_worker_stream_items",
            "Items yielded by generator calls.",
            labels=("routine",),
        )
        for routine, count in self._items.copy().items():
            items.add_metric((routine,), count)
        yield items
        yield GaugeMetricFamily(
            "distaff_worker_calls_in_flight", "Calls running now.", value=self._in_flight()
        )
        if self._sessions is not None:
            yield GaugeMetricFamily(
                "distaff_worker_sessions",
                "Caller sessions open now (one per caller connection with calls in the"
                " last few seconds, or holding actors).",
                value=self._sessions(),
            )
        yield InfoMetricFamily("distaff_worker", "The worker's versions.", value=self._info)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; return the port."""
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

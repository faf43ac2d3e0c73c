"""A worker's Prometheus metrics, served from a thread (``prometheus-client``).

Imported only when a worker is given a metrics port: without one nothing of
this module or of ``prometheus_client`` is loaded, and the service pays one
``None`` check per call.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable
from typing import Any

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
    from prometheus_client.exposition import start_http_server
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "worker metrics need prometheus-client: pip install 'distaff[metrics]'"
    ) from exc

from ..._version import __version__
from ...proxy.observe import RoutineLabels

# 100 µs to 60 s, about three buckets per decade
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class WorkerMetrics:
    """The worker's metrics in their own registry (several workers may share a process).

    Args:
        in_flight: returns the number of calls running now (read at scrape time).
        routines: how many distinct routine names get their own label value.
    """

    def __init__(
        self,
        in_flight: Callable[[], int],
        routines: int = 100,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._labels = RoutineLabels(routines)
        self._calls = Counter(
            "distaff_worker_calls",
            "Calls that ended on this worker, by routine and outcome.",
            ("routine", "outcome"),
            registry=self.registry,
        )
        self._duration = Histogram(
            "distaff_worker_call_duration_seconds",
            "Time from a call's start to its end on this worker.",
            ("routine",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._items = Counter(
            "distaff_worker_stream_items",
            "Items yielded by generator calls.",
            ("routine",),
            registry=self.registry,
        )
        in_flight_gauge = Gauge(
            "distaff_worker_calls_in_flight", "Calls running now.", registry=self.registry
        )
        in_flight_gauge.set_function(lambda: float(in_flight()))
        info = Info("distaff_worker", "The worker's versions.", registry=self.registry)
        info.info({"version": __version__, "python": platform.python_version(), **(labels or {})})
        # labelled children, made once per (routine, outcome): .labels() per call costs
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._item_children: dict[str, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def finished(self, routine: str, outcome: str, started: float) -> None:
        """Count one call that ended with ``outcome`` (``started``: its perf_counter)."""
        key = (routine, outcome)
        children = self._children.get(key)
        if children is None:
            label = self._labels(routine)
            children = self._children[key] = (
                self._calls.labels(label, outcome),
                self._duration.labels(label),
            )
        calls, duration = children
        calls.inc()
        if outcome != "rejected":
            duration.observe(time.perf_counter() - started)

    def item(self, routine: str) -> None:
        """Count one item a generator call yielded."""
        child = self._item_children.get(routine)
        if child is None:
            child = self._item_children[routine] = self._items.labels(self._labels(routine))
        child.inc()

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

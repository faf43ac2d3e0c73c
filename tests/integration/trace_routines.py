"""Routines that report the span they run in; importing this sets up the OpenTelemetry SDK.

Each process that imports it (the test, and every worker that loads these
routines) records its spans in its own in-memory exporter.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import distaff

exporter = InMemorySpanExporter()
if not isinstance(trace.get_tracer_provider(), TracerProvider):
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(_provider)


def _here() -> dict[str, Any]:
    span = trace.get_current_span()
    context = span.get_span_context()
    parent = getattr(span, "parent", None)
    return {
        "pid": os.getpid(),
        "name": getattr(span, "name", ""),
        "trace_id": context.trace_id,
        "span_id": context.span_id,
        "parent_id": parent.span_id if parent is not None else None,
        "attributes": dict(getattr(span, "attributes", {}) or {}),
    }


@distaff.routine
async def inner() -> dict[str, Any]:
    """Report the span this call runs in."""
    return _here()


@distaff.routine
async def outer() -> tuple[dict[str, Any], dict[str, Any]]:
    """Report this call's span and that of a nested call."""
    return _here(), await inner()


@distaff.routine
async def finished_spans() -> tuple[int, list[tuple[str, int, int | None]]]:
    """This worker's PID and the spans it has ended: (name, span id, parent span id)."""
    return os.getpid(), [
        (s.name, s.context.span_id, s.parent.span_id if s.parent else None)
        for s in exporter.get_finished_spans()
    ]

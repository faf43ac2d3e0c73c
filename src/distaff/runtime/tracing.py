"""Trace context across calls (OpenTelemetry, when ``opentelemetry-api`` is installed).

A caller stamps each task with its current span's W3C ``traceparent``; the
worker runs the body inside a child span ``distaff <routine qualname>``, so
calls the body makes continue the same trace. Without the package nothing is
imported (one failed import attempt, remembered) and tasks carry nothing.
Spans are recorded by whatever ``TracerProvider`` the process configured
(the API alone records nothing, but still passes the context on).
"""

from __future__ import annotations

import contextlib
from typing import Any

_UNKNOWN: Any = object()
_api: Any = _UNKNOWN
_otel_context: Any = None  # opentelemetry.context, once imported


def _opentelemetry() -> Any:
    """The ``opentelemetry.trace`` module, or None when it is not installed."""
    global _api
    if _api is _UNKNOWN:
        global _otel_context
        try:
            from opentelemetry import context, trace
        except ImportError:
            _api = None
        else:
            _otel_context = context
            _api = trace
    return _api


def current_traceparent() -> str:
    """The current span's ``traceparent``; "" when there is none (or no OpenTelemetry)."""
    trace = _api if _api is not _UNKNOWN else _opentelemetry()
    if trace is None:
        return ""
    if not _otel_context.get_current():  # nothing set at all: the common case, two calls
        return ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parse_traceparent(header: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` from a W3C traceparent; None if malformed."""
    parts = header.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[0]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id or parts[0] == "ff":
        return None
    return trace_id, span_id, flags


def worker_span(
    traceparent: str, routine: str, attributes: dict[str, Any]
) -> contextlib.AbstractContextManager[Any]:
    """The span a worker runs a call's body in: a child of the caller's span.

    A null context when the call carries no trace context or OpenTelemetry
    is missing (or the header is malformed: tracing never fails a call).
    """
    trace = _opentelemetry() if traceparent else None
    parsed = parse_traceparent(traceparent) if trace is not None else None
    if trace is None or parsed is None:
        return contextlib.nullcontext()
    trace_id, span_id, flags = parsed
    parent = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags)
    )
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    tracer = trace.get_tracer("distaff")
    return tracer.start_as_current_span(  # type: ignore[no-any-return]
        f"distaff {routine}", context=context, kind=trace.SpanKind.SERVER, attributes=attributes
    )

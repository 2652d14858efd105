"""OpenTelemetry at the outbox, optional (``pip install outboxkit[otel]``).

Without ``opentelemetry-api`` installed nothing here imports it and nothing
changes: rows, wire entries and log lines stay as they were. With it, every
published message gets a ``create`` span (kind PRODUCER, the OpenTelemetry
messaging conventions) and the W3C trace context of that span is stored in the
row's headers as ``traceparent`` / ``tracestate``. The relay moves them to the
CloudEvents distributed-tracing attributes of the broker entry
(:func:`outbox.encode_entry`), and the consumer continues the trace from there
(docs/tracing.md, docs/wire-format.md).

Headers rather than two new columns: no migration, and the dead-letter table,
``dead-letters retry`` and the SQL-table broker carry them unchanged.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Mapping, MutableMapping
from functools import cache
from types import ModuleType
from typing import Any

__all__ = [
    "MESSAGING_SYSTEM",
    "TRACEPARENT",
    "TRACESTATE",
    "add_trace_ids",
    "creation_headers",
    "otel_installed",
    "tracer",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MESSAGING_SYSTEM = "outboxkit"
"""``messaging.system`` of every outboxkit span; the broker is in ``outboxkit.broker``."""
_SCOPE = "outboxkit"


@cache
def otel_installed() -> bool:
    """Whether ``opentelemetry-api`` can be imported (looked up once, imported only when used)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
        return False


def _trace() -> ModuleType:
    from opentelemetry import trace  # noqa: PLC0415 - optional dependency, imported on first use

    return trace


_tracers: dict[int, Any] = {}  # per provider (tests and applications may replace it): get_tracer is not free


def tracer() -> Any:  # noqa: ANN401 - opentelemetry.trace.Tracer, whose package is optional
    """The outboxkit tracer of the current global tracer provider."""
    from outbox import __version__  # noqa: PLC0415 - avoid an import cycle at module load

    provider = _trace().get_tracer_provider()
    found = _tracers.get(id(provider))
    if found is None or found[0] is not provider:
        found = (provider, provider.get_tracer(_SCOPE, __version__))
        _tracers.clear()  # one provider at a time; keeps no stale one alive
        _tracers[id(provider)] = found
    return found[1]


@cache
def _propagator() -> Any:  # noqa: ANN401 - TraceContextTextMapPropagator
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415 - optional dependency
        TraceContextTextMapPropagator,
    )

    return TraceContextTextMapPropagator()


def _inject(context: Any = None) -> dict[str, str]:  # noqa: ANN401
    carrier: dict[str, str] = {}
    _propagator().inject(carrier, context=context)
    return carrier


def _sdk_absent(trace: ModuleType) -> bool:
    """No provider was set (the API's proxy): no span would record, skip the work."""
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def creation_headers(
    topic: str, message_id: uuid.UUID, user_headers: Mapping[str, str] | None
) -> dict[str, str]:
    """Start and end the ``create`` span of one message; return the headers that carry its context.

    Empty when OpenTelemetry is not installed, when no SDK records spans and no
    trace is active, or when the caller set ``traceparent`` itself (theirs wins).
    """
    if not otel_installed() or (user_headers is not None and TRACEPARENT in user_headers):
        return {}
    trace = _trace()
    if _sdk_absent(trace):  # nothing records; carry a context another library made current, if any
        return _inject() if trace.get_current_span().get_span_context().is_valid else {}
    span = tracer().start_span(
        f"create {topic}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
            "messaging.destination.name": topic,
            "messaging.message.id": str(message_id),
        },
    )
    try:
        # No SDK: the span does not record, and the caller's context (if any) is carried instead.
        context = trace.set_span_in_context(span) if span.get_span_context().is_valid else None
        return _inject(context)
    finally:
        span.end()


def add_trace_ids(_: object, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: add ``trace_id`` and ``span_id`` (hex) while a recording span is active.

    Looks only if OpenTelemetry was already imported by someone: a log line
    never imports it.
    """
    if "opentelemetry.trace" not in sys.modules:
        return event_dict
    context = sys.modules["opentelemetry.trace"].get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict

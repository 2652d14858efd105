"""The consumer's ``process`` span, continued from the message's trace context (OpenTelemetry, optional).

The span (kind CONSUMER) is the child of the message's ``create`` span, so the
handler's work is in the producer's trace, and also *links* to it, as the
messaging conventions ask. Everything the handler does inside — its own spans,
the follow-up messages it publishes (their ``create`` spans) and saga
transitions — is inside the span, so a choreography or a saga stays one trace.

An incoming ``traceparent`` that is malformed or oversized is ignored: the span
starts a new trace, ``outboxkit_inbox_trace_context_ignored_total{reason}`` counts
it, and the first of each reason is logged (once per process, without the value:
a header is data from outside). It never fails the message. A bad ``tracestate``
alone is dropped and the ``traceparent`` kept.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any

import structlog

from outbox import Envelope
from outbox._tracing import MESSAGING_SYSTEM, TRACEPARENT, TRACESTATE, otel_installed, tracer

from . import _metrics as m

__all__ = ["check_trace_context", "process_span"]

log = structlog.get_logger("inbox")

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; a later
# version may append fields after a dash. 512 characters is the W3C limit
# for tracestate and far above any real traceparent: beyond it is an attack or a bug.
_TRACEPARENT = re.compile(
    r"(?P<v>[0-9a-f]{2})-(?P<t>[0-9a-f]{32})-(?P<p>[0-9a-f]{16})-[0-9a-f]{2}(-.*)?", re.DOTALL
)
MAX_TRACE_HEADER = 512
_logged: set[str] = set()
_logged_lock = threading.Lock()


def check_trace_context(traceparent: str | None, tracestate: str | None) -> tuple[dict[str, str], str | None]:
    """The carrier to extract from, and why part of it was ignored (``None`` when nothing was)."""
    if traceparent is None:
        return {}, None
    reason = _traceparent_problem(traceparent)
    if reason is not None:
        return {}, reason
    carrier = {TRACEPARENT: traceparent}
    if tracestate is None:
        return carrier, None
    if len(tracestate) > MAX_TRACE_HEADER or not tracestate.isascii():
        return carrier, "tracestate_invalid"
    carrier[TRACESTATE] = tracestate
    return carrier, None


def _traceparent_problem(value: str) -> str | None:
    if len(value) > MAX_TRACE_HEADER:
        return "traceparent_oversized"
    match = _TRACEPARENT.fullmatch(value)
    if (
        match is None
        or match["v"] == "ff"
        or (match["v"] == "00" and len(value) != 55)  # noqa: PLR2004 - the length of a version-00 header
        or set(match["t"]) == {"0"}
        or set(match["p"]) == {"0"}
    ):
        return "traceparent_malformed"
    return None


def _ignored(consumer: str, reason: str, message: Envelope) -> None:
    m.TRACE_CONTEXT_IGNORED.labels(consumer, reason).inc()
    with _logged_lock:
        first = reason not in _logged
        _logged.add(reason)
    if first:
        log.warning(
            "inbox.trace_context_ignored",
            consumer=consumer,
            reason=reason,
            message_id=str(message.id),
            consequence="the handler's span starts a new trace; the message is processed as usual"
            " (logged once per reason, counted in outboxkit_inbox_trace_context_ignored_total)",
        )


def _parent(message: Envelope, consumer: str) -> tuple[Any, list[Any]]:
    from opentelemetry import trace  # noqa: PLC0415 - optional dependency
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    carrier, reason = check_trace_context(message.traceparent, message.tracestate)
    if reason is not None:
        _ignored(consumer, reason, message)
    if not carrier:
        return None, []
    context = TraceContextTextMapPropagator().extract(carrier)
    creation = trace.get_current_span(context).get_span_context()
    return (context, [trace.Link(creation)]) if creation.is_valid else (None, [])


@contextlib.contextmanager
def process_span(message: Envelope, *, consumer: str, stream: str, attempt: int) -> Iterator[None]:
    """Run one handling attempt inside its ``process`` span (a no-op without OpenTelemetry)."""
    if not otel_installed():
        yield
        return
    from opentelemetry import trace  # noqa: PLC0415 - optional dependency

    parent, links = _parent(message, consumer)
    attributes: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": message.topic,
        "messaging.message.id": str(message.id),
        "messaging.consumer.group.name": consumer,
        "outboxkit.stream": stream,
        "outboxkit.delivery": attempt,
    }
    with tracer().start_as_current_span(
        f"process {message.topic}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes,
        links=links,
    ):  # fmt: skip
        yield

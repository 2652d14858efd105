"""The relay's ``send`` span (OpenTelemetry messaging conventions), when OpenTelemetry is installed.

One span per batch, kind PRODUCER, with a *link* to each traced message's
``create`` span: a batch carries messages of many traces, so it can be the child
of none of them (the conventions' batch ``send``). The message keeps its
creation context on the wire, unchanged, so the consumer's ``process`` span
continues the producer's trace whether or not the relay is traced, and after a
relay crash the redelivered copy carries the same context.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from outbox._tracing import MESSAGING_SYSTEM, TRACEPARENT, TRACESTATE, otel_installed, tracer

from ._store import ClaimedRow

__all__ = ["send_span"]

_MAX_LINKS = 128  # the SDK's default link limit; a larger batch links its first 128 messages


def _links(batch: Sequence[ClaimedRow]) -> list[Any]:
    from opentelemetry import trace  # noqa: PLC0415 - optional dependency
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    propagator = TraceContextTextMapPropagator()
    links = []
    for row in batch:
        if '"traceparent"' not in row.headers:  # untraced rows cost a substring search
            continue
        headers = json.loads(row.headers)
        carrier = {k: headers[k] for k in (TRACEPARENT, TRACESTATE) if isinstance(headers.get(k), str)}
        context = trace.get_current_span(propagator.extract(carrier)).get_span_context()
        if context.is_valid:
            links.append(trace.Link(context, {"messaging.message.id": str(row.message_id)}))
            if len(links) == _MAX_LINKS:
                break
    return links


@contextlib.contextmanager
def send_span(batch: Sequence[ClaimedRow], broker: str) -> Iterator[None]:
    """Run the broker round trip of one batch inside its ``send`` span (a no-op without OpenTelemetry)."""
    if not otel_installed():
        yield
        return
    from opentelemetry import trace  # noqa: PLC0415 - optional dependency

    topics = {row.topic for row in batch}
    attributes: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.batch.message_count": len(batch),
        "outboxkit.broker": broker,
    }
    if len(topics) == 1:
        attributes["messaging.destination.name"] = next(iter(topics))
    elif len(batch) == 1:
        attributes["messaging.message.id"] = str(batch[0].message_id)
    name = f"send {next(iter(topics))}" if len(topics) == 1 else "send"
    with tracer().start_as_current_span(
        name, kind=trace.SpanKind.PRODUCER, attributes=attributes, links=_links(batch)
    ):
        yield

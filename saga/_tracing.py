"""Saga transitions as OpenTelemetry spans (when OpenTelemetry is installed).

Each orchestrator transition — start, a reply, a timer — runs inside a span
``saga <event>`` (kind INTERNAL). Called from a consumer's handler it is the
child of that message's ``process`` span, and the commands it publishes are
created inside it, so an orchestrated saga is one trace from the request that
started it to its last compensation. :func:`annotate` adds the saga's id, type
and the states before and after, once the transition is computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from outbox._tracing import otel_installed, tracer

from ._model import SagaInstance, SagaState

__all__ = ["annotate", "transition_span"]


@contextlib.contextmanager
def transition_span(event: str) -> Iterator[None]:
    """Run one transition inside its span (a no-op without OpenTelemetry)."""
    if not otel_installed():
        yield
        return
    with tracer().start_as_current_span(f"saga {event}", attributes={"outboxkit.saga.event": event}):
        yield


def annotate(before: SagaState, after: SagaInstance) -> None:
    """Describe the transition on the current span, if one records."""
    if not otel_installed():
        return
    from opentelemetry import trace  # noqa: PLC0415 - optional dependency

    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "outboxkit.saga.id": str(after.id),
            "outboxkit.saga.type": after.type,
            "outboxkit.saga.state_before": before.value,
            "outboxkit.saga.state": after.state.value,
            "outboxkit.saga.step": after.step,
        }
    )

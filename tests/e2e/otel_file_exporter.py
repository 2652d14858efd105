"""``--otel-setup tests.e2e.otel_file_exporter:setup``: the SDK writing every span to a JSON-lines file.

For the tracing tests that run the relay and the consumer as real processes:
``OUTBOXKIT_TEST_SPANS_FILE`` names the file, shared by the processes (appends
of one line each). Spans are written as they end (a simple processor), so a
process killed with SIGKILL has written every span it finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


def _record(span: ReadableSpan) -> dict[str, object]:
    ctx = span.context
    assert ctx is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": None if span.parent is None else format(span.parent.span_id, "016x"),
        "links": [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
            }
            for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "service": (span.resource.attributes or {}).get("service.name"),
        "pid": os.getpid(),
    }


class JsonLinesExporter(SpanExporter):
    """Append one JSON object per span to a file."""

    def __init__(self, path: str) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(_record(span)) + "\n" for span in spans)
        with open(self._path, "a", encoding="utf-8") as out:  # noqa: PTH123
            out.write(lines)
        return SpanExportResult.SUCCESS


def setup() -> None:
    """Install the provider (called once by the daemon at start)."""
    resource = Resource.create({"service.name": os.environ.get("OUTBOXKIT_TEST_SERVICE", "outboxkit")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        SimpleSpanProcessor(JsonLinesExporter(os.environ["OUTBOXKIT_TEST_SPANS_FILE"]))
    )
    trace.set_tracer_provider(provider)

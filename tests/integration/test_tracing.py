"""Traces with the SDK's in-memory exporter: publish, the wire codec, the consumer's span, sagas (#13).

Messages go from outbox row to broker entry and back through the same codec as
the relay and the consumer (``encode_entry`` / ``decode_entry``), and handlers
run inside ``process_span`` as the consumer runs them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
import structlog.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

import inbox
import outbox
from inbox._tracing import process_span
from outbox import Envelope
from tests import _saga as s
from tests._tracing import hex_span, hex_trace, spans  # noqa: F401 - fixture

TOPIC = "orders.events"


def relay_rows(engine: sa.Engine) -> list[Envelope]:
    """Do what the relay and the consumer do with each unpublished row: encode, (broker), decode."""
    table = outbox.outbox_tables().outbox
    with engine.begin() as conn:
        rows = conn.execute(sa.select(table).where(table.c.published_at.is_(None)).order_by(table.c.id)).all()
        conn.execute(
            sa.update(table).where(table.c.published_at.is_(None)).values(published_at=sa.func.now())
        )
    return [
        outbox.decode_entry(
            outbox.encode_entry(
                message_id=r.message_id, topic=r.topic, type=r.type, source=r.source, key=r.key,
                time=r.created_at, headers_json=r.headers if isinstance(r.headers, str) else json.dumps(r.headers),
                data_json=r.payload if isinstance(r.payload, str) else json.dumps(r.payload),
            )
        )
        for r in rows
    ]  # fmt: skip


@contextmanager
def consumed(message: Envelope, consumer: str) -> Iterator[None]:
    with process_span(message, consumer=consumer, stream=message.topic, attempt=1):
        yield


def _named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    eng = s.make_engine(sqlite_url)
    s.domain.create_all(eng)
    yield eng
    eng.dispose()


def test_publish_stores_the_create_span_context_and_the_wire_carries_it_as_cloudevents_attributes(
    spans: InMemorySpanExporter,  # noqa: F811
    engine: sa.Engine,
) -> None:
    with (
        trace.get_tracer("test").start_as_current_span("POST /orders") as request,
        Session(engine) as session,
    ):
        with session.begin():
            message_id = outbox.publish(session, TOPIC, {"n": 1}, key="o-1", headers={"correlation_id": "c"})
    (create,) = _named(spans, "create ")
    assert create.name == f"create {TOPIC}"
    assert create.kind is trace.SpanKind.PRODUCER
    assert create.parent is not None
    assert create.parent.span_id == request.get_span_context().span_id
    assert create.attributes == {
        "messaging.system": "outboxkit", "messaging.operation.type": "create", "messaging.operation.name": "create",
        "messaging.destination.name": TOPIC, "messaging.message.id": str(message_id),
    }  # fmt: skip
    (row,) = s.messages(engine)
    assert row.headers["traceparent"].startswith(f"00-{hex_trace(create)}-{hex_span(create)}-")
    assert row.headers["correlation_id"] == "c"
    table = outbox.outbox_tables().outbox
    with engine.connect() as conn:
        r = conn.execute(sa.select(table)).one()
    fields = outbox.encode_entry(message_id=r.message_id, topic=r.topic, type=r.type, source=r.source, key=r.key,
                                 time=r.created_at, headers_json=r.headers, data_json=r.payload)  # fmt: skip
    assert fields["traceparent"] == row.headers["traceparent"]
    assert json.loads(fields["headers"]) == {"correlation_id": "c"}  # moved, not copied
    decoded = outbox.decode_entry(fields)
    assert decoded.traceparent == row.headers["traceparent"]
    assert decoded.headers == {"correlation_id": "c"}


def test_without_an_sdk_nothing_is_added(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        outbox.publish(session, TOPIC, {"n": 1}, headers={"a": "b"})
    (row,) = s.messages(engine)
    assert row.headers == {"a": "b"}


def test_a_traceparent_set_by_the_caller_wins(spans: InMemorySpanExporter, engine: sa.Engine) -> None:  # noqa: F811
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with Session(engine) as session, session.begin():
        outbox.publish(session, TOPIC, {"n": 1}, headers={"traceparent": theirs})
    (row,) = s.messages(engine)
    assert row.headers == {"traceparent": theirs}
    assert _named(spans, "create ") == []


def _ignored(reason: str) -> float:
    labels = {"consumer": "billing", "reason": reason}
    return REGISTRY.get_sample_value("outboxkit_inbox_trace_context_ignored_total", labels) or 0.0


@pytest.mark.parametrize(
    ("traceparent", "reason"),
    [
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "traceparent_malformed"),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", "traceparent_malformed"),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "traceparent_malformed"),
        ("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", "traceparent_malformed"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" + "-x" * 300, "traceparent_oversized"),
        ("\ufffd\ufffd", "traceparent_malformed"),
    ],
)
def test_a_bad_incoming_traceparent_is_ignored_counted_and_logged_once(
    spans: InMemorySpanExporter,  # noqa: F811
    traceparent: str,
    reason: str,
) -> None:
    message = Envelope(id=uuid.uuid4(), topic=TOPIC, type="t", source="s", key=None,
                       time=dt.datetime.now(dt.UTC), traceparent=traceparent)  # fmt: skip
    before = _ignored(reason)
    with consumed(message, "billing"):
        handled = True
    assert handled
    assert _ignored(reason) == before + 1
    (span,) = _named(spans, "process ")
    assert span.parent is None  # a new trace
    assert span.links == ()


def test_a_bad_tracestate_is_dropped_and_the_traceparent_kept() -> None:
    from inbox._tracing import check_trace_context  # noqa: PLC0415

    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert check_trace_context(good, "x" * 600) == ({"traceparent": good}, "tracestate_invalid")
    assert check_trace_context(good, "a=b") == ({"traceparent": good, "tracestate": "a=b"}, None)
    assert check_trace_context(None, "a=b") == ({}, None)


def test_log_lines_carry_trace_and_span_ids_inside_a_span(spans: InMemorySpanExporter) -> None:  # noqa: F811
    assert outbox.add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
    with trace.get_tracer("test").start_as_current_span("work") as span:
        event = outbox.add_trace_ids(None, "info", {"event": "x"})
    ctx = span.get_span_context()
    assert event == {
        "event": "x",
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
    }


def test_orchestrated_saga_is_one_trace_from_the_request_to_the_last_transition(
    spans: InMemorySpanExporter,  # noqa: F811
    engine: sa.Engine,
) -> None:
    orch = s.orchestrator()
    with trace.get_tracer("test").start_as_current_span("POST /orders") as request:
        saga_id = s.start(engine, orch)
    trace_id = request.get_span_context().trace_id
    for participant, topic in (("inventory", s.INVENTORY), ("payment", s.PAYMENT)):
        (command,) = [m for m in relay_rows(engine) if m.topic == topic]
        with consumed(command, participant):
            s.answer(engine, command, data={"payment_id": "p-1"})
        (reply,) = [m for m in relay_rows(engine) if m.topic == s.REPLIES]
        with consumed(reply, "orders"):
            s.deliver(engine, orch, reply)
    assert s.instance(engine, saga_id).state.value == "completed"
    transitions = _named(spans, "saga ")
    assert [t.name for t in transitions] == ["saga start", "saga reply", "saga reply"]
    assert transitions[-1].attributes["outboxkit.saga.state"] == "completed"
    assert transitions[-1].attributes["outboxkit.saga.id"] == str(saga_id)
    everything = spans.get_finished_spans()
    assert {span.context.trace_id for span in everything if span.context} == {trace_id}
    processes = _named(spans, "process ")
    assert len(processes) == 4
    for reply_transition in transitions[1:]:  # inside the orchestrator's process span
        assert reply_transition.parent is not None
        assert reply_transition.parent.span_id in {p.context.span_id for p in processes if p.context}


def test_choreographed_flow_is_one_trace_across_services(
    spans: InMemorySpanExporter,  # noqa: F811
    engine: sa.Engine,
) -> None:
    with (
        trace.get_tracer("test").start_as_current_span("POST /orders") as request,
        Session(engine) as session,
    ):
        with session.begin():
            outbox.publish(session, TOPIC, {"order_id": "o-1"}, key="o-1", type="OrderPlaced")
    (placed,) = relay_rows(engine)
    with consumed(placed, "payment"), Session(engine) as session, session.begin():
        inbox.publish_follow_up(
            session, placed, "payments.events", {"ok": True}, key="o-1", type="PaymentCharged"
        )
    (charged,) = relay_rows(engine)
    with consumed(charged, "orders"), Session(engine) as session, session.begin():
        inbox.publish_follow_up(session, charged, TOPIC, {"ok": True}, key="o-1", type="OrderConfirmed")
    (confirmed,) = relay_rows(engine)
    trace_id = request.get_span_context().trace_id
    creates = _named(spans, "create ")
    assert len(creates) == 3
    assert {span.context.trace_id for span in spans.get_finished_spans() if span.context} == {trace_id}
    assert confirmed.traceparent is not None
    assert confirmed.traceparent.startswith(f"00-{format(trace_id, '032x')}-{hex_span(creates[-1])}-")
    assert confirmed.correlation_id == str(placed.id)


def test_a_bad_traceparent_is_logged_once_per_reason_without_its_value(spans: InMemorySpanExporter) -> None:  # noqa: F811
    from inbox import _tracing  # noqa: PLC0415

    _tracing._logged.clear()
    bad = "00-zz-" + "x" * 40
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            message = Envelope(id=uuid.uuid4(), topic=TOPIC, type="t", source="s", key=None,
                               time=dt.datetime.now(dt.UTC), traceparent=bad)  # fmt: skip
            with consumed(message, "billing"):
                pass
    warnings = [e for e in logs if e["event"] == "inbox.trace_context_ignored"]
    assert len(warnings) == 1
    assert warnings[0]["reason"] == "traceparent_malformed"
    assert bad not in json.dumps(warnings[0])
    assert len(_named(spans, "process ")) == 3


_WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if outboxkit[otel] were not installed: any import fails
import datetime as dt, json, uuid
import sqlalchemy as sa
import outbox, relay, inbox, saga
from inbox._tracing import process_span
from relay._tracing import send_span
url = sys.argv[1]
engine = sa.create_engine(url)
with engine.begin() as conn:
    outbox.publish(conn, "orders.events", {"n": 1}, headers={"a": "b"})
row = engine.connect().execute(sa.select(outbox.outbox_tables().outbox)).one()
fields = outbox.encode_entry(message_id=row.message_id, topic=row.topic, type=row.type, source=row.source,
                             key=row.key, time=row.created_at, headers_json=row.headers, data_json=row.payload)
message = outbox.decode_entry({**fields, "traceparent": "garbage"})
with process_span(message, consumer="c", stream="s", attempt=1), send_span([], "redis"):
    pass
assert outbox.add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
loaded = sorted(name for name, module in sys.modules.items() if name.startswith("opentelemetry") and module)
print(json.dumps({"headers": json.loads(row.headers), "fields": sorted(fields), "loaded": loaded}))
"""


def test_without_opentelemetry_nothing_is_imported_and_nothing_changes(sqlite_url: str) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests._cli import REPO_ROOT, cli_env  # noqa: PLC0415

    result = subprocess.run([sys.executable, "-c", _WITHOUT_OTEL, sqlite_url], cwd=REPO_ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert doc["loaded"] == []
    assert doc["headers"] == {"a": "b"}
    assert "traceparent" not in doc["fields"]

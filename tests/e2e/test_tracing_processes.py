"""One trace from the request that published to the handler in another process (#13).

The test process publishes inside a request span (the SDK's in-memory
exporter); the relay and the consumer are real ``outboxkit`` processes
configured with ``--otel-setup`` to write their spans to a file. The handler's
``process`` span must be in the request's trace, the child of the message's
``create`` span, and linked to it; the relay's ``send`` span links to it too.
After a relay SIGKILL between publish and mark, the redelivered copy continues
the same trace.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import outbox
from tests._cli import REPO_ROOT, cli_env
from tests._inbox import count_effects, domain
from tests._tracing import file_spans, hex_span, hex_trace, spans  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e

TOPIC = "orders.created"  # the topic of tests/e2e/inbox_app.py


def _run(args: list[str], spans_file: Path, service: str, **env: str) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "outboxkit", "--log-format", "json",
         "--otel-setup", "tests.e2e.otel_file_exporter:setup", *args],
        cwd=REPO_ROOT, capture_output=True, timeout=90, check=False,
        env=cli_env(OUTBOXKIT_TEST_SPANS_FILE=str(spans_file), OUTBOXKIT_TEST_SERVICE=service, **env),
    )  # fmt: skip
    return result.returncode


def _publish_in_request(url: str, count: int) -> tuple[str, dict[str, str]]:
    """Publish ``count`` messages inside one request span; return its trace id and the message ids' create spans."""
    engine = create_engine(url, poolclass=NullPool)
    domain.create_all(engine)
    with trace.get_tracer("test").start_as_current_span("POST /orders") as request, engine.begin() as conn:
        ids = [str(outbox.publish(conn, TOPIC, {"n": n}, key=f"k{n}")) for n in range(count)]
    engine.dispose()
    return format(request.get_span_context().trace_id, "032x"), dict.fromkeys(ids, "")


def _by_message(records: list[dict[str, Any]], name: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["name"] == name:
            found.setdefault(str(record["attributes"]["messaging.message.id"]), []).append(record)
    return found


@pytest.mark.parametrize("relay_crash", [False, True], ids=["plain", "relay-sigkill-redelivery"])
def test_one_trace_from_the_request_to_the_handler_in_other_processes(
    relay_crash: bool,
    spans: InMemorySpanExporter,  # noqa: F811 - fixture
    pg_url: str,
    redis_url: str,
    stream_prefix: str,
    tmp_path: Path,
) -> None:
    trace_id, ids = _publish_in_request(pg_url, 3)
    creates = {str(s.attributes["messaging.message.id"]): s for s in spans.get_finished_spans()
               if s.name == f"create {TOPIC}"}  # fmt: skip
    assert set(creates) == set(ids)
    for span in creates.values():
        assert span.kind is trace.SpanKind.PRODUCER
        assert hex_trace(span) == trace_id
    spans_file = tmp_path / "spans.jsonl"
    relay_args = ["relay", "--db", pg_url, "--broker", redis_url, "--stream-prefix", stream_prefix, "--once"]
    if relay_crash:  # published to Redis, killed before the rows are marked: they go out again
        assert _run(relay_args, spans_file, "relay", OUTBOXKIT_CRASH_AT="relay.after_publish") == -9
    assert _run(relay_args, spans_file, "relay") == 0
    consume_args = ["consume", "tests.e2e.inbox_app:registry", "--db", pg_url, "--broker", redis_url,
                    "--group", "billing", "--stream-prefix", stream_prefix, "--once", "--retention", "0",
                    "--block", "0.2"]  # fmt: skip
    assert _run(consume_args, spans_file, "billing") == 0
    assert count_effects(pg_url) == 3  # the duplicates were recognised, not applied twice

    records = file_spans(spans_file)
    processed = _by_message(records, f"process {TOPIC}")
    assert set(processed) == set(ids)
    for message_id, copies in processed.items():
        assert len(copies) == (2 if relay_crash else 1)  # each copy on the stream is handled once
        create = creates[message_id]
        for span in copies:
            assert span["kind"] == "CONSUMER"
            assert span["service"] == "billing"
            assert span["trace_id"] == trace_id
            assert span["parent_span_id"] == hex_span(create)
            assert {"trace_id": trace_id, "span_id": hex_span(create)} in span["links"]
            assert span["attributes"]["messaging.consumer.group.name"] == "billing"
            assert span["attributes"]["messaging.destination.name"] == TOPIC
            assert span["attributes"]["messaging.system"] == "outboxkit"
    sends = [r for r in records if r["name"] == f"send {TOPIC}"]
    assert len(sends) == (2 if relay_crash else 1)
    assert len({s["pid"] for s in sends}) == len(sends)  # the crashed relay exported its span before dying
    for send in sends:
        assert send["kind"] == "PRODUCER"
        assert send["service"] == "relay"
        linked = {link["span_id"] for link in send["links"]}
        assert linked == {hex_span(s) for s in creates.values()}


def test_a_bad_otel_setup_is_one_line_and_exit_2() -> None:
    from tests._cli import run_cli  # noqa: PLC0415

    result = run_cli("--otel-setup", "tests.no_such_module:setup", "alerts")
    assert result.returncode == 2
    expected = "outboxkit: error: --otel-setup: cannot load 'tests.no_such_module:setup': No module named"
    assert result.stderr.strip().splitlines() == [f"{expected} 'tests.no_such_module'"]
    assert result.stdout == ""

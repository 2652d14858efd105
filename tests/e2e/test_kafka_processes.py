"""Kafka (Tansu) with real `outboxkit relay` and `outboxkit consume` processes: SIGKILL, restarts, bad input.

Longer variants (more kills, more events) run with ``OUTBOXKIT_KAFKA_LONG=1``
(docs/testing.md).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from sqlalchemy import create_engine, select

from inbox.tables import consumer_offset
from tests._cli import run_cli
from tests._inbox import count_effects, domain, entry
from tests._kafka import KafkaEndpoint, committed_offset, create_topic, produce_fields, read_fields
from tests._relay_support import assert_complete_and_ordered, outbox_count, wait_until
from tests.e2e.test_consume_crash import Consumer
from tests.e2e.test_relay_processes import RelayProcess, Writers

pytestmark = pytest.mark.e2e
LONG = bool(os.environ.get("OUTBOXKIT_KAFKA_LONG"))


def _relay_args(pg_url: str, kafka_url: str, prefix: str) -> list[str]:
    return ["--db", pg_url, "--broker", kafka_url, "--stream-prefix", prefix, "--poll-interval", "0.1",
            "--lease-ttl", "2", "--batch-size", "50"]  # fmt: skip


def test_kafka_relays_killed_keep_every_event_in_key_order(
    pg_url: str, kafka_server: KafkaEndpoint, kafka_prefix: str, tmp_path: Path
) -> None:
    """Two relays share the partitions while writers commit; SIGKILLed and replaced: nothing lost, key order holds."""
    topic = f"{kafka_prefix}orders"
    create_topic(kafka_server.bootstrap, topic)
    args = _relay_args(pg_url, kafka_server.url, kafka_prefix)
    kills = 6 if LONG else 2
    survivor = RelayProcess(tmp_path / "survivor.log", *args)
    try:
        with Writers(pg_url) as writers:
            for i in range(kills):
                victim = RelayProcess(tmp_path / f"victim{i}.log", *args)
                time.sleep(1.5)
                victim.kill()
        wait_until(lambda: outbox_count(pg_url) == 0, timeout=60)
        survivor.signal(signal.SIGTERM)
        assert survivor.wait(15) == 0
    finally:
        survivor.kill()
    assert len(writers.ids) > 100
    assert_complete_and_ordered(read_fields(kafka_server.bootstrap, topic), writers.ids)


@pytest.fixture
def app_db(pg_url: str) -> str:
    engine = create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    return pg_url


def _consume(tmp_path: Path, name: str, app_db: str, kafka_url: str, prefix: str, **env: str) -> Consumer:
    # A group of its own per test: a group's rebalance waits for every member it knows.
    args = ["--db", app_db, "--broker", kafka_url, "--group", f"{prefix}billing", "--stream-prefix", prefix,
            "--lease-ttl", "2", "--claim-idle", "1", "--block", "0.2", "--retry-delay", "0.01",
            "--retention", "0", "--shutdown-timeout", "5"]  # fmt: skip
    return Consumer(tmp_path, name, args, env)


def _db_position(url: str, group: str, stream: str) -> int | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = select(consumer_offset.c.next_offset).where(
                consumer_offset.c.consumer == group, consumer_offset.c.stream == stream
            )
            return conn.execute(query).scalar()
    finally:
        engine.dispose()


def test_kafka_consumer_killed_after_commit_resumes_from_the_database_offset(
    app_db: str, kafka_server: KafkaEndpoint, kafka_prefix: str, tmp_path: Path
) -> None:
    """SIGKILL after the database commit, before the Kafka commit: the restart starts at the stored offset.

    The stored offset commits with the effect, so the next consumer neither
    repeats the effect nor even sees the record again (no duplicate skipped).
    """
    stream, group = f"{kafka_prefix}orders.created", f"{kafka_prefix}billing"
    bootstrap = kafka_server.bootstrap
    for n in (1, 2, 3):
        produce_fields(bootstrap, stream, entry(payload={"n": n}))
    a = _consume(tmp_path, "a", app_db, kafka_server.url, kafka_prefix, INBOX_E2E_KILL_AFTER_COMMIT="1")
    try:
        assert a.wait(90) == -signal.SIGKILL
    finally:
        a.close()
    assert count_effects(app_db) == 1
    assert _db_position(app_db, group, stream) == 1  # committed with the effect of offset 0
    assert committed_offset(bootstrap, group, stream) is None  # Kafka never heard of it
    b = _consume(tmp_path, "b", app_db, kafka_server.url, kafka_prefix)
    try:
        wait_until(lambda: committed_offset(bootstrap, group, stream) == 3, timeout=60)
        b.proc.send_signal(signal.SIGTERM)
        assert b.wait(20) == 0
    finally:
        b.close()
    assert count_effects(app_db) == 3
    events = b.events()
    positioned = [e for e in events if e.get("event") == "inbox.partition_positioned"]
    assert [(e["stream"], e["offset"], e["source"]) for e in positioned] == [(stream, 1, "database")]
    assert not [e for e in events if e.get("event") == "inbox.duplicate_skipped"]
    assert _db_position(app_db, group, stream) == 3


@pytest.mark.skipif(not LONG, reason="~20 s of processes; in process: tests/integration/test_inbox_kafka.py")
def test_kafka_record_without_cloudevents_headers_is_dead_lettered_with_the_reason(
    app_db: str, kafka_server: KafkaEndpoint, kafka_prefix: str, tmp_path: Path
) -> None:
    """A foreign record (no ce_ headers) goes to the consumer dead-letter table; the next record is handled."""
    stream, group = f"{kafka_prefix}orders.created", f"{kafka_prefix}billing"
    create_topic(kafka_server.bootstrap, stream)
    producer = Producer({"bootstrap.servers": kafka_server.bootstrap})
    producer.produce(stream, value=b'{"not": "a cloudevent"}', key=b"k", partition=0)
    producer.flush(10)
    produce_fields(kafka_server.bootstrap, stream, entry(payload={"n": 7}))
    consumer = _consume(tmp_path, "c", app_db, kafka_server.url, kafka_prefix)
    try:
        wait_until(lambda: committed_offset(kafka_server.bootstrap, group, stream) == 2, timeout=60)
        consumer.proc.send_signal(signal.SIGTERM)
        assert consumer.wait(20) == 0
    finally:
        consumer.close()
    assert count_effects(app_db) == 1
    listed = run_cli("consumer-dead-letters", "list", "--db", app_db, "--group", group, "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(d["stream"], d["entry_id"], d["message_id"]) for d in letters] == [(stream, "0", None)]
    assert "missing field 'specversion'" in letters[0]["error"]


def test_kafka_bad_broker_url_is_one_line_exit_2_without_the_password(sqlite_url: str) -> None:
    """Unreachable or malformed kafka:// URLs: relay --once and consume --once print one line, exit 2, no password.

    More malformed URLs are covered without processes in tests/unit/test_kafka_units.py.
    """
    app = sqlite_url
    unreachable, malformed = "kafka://user:S3NTINEL-pw@127.0.0.1:1", "kafka://user:S3NTINEL-pw@host:notaport"
    consume = ("consume", "tests.e2e.inbox_app:registry", "--group", "billing", "--once", "--db", app)
    cases = [
        (("relay", "--db", app, "--once", "--broker", unreachable), "broker unavailable"),
        (("relay", "--db", app, "--once", "--broker", malformed), "invalid broker address"),
    ]
    if LONG:  # consume --once retries an unreachable broker five times before it gives up
        cases += [((*consume, "--broker", malformed), "invalid broker address"),
                  ((*consume, "--broker", unreachable), "broker unavailable")]  # fmt: skip
    for args, expected in cases:
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0]
        assert "S3NTINEL" not in result.stderr + result.stdout


@pytest.mark.skipif(
    not LONG, reason="~40 s: the whole order saga; set OUTBOXKIT_KAFKA_LONG=1 (docs/testing.md)"
)
def test_kafka_demo_runs_the_order_saga_consistently(kafka_server: KafkaEndpoint) -> None:
    """`outboxkit demo --broker kafka://...`: every order ends as planned, the consistency check passes."""
    result = run_cli("demo", "--broker", kafka_server.url)
    assert result.returncode == 0, result.stderr
    assert "All consistent" in result.stdout

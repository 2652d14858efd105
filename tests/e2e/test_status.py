"""`outboxkit status`: backlog, open transactions, consumer groups' lag and sagas, as text and JSON."""

from __future__ import annotations

import json
import time

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from outbox import publish
from tests._cli import run_cli
from tests._saga import make_engine, orchestrator, start

pytestmark = pytest.mark.e2e


def test_status_shows_consumer_group_lag_sagas_and_open_transactions(
    pg_url: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """After relaying 3 events to a group that read none, status shows lag 3, the running saga and a held transaction."""
    engine = make_engine(pg_url)
    with Session(engine) as session, session.begin():
        for n in range(3):
            publish(session, "orders.created", {"n": n}, key=f"o-{n}")
    relayed = run_cli(
        "relay", "--db", pg_url, "--broker", redis_url, "--stream-prefix", stream_prefix, "--once"
    )
    assert relayed.returncode == 0, relayed.stderr
    redis_client.xgroup_create(f"{stream_prefix}orders.created", "billing", id="0")
    start(engine, orchestrator(), order_id="o-9")
    held = engine.connect()
    held.begin()
    held.execute(sa.text("SELECT 1"))  # a transaction left open: status names it
    try:
        args = ["status", "--db", pg_url, "--broker", redis_url, "--stream-prefix", stream_prefix]
        time.sleep(5.5)  # past the 5 s after which status reports an open transaction
        text = run_cli(*args)
        report = json.loads(run_cli(*args, "--json").stdout)
    finally:
        held.close()
        engine.dispose()
    assert text.returncode == 0, text.stderr
    assert f"{stream_prefix}orders.created / billing: lag 3 (pending 0, behind 3)" in text.stdout
    assert "order: running 1" in text.stdout
    assert "transactions open over 5s: 1" in text.stdout
    [group] = report["consumer_groups"]
    assert (group["group"], group["lag"], group["behind"]) == ("billing", 3, 3)
    assert report["sagas"] == [{"type": "order", "state": "running", "count": 1}]
    assert report["open_transactions"]["count"] == 1


def test_status_counts_consumer_dead_letters_and_versions_json(pg_url: str) -> None:
    """A consumer's dead letter shows in text and JSON beside the relay's, and the JSON has a version (#9)."""
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outboxkit_inbox_dead_letter (consumer, stream, entry_id, fields, error,"
                " deliveries, dead_lettered_at) VALUES ('billing', 's', '1-0', '{}', 'boom', 5, now())"
            )
        )
    engine.dispose()
    text = run_cli("status", "--db", pg_url)
    report = json.loads(run_cli("status", "--db", pg_url, "--json").stdout)
    assert text.returncode == 0, text.stderr
    assert "relay dead letters: 0" in text.stdout
    assert "consumer dead letters: 1" in text.stdout
    assert "  consumer dead letters billing: 1" in text.stdout
    assert report["version"] == 1
    assert report["consumer_dead_letters_by_group"] == {"billing": 1}


def test_status_exits_nonzero_on_unreachable_broker(pg_url: str) -> None:
    """`status --broker` on a broker nobody listens on says UNREACHABLE and exits 1, text and JSON (#9)."""
    dead = "redis://127.0.0.1:1/0"
    text = run_cli("status", "--db", pg_url, "--broker", dead)
    as_json = run_cli("status", "--db", pg_url, "--broker", dead, "--json")
    assert text.returncode == 1, text.stderr
    assert "UNREACHABLE" in text.stdout
    assert as_json.returncode == 1, as_json.stderr
    assert json.loads(as_json.stdout)["broker"]["reachable"] is False


def test_cli_help_names_localhost_metrics_and_consumer_database() -> None:
    """`relay` binds metrics to 127.0.0.1 by default like `consume`, and consumer-dead-letters' --db is the consumer's (#9)."""
    relay_help = run_cli("relay", "--help")
    consume_help = run_cli("consume", "--help")
    letters_help = run_cli("consumer-dead-letters", "list", "--help")
    assert relay_help.returncode == consume_help.returncode == letters_help.returncode == 0
    assert "0.0.0.0]" not in relay_help.stdout
    assert "127.0.0.1" in " ".join(relay_help.stdout.split())
    assert "127.0.0.1" in " ".join(consume_help.stdout.split())
    assert "outbox" not in " ".join(letters_help.stdout.split()).split("--db")[1].split("--group")[0]
    assert "Database URL of the consumer" in " ".join(letters_help.stdout.split())


def test_cli_warns_on_unknown_outboxkit_variable(pg_url: str) -> None:
    """A misspelt OUTBOXKIT_* variable gets one warning line naming it, never its value; known ones none (#9)."""
    result = run_cli(
        "status",
        "--db",
        pg_url,
        OUTBOXKIT_BATCHSIZE="s3cret",
        OUTBOXKIT_STREAM_PREFIX="x",
        OUTBOXKIT_JSON="1",
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning: unknown environment" in line]
    assert warnings == [
        "outboxkit: warning: unknown environment variable OUTBOXKIT_BATCHSIZE is ignored",
        "outboxkit: warning: unknown environment variable OUTBOXKIT_JSON is ignored",
    ]
    assert "s3cret" not in result.stderr
    assert "OUTBOXKIT_STREAM_PREFIX" not in result.stderr


def test_consume_once_has_the_relays_environment_variable() -> None:
    """`consume --once` reads OUTBOXKIT_ONCE like `relay --once`, and no OUTBOXKIT_ONCE warning is printed (#9)."""
    consume_help = run_cli("consume", "--help", OUTBOXKIT_ONCE="1")
    relay_help = run_cli("relay", "--help")
    assert consume_help.returncode == relay_help.returncode == 0
    assert "OUTBOXKIT_ONCE" in consume_help.stdout
    assert "OUTBOXKIT_ONCE" in relay_help.stdout
    assert "unknown environment" not in consume_help.stderr

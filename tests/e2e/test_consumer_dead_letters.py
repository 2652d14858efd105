"""`outboxkit consumer-dead-letters`: list what a consumer gave up on, retry it once fixed, purge."""

from __future__ import annotations

import json

import pytest
import redis
import sqlalchemy as sa

from tests._cli import run_cli
from tests._inbox import count_effects, domain, entry

pytestmark = pytest.mark.e2e


def test_consumer_dead_letters_list_retry_purge(
    pg_url: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """A message whose handler keeps failing is listed with its error; after the fix, retry applies it once."""
    stream = f"{stream_prefix}orders.created"
    redis_client.xadd(stream, entry(payload={"n": 7}, key="o-7"))
    redis_client.xadd(stream, {"garbage": "entry"})
    consume = run_cli(
        "consume", "tests.e2e.inbox_app:registry", "--db", pg_url, "--broker", redis_url, "--group", "billing",
        "--stream-prefix", stream_prefix, "--block", "0.2", "--retention", "0", "--max-deliveries", "2",
        "--retry-delay", "0.01", "--once", timeout=120,
    )  # fmt: skip
    assert consume.returncode == 0, consume.stderr[-2000:]
    listed = run_cli("consumer-dead-letters", "list", "--db", pg_url, "--group", "billing", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(letters) == 2
    handler_failure = next(d for d in letters if d["topic"] == "orders.created")
    assert "test_effect" in handler_failure["error"]  # the handler's table did not exist yet
    garbage = next(d for d in letters if d["topic"] is None)
    assert "missing field" in garbage["error"]

    engine = sa.create_engine(pg_url)
    domain.create_all(engine)  # the fix
    engine.dispose()
    retried = run_cli(  # the registry comes first, as `consume` takes it (#9)
        "consumer-dead-letters", "retry", "tests.e2e.inbox_app:registry", str(handler_failure["id"]),
        "--db", pg_url,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stderr
    assert f"{handler_failure['id']}\tprocessed" in retried.stdout
    assert "deprecated" not in retried.stderr
    assert count_effects(pg_url) == 1
    again = run_cli(  # the 0.1 spelling still works, with one warning line
        "consumer-dead-letters", "retry", str(handler_failure["id"]), "--handlers", "tests.e2e.inbox_app:registry",
        "--db", pg_url,
    )  # fmt: skip
    assert count_effects(pg_url) == 1  # retrying twice applies it once
    assert again.returncode in (0, 2)
    assert "--handlers is deprecated" in again.stderr

    pending = run_cli("consumer-dead-letters", "list", "--db", pg_url, "--group", "billing", "--json")
    assert [json.loads(line)["id"] for line in pending.stdout.splitlines()] == [garbage["id"]]
    everything = run_cli(
        "consumer-dead-letters", "list", "--all", "--db", pg_url, "--group", "billing", "--json"
    )
    assert everything.returncode == 0, everything.stderr
    by_id = {d["id"]: d for d in map(json.loads, everything.stdout.splitlines())}
    assert sorted(by_id) == sorted([handler_failure["id"], garbage["id"]])
    assert by_id[handler_failure["id"]]["retried_at"] is not None
    assert by_id[garbage["id"]]["retried_at"] is None
    text = run_cli("consumer-dead-letters", "list", "--all", "--db", pg_url, "--group", "billing")
    assert "retried_at=" in text.stdout

    refused = run_cli("consumer-dead-letters", "purge", "--db", pg_url)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    purged = run_cli("consumer-dead-letters", "purge", "--db", pg_url, "--group", "billing")
    assert purged.returncode == 0, purged.stderr
    assert "purged" in purged.stdout
    after = run_cli("consumer-dead-letters", "list", "--db", pg_url, "--json")
    assert after.stdout.strip() == ""


def test_consumer_dead_letters_list_shows_key_column(pg_url: str) -> None:
    """The text listing of consumer dead letters has a key column, like `dead-letters list` (#9)."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outboxkit_inbox_dead_letter (consumer, stream, entry_id, topic, key, fields,"
                " error, deliveries, dead_lettered_at)"
                " VALUES ('billing', 's', '1-0', 'orders', 'o-7', '{}', 'boom', 5, now())"
            )
        )
    engine.dispose()
    listed = run_cli("consumer-dead-letters", "list", "--db", pg_url)
    assert listed.returncode == 0, listed.stderr
    assert "\tbilling\torders\tkey=o-7\t" in listed.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["7"], "handlers first"),
        (["tests.e2e.inbox_app:registry"], "at least one dead letter id"),
        (["tests.e2e.inbox_app:registry", "seven"], "whole numbers"),
    ],
)
def test_consumer_dead_letters_retry_bad_input_is_one_line(args: list[str], needle: str) -> None:
    """A retry without the registry, without ids or with a non-number id: one line, exit 2 (#9)."""
    result = run_cli("consumer-dead-letters", "retry", *args, "--db", "sqlite:///unused.db")
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

"""``--schema``: every toolkit object in the configured schema, for a role whose search_path lacks it (#9)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.orm import Session

import outbox
from tests._cli import run_cli
from tests._db import unique_database_name
from tests._inbox import count_effects, domain, effect
from tests._saga import INVENTORY, PAYMENT, answer, instance, last, orchestrator, orders, start
from tests._saga import domain as saga_domain
from tests._servers import PostgresAdmin

pytestmark = pytest.mark.e2e

SCHEMA = "messaging"
TOOLKIT_TABLES = {
    "outbox",
    "outbox_dead_letter",
    "outboxkit_alembic_version",
    "outboxkit_consumer_offset",
    "outboxkit_inbox",
    "outboxkit_inbox_dead_letter",
    "outboxkit_relay_lease",
    "outboxkit_relay_member",
    "outboxkit_relay_state",
    "outboxkit_saga",
    "outboxkit_saga_participant",
    "outboxkit_saga_step_log",
    "outboxkit_saga_timer",
    "outboxkit_stream_entry",
    "outboxkit_stream_fence",
    "outboxkit_stream_group",
    "outboxkit_stream_lease",
    "outboxkit_stream_pending",
}


@pytest.fixture
def app_url(pg_server: PostgresAdmin) -> Iterator[str]:
    """A database owned by a fresh login role whose search_path is ``public`` only."""
    role, database = f"r_{uuid.uuid4().hex[:12]}", unique_database_name()
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path = public").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
        )
    with pg_server.connect(database) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(role)))
    yield (
        pg_server.base_url()
        .set(database=database, username=role, password="pw")
        .render_as_string(hide_password=False)
    )
    pg_server.drop_database(database)
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _tables(url: str, schema: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names(schema=schema))
    finally:
        engine.dispose()


def test_migrate_schema_creates_every_toolkit_table_there_and_none_in_public(app_url: str) -> None:
    """`migrate --schema` puts all toolkit tables and the trigger's lookup in that schema, none in public (#9)."""
    done = run_cli("migrate", "--db", app_url, "--schema", SCHEMA)
    assert done.returncode == 0, done.stderr
    assert _tables(app_url, SCHEMA) == TOOLKIT_TABLES
    assert _tables(app_url, "public") == set()
    engine = sa.create_engine(app_url)
    with engine.connect() as conn:
        body = conn.execute(
            sa.text("SELECT prosrc FROM pg_proc WHERE proname = 'outboxkit_notify_outbox'")
        ).scalar_one()
    engine.dispose()
    assert f"FROM {SCHEMA}.outboxkit_relay_member" in body


def _run(*args: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 0, (args, done.stderr)


def test_schema_every_command_keeps_toolkit_tables_out_of_public(
    app_url: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Publish, relay to the SQL broker and Redis, consume, a saga step, status and the readers all use the schema (#9)."""
    _run("migrate", "--db", app_url, "--schema", SCHEMA)
    plain = sa.create_engine(app_url)
    domain.create_all(plain)  # the application's own tables, in public
    saga_domain.create_all(plain)
    plain.dispose()
    engine = outbox.use_schema(sa.create_engine(app_url), SCHEMA)
    with Session(engine) as session, session.begin():
        outbox.publish(
            session, "orders.created", {"n": 1}, key="o-1", config=outbox.OutboxConfig(schema=SCHEMA)
        )
    orch = orchestrator()
    saga_id = start(engine, orch)
    answer(engine, last(engine, INVENTORY))
    common = ("--db", app_url, "--schema", SCHEMA)
    _run("relay", *common, "--broker", app_url, "--once")
    _run("consume", "tests.e2e.schema_app:registry", *common, "--broker", app_url, "--group", "g", "--once")
    assert count_effects(app_url) == 1
    assert instance(engine, saga_id).step == 2  # the reply was handled: charge_payment is next
    _run("relay", *common, "--broker", redis_url, "--stream-prefix", stream_prefix, "--once")
    assert redis_client.xlen(f"{stream_prefix}{PAYMENT}") == 1
    status = run_cli("status", *common, "--broker", app_url, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert [s["type"] for s in report["sagas"]] == ["order"]
    assert {g["group"] for g in report["consumer_groups"]} == {"g"}
    _run("saga", "show", str(saga_id), *common)
    _run("dead-letters", "list", *common)
    _run("consumer-dead-letters", "list", *common)
    engine.dispose()
    assert _tables(app_url, "public") == {effect.name, orders.name}
    assert _tables(app_url, SCHEMA) == TOOLKIT_TABLES


@pytest.mark.parametrize(
    "command",
    [["migrate"], ["relay", "--broker", "redis://127.0.0.1:1/0", "--once"], ["status"]],
    ids=["migrate", "relay", "status"],
)
def test_schema_on_sqlite_is_refused_with_one_line(sqlite_empty_url: str, command: list[str]) -> None:
    """SQLite has no schemas: `--schema` there is one stderr line and exit 2, and no file is migrated (#9)."""
    done = run_cli(*command, "--db", sqlite_empty_url, "--schema", SCHEMA)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SQLite" in lines[0]
    assert "has no schemas" in lines[0]


def test_schema_publish_commits_for_a_writer_whose_search_path_lacks_it(app_url: str) -> None:
    """A writer on search_path=public commits into the schema's outbox: the NOTIFY trigger finds its tables (#9)."""
    _run("migrate", "--db", app_url, "--schema", SCHEMA)
    engine = sa.create_engine(app_url)  # the application's engine, no use_schema
    with Session(engine) as session, session.begin():
        outbox.publish(session, "orders.created", {"n": 1}, config=outbox.OutboxConfig(schema=SCHEMA))
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.outbox")).scalar_one() == 1
    engine.dispose()


def test_use_schema_on_sqlite_raises_config_error(sqlite_empty_url: str) -> None:
    """In the library a schema on SQLite is a ConfigError, from use_schema and from upgrade alike (#9)."""
    engine = sa.create_engine(sqlite_empty_url)
    with pytest.raises(outbox.ConfigError, match="SQLite"):
        outbox.use_schema(engine, SCHEMA)
    engine.dispose()
    with pytest.raises(outbox.ConfigError, match="has no schemas"):
        outbox.upgrade(sqlite_empty_url, config=outbox.OutboxConfig(schema=SCHEMA))
    assert outbox.use_schema(engine, None) is engine

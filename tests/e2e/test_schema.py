"""``--schema``: every toolkit object in the configured schema, for a role whose search_path lacks it (#9)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from psycopg import sql

from tests._cli import run_cli
from tests._db import unique_database_name
from tests._servers import PostgresAdmin

pytestmark = pytest.mark.e2e

SCHEMA = "messaging"
TOOLKIT_TABLES = {
    "outbox",
    "outbox_dead_letter",
    "outboxkit_alembic_version",
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

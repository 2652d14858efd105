"""outboxkit: relay leases, members and state; SQL-broker fences; PostgreSQL wake-up trigger

Revision ID: 0003_relay
Revises: 0002_sql_broker
Create Date: 2026-11-26

On PostgreSQL a deferred constraint trigger on the outbox table sends
``NOTIFY outboxkit_<table>`` at commit, once per transaction, and only while a
live relay has marked itself idle: a relay that is busy draining never makes
writers pay for NOTIFY (which serialises committing transactions).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from outbox._migrate import migration_names

revision: str = "0003_relay"
down_revision: str | None = "0002_sql_broker"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _names() -> tuple[str, str, str]:
    names = migration_names(context.config.attributes)
    qualified = f"{names.schema}.{names.table}" if names.schema else names.table
    return names.table, qualified, f"outboxkit_{names.table}"


def _schema() -> str | None:
    return migration_names(context.config.attributes).schema


def upgrade() -> None:
    """Create the relay's tables and, on PostgreSQL, the NOTIFY trigger."""
    schema = _schema()
    op.create_table(
        "outboxkit_relay_lease",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "partition", name="pk_outboxkit_relay_lease"),
        schema=schema,
    )
    op.create_table(
        "outboxkit_relay_member",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("relay_id", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idle", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("scope", "relay_id", name="pk_outboxkit_relay_member"),
        schema=schema,
    )
    op.create_table(
        "outboxkit_relay_state",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_outboxkit_relay_state"),
        schema=schema,
    )
    op.create_table(
        "outboxkit_stream_fence",
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("epoch", _ID, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_outboxkit_stream_fence"),
        schema=schema,
    )
    if op.get_bind().dialect.name == "postgresql":
        table, qualified, channel = _names()
        op.execute(_notify_function(table, qualified, channel))
        op.execute(
            f"CREATE CONSTRAINT TRIGGER outboxkit_notify AFTER INSERT ON {qualified}"
            f" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {_function(qualified)}()"
        )


def _function(qualified: str) -> str:
    schema, _, table = qualified.rpartition(".")
    return f"{schema + '.' if schema else ''}outboxkit_notify_{table}"


def _notify_function(table: str, qualified: str, channel: str) -> str:
    # Runs at commit (deferred), once per transaction (the local setting), and
    # only NOTIFYs while some live relay said it is idle.
    # Names are validated identifiers (OutboxConfig), never user text. The
    # member table is qualified like the outbox: the trigger runs with the
    # writer's search_path, which need not include the toolkit's schema.
    schema, _, _ = qualified.rpartition(".")
    members = f"{schema}.outboxkit_relay_member" if schema else "outboxkit_relay_member"
    return f"""
CREATE OR REPLACE FUNCTION {_function(qualified)}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('outboxkit.notified_{table}', true) = '1' THEN
    RETURN NULL;
  END IF;
  PERFORM set_config('outboxkit.notified_{table}', '1', true);
  IF EXISTS (SELECT 1 FROM {members}
             WHERE scope = '{qualified}' AND idle AND expires_at > now()) THEN
    PERFORM pg_notify('{channel}', '');
  END IF;
  RETURN NULL;
END
$$"""  # noqa: S608


def downgrade() -> None:
    """Drop the relay's tables and the trigger."""
    schema = _schema()
    if op.get_bind().dialect.name == "postgresql":
        _, qualified, _ = _names()
        op.execute(f"DROP TRIGGER IF EXISTS outboxkit_notify ON {qualified}")
        op.execute(f"DROP FUNCTION IF EXISTS {_function(qualified)}()")
    op.drop_table("outboxkit_stream_fence", schema=schema)
    op.drop_table("outboxkit_relay_state", schema=schema)
    op.drop_table("outboxkit_relay_member", schema=schema)
    op.drop_table("outboxkit_relay_lease", schema=schema)

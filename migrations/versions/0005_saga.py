"""outboxkit: create the saga instance, step log, timer and participant decision tables

Revision ID: 0005_saga
Revises: 0004_inbox
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from outbox._migrate import migration_names
from outbox.tables import JSONText

revision: str = "0005_saga"
down_revision: str | None = "0004_inbox"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _saga_fk(table: str, schema: str | None) -> sa.ForeignKeyConstraint:
    target = f"{schema}.outboxkit_saga.id" if schema else "outboxkit_saga.id"
    return sa.ForeignKeyConstraint(["saga_id"], [target], name=f"fk_{table}_saga_id", ondelete="CASCADE")


def upgrade() -> None:
    """Create the saga tables."""
    schema = migration_names(context.config.attributes).schema
    op.create_table(
        "outboxkit_saga",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("data", JSONText(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outboxkit_saga"),
        schema=schema,
    )
    op.create_index("ix_outboxkit_saga_type_state", "outboxkit_saga", ["type", "state"], schema=schema)
    op.create_table(
        "outboxkit_saga_step_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("step_name", sa.String(128), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outboxkit_saga_step_log"),
        _saga_fk("outboxkit_saga_step_log", schema),
        sqlite_autoincrement=True,
        schema=schema,
    )
    op.create_index(
        "ix_outboxkit_saga_step_log_saga_id_id", "outboxkit_saga_step_log", ["saga_id", "id"], schema=schema
    )
    op.create_table(
        "outboxkit_saga_timer",
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("fires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "name", name="pk_outboxkit_saga_timer"),
        _saga_fk("outboxkit_saga_timer", schema),
        schema=schema,
    )
    op.create_table(
        "outboxkit_saga_participant",
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("data", JSONText(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("compensated", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "step", name="pk_outboxkit_saga_participant"),
        schema=schema,
    )


def downgrade() -> None:
    """Drop the saga tables."""
    schema = migration_names(context.config.attributes).schema
    op.drop_table("outboxkit_saga_participant", schema=schema)
    op.drop_table("outboxkit_saga_timer", schema=schema)
    op.drop_table("outboxkit_saga_step_log", schema=schema)
    op.drop_table("outboxkit_saga", schema=schema)

"""outboxkit: create the SQL-table broker's stream, group and pending tables

Revision ID: 0002_sql_broker
Revises: 0001_outbox
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from outbox._migrate import migration_names

revision: str = "0002_sql_broker"
down_revision: str | None = "0001_outbox"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the SQL-table broker's tables."""
    schema = migration_names(context.config.attributes).schema
    op.create_table(
        "outboxkit_stream_entry",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(512), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outboxkit_stream_entry"),
        sqlite_autoincrement=True,
        schema=schema,
    )
    op.create_index(
        "ix_outboxkit_stream_entry_stream_id", "outboxkit_stream_entry", ["stream", "id"], schema=schema
    )
    op.create_table(
        "outboxkit_stream_group",
        sa.Column("stream", sa.String(512), nullable=False),
        sa.Column("group_name", sa.String(255), nullable=False),
        sa.Column("last_delivered_id", _ID, nullable=False),
        sa.PrimaryKeyConstraint("stream", "group_name", name="pk_outboxkit_stream_group"),
        schema=schema,
    )
    op.create_table(
        "outboxkit_stream_pending",
        sa.Column("stream", sa.String(512), nullable=False),
        sa.Column("group_name", sa.String(255), nullable=False),
        sa.Column("entry_id", _ID, nullable=False),
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "group_name", "entry_id", name="pk_outboxkit_stream_pending"),
        schema=schema,
    )
    op.create_index(
        "ix_outboxkit_stream_pending_delivered_at",
        "outboxkit_stream_pending",
        ["delivered_at"],
        schema=schema,
    )


def downgrade() -> None:
    """Drop the SQL-table broker's tables."""
    schema = migration_names(context.config.attributes).schema
    op.drop_table("outboxkit_stream_pending", schema=schema)
    op.drop_table("outboxkit_stream_group", schema=schema)
    op.drop_table("outboxkit_stream_entry", schema=schema)

"""outboxkit: create the inbox, the consumer dead-letter table and the stream lease table

Revision ID: 0004_inbox
Revises: 0003_relay
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from outbox._migrate import migration_names

revision: str = "0004_inbox"
down_revision: str | None = "0003_relay"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the inbox tables."""
    schema = migration_names(context.config.attributes).schema
    op.create_table(
        "outboxkit_inbox",
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(249), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name="pk_outboxkit_inbox"),
        schema=schema,
    )
    op.create_index("ix_outboxkit_inbox_processed_at", "outboxkit_inbox", ["processed_at"], schema=schema)
    op.create_table(
        "outboxkit_inbox_dead_letter",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("stream", sa.String(512), nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("topic", sa.String(249), nullable=True),
        sa.Column("type", sa.String(255), nullable=True),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retried_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outboxkit_inbox_dead_letter"),
        sa.UniqueConstraint("consumer", "stream", "entry_id", name="uq_outboxkit_inbox_dead_letter_entry"),
        sqlite_autoincrement=True,
        schema=schema,
    )
    op.create_table(
        "outboxkit_stream_lease",
        sa.Column("group_name", sa.String(255), nullable=False),
        sa.Column("name", sa.String(600), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_name", "name", name="pk_outboxkit_stream_lease"),
        schema=schema,
    )


def downgrade() -> None:
    """Drop the inbox tables."""
    schema = migration_names(context.config.attributes).schema
    op.drop_table("outboxkit_stream_lease", schema=schema)
    op.drop_table("outboxkit_inbox_dead_letter", schema=schema)
    op.drop_index("ix_outboxkit_inbox_processed_at", table_name="outboxkit_inbox", schema=schema)
    op.drop_table("outboxkit_inbox", schema=schema)

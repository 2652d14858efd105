"""outboxkit: create the outbox table and its dead-letter table

Revision ID: 0001_outbox
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from outbox._migrate import migration_names
from outbox.tables import JSONText

revision: str = "0001_outbox"
down_revision: str | None = None
branch_labels: Sequence[str] | None = ("outboxkit",)
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _message_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("key_hash", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("headers", JSONText(), nullable=False),
        sa.Column("payload", JSONText(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    """Create the outbox and dead-letter tables with the relay's indexes."""
    names = migration_names(context.config.attributes)
    table, schema = names.table, names.schema
    op.create_table(
        table,
        sa.Column("id", _ID, sa.Identity(), nullable=False),
        *_message_columns(),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.UniqueConstraint("message_id", name=f"uq_{table}_message_id"),
        schema=schema,
        sqlite_autoincrement=True,
    )
    pending = sa.text("published_at IS NULL")
    retry = sa.text("next_attempt_at IS NOT NULL")
    published = sa.text("published_at IS NOT NULL")
    op.create_index(
        f"ix_{table}_pending", table, ["id"], schema=schema,
        postgresql_where=pending, sqlite_where=pending,
    )  # fmt: skip
    op.create_index(
        f"ix_{table}_retry", table, ["next_attempt_at"], schema=schema,
        postgresql_where=retry, sqlite_where=retry,
    )  # fmt: skip
    op.create_index(
        f"ix_{table}_published", table, ["published_at"], schema=schema,
        postgresql_where=published, sqlite_where=published,
    )  # fmt: skip
    op.create_table(
        f"{table}_dead_letter",
        sa.Column("id", _ID, autoincrement=False, nullable=False),
        *_message_columns(),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retried_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retried_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}_dead_letter"),
        sa.UniqueConstraint("message_id", name=f"uq_{table}_dead_letter_message_id"),
        schema=schema,
    )


def downgrade() -> None:
    """Drop the outbox and dead-letter tables."""
    names = migration_names(context.config.attributes)
    op.drop_table(f"{names.table}_dead_letter", schema=names.schema)
    op.drop_table(names.table, schema=names.schema)

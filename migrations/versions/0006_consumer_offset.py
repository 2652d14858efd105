"""outboxkit: create the consumer offset table (Kafka offsets stored with the inbox rows)

Revision ID: 0006_consumer_offset
Revises: 0005_saga
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from outbox._migrate import migration_names

revision: str = "0006_consumer_offset"
down_revision: str | None = "0005_saga"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    """Create ``outboxkit_consumer_offset``."""
    schema = migration_names(context.config.attributes).schema
    op.create_table(
        "outboxkit_consumer_offset",
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("stream", sa.String(512), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "stream", name="pk_outboxkit_consumer_offset"),
        schema=schema,
    )


def downgrade() -> None:
    """Drop ``outboxkit_consumer_offset``."""
    schema = migration_names(context.config.attributes).schema
    op.drop_table("outboxkit_consumer_offset", schema=schema)

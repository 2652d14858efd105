"""create customers and orders

Revision ID: s001_shop
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s001_shop"
down_revision: str | None = None
branch_labels: Sequence[str] | None = ("shop",)
# No depends_on on the toolkit's branch: the two branches stay independent,
# so `downgrade outboxkit@base` leaves the shop's tables alone (see docs/adopting.md).
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    """Create the shop's tables."""
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("total", sa.Numeric(10, 2), nullable=False),
    )


def downgrade() -> None:
    """Drop the shop's tables."""
    op.drop_table("orders")
    op.drop_table("customers")

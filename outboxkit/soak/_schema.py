"""The checker's ledgers: what writers committed and what consumers applied."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per key: the per-key sequence, taken under its row lock by writers.
soak_key = sa.Table(
    "soak_key",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
)

# Written by writers in the same transaction as the outbox row: exactly the committed events.
soak_expected = sa.Table(
    "soak_expected",
    metadata,
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("key", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
)

# Written by consumers in their inbox transaction. No uniqueness on purpose:
# a double application must be visible, not prevented by this table.
soak_applied = sa.Table(
    "soak_applied",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("grp", sa.String(64), nullable=False),
    sa.Column("event_id", sa.Uuid, nullable=False),
    sa.Column("key", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
)


def create(url: str, keys: int) -> None:
    """Create the ledgers and one sequence row per key."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(soak_key.insert(), [{"key": f"k{i}", "seq": 0} for i in range(keys)])
    engine.dispose()

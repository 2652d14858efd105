"""The checker: SQL set differences between what was committed and what was applied."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sqlalchemy as sa

_QUERIES = {
    "expected": "SELECT count(*) FROM soak_expected",
    "applied_rows": "SELECT count(*) FROM soak_applied",
    # G1: committed but never applied.
    "lost": """SELECT count(*) FROM soak_expected e
               WHERE NOT EXISTS (SELECT 1 FROM soak_applied a WHERE a.event_id = e.event_id)""",
    # G2: applied but never committed (a rolled-back transaction leaked).
    "unexpected": """SELECT count(*) FROM soak_applied a
                     WHERE NOT EXISTS (SELECT 1 FROM soak_expected e WHERE e.event_id = a.event_id)""",
    # G3: applied more than once by the group.
    "doubled": """SELECT count(*) FROM (SELECT grp, event_id FROM soak_applied
                  GROUP BY grp, event_id HAVING count(*) > 1) d""",
    # G4: for one key, a sequence number applied after a larger or equal one.
    "order_violations": """SELECT count(*) FROM (
                             SELECT seq, lag(seq) OVER (PARTITION BY grp, key ORDER BY id) AS prev
                             FROM soak_applied) s
                           WHERE prev IS NOT NULL AND seq <= prev""",
}


@dataclass(frozen=True, slots=True)
class Counts:
    """What the ledgers say."""

    expected: int
    applied_rows: int
    lost: int
    unexpected: int
    doubled: int
    order_violations: int

    def as_dict(self) -> dict[str, int]:
        """Plain dict for the verdict JSON."""
        return asdict(self)


def count(url: str) -> Counts:
    """Run every check against the database at ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            values = {name: int(conn.execute(sa.text(sql)).scalar_one()) for name, sql in _QUERIES.items()}
    finally:
        engine.dispose()
    return Counts(**values)


def applied_distinct(url: str) -> tuple[int, int]:
    """(distinct applied events, expected events): the drain progress."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            applied = conn.execute(sa.text("SELECT count(DISTINCT event_id) FROM soak_applied")).scalar_one()
            expected = conn.execute(sa.text("SELECT count(*) FROM soak_expected")).scalar_one()
    finally:
        engine.dispose()
    return int(applied), int(expected)

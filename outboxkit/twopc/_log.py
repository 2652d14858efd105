"""The coordinator's durable decision log: one row per global transaction, first writer wins.

The row is inserted with ``ON CONFLICT DO NOTHING`` and read back, by the
coordinator ("commit") and by recovery ("abort") alike, so a recovery that
runs while a slow coordinator is still deciding can never split one global
transaction: whichever decision reached the log first is the decision.
Presumed abort: a prepared transaction with no row is rolled back.
"""

from __future__ import annotations

import psycopg

from outbox import StorageError

__all__ = ["ABORT", "COMMIT", "create_log", "decide", "read_decision"]

COMMIT = "commit"
ABORT = "abort"

_DDL = (
    "CREATE TABLE IF NOT EXISTS outboxkit_twopc_decision ("
    " gtrid text PRIMARY KEY,"
    " decision text NOT NULL CHECK (decision IN ('commit', 'abort')),"
    " decided_at timestamptz NOT NULL DEFAULT now())"
)


def create_log(log: psycopg.Connection) -> None:
    """Create the decision table if it is missing (a baseline: no Alembic revision, see docs/sagas.md)."""
    with log.transaction():
        log.execute(_DDL)


def decide(log: psycopg.Connection, gtrid: str, decision: str) -> str:
    """Record ``decision`` for ``gtrid`` unless one is recorded; return the decision that stands."""
    with log.transaction():
        log.execute(
            "INSERT INTO outboxkit_twopc_decision (gtrid, decision) VALUES (%s, %s)"
            " ON CONFLICT (gtrid) DO NOTHING",
            (gtrid, decision),
        )
        row = log.execute(
            "SELECT decision FROM outboxkit_twopc_decision WHERE gtrid = %s", (gtrid,)
        ).fetchone()
    if row is None:  # inserted or already there, in this transaction: cannot happen
        msg = f"decision log lost the row of {gtrid}"
        raise StorageError(msg)
    return str(row[0])


def read_decision(log: psycopg.Connection, gtrid: str) -> str | None:
    """The recorded decision of ``gtrid``, or None."""
    row = log.execute("SELECT decision FROM outboxkit_twopc_decision WHERE gtrid = %s", (gtrid,)).fetchone()
    return None if row is None else str(row[0])

"""Quickstart on the embedded default: one SQLite file, no server.

Creates the tables, places an order and publishes its event in the same
transaction, shows that a rolled-back order leaves no event, and prints the
outbox row the relay will forward.

    python examples/quickstart.py [sqlite:///quickstart.db]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

import outbox
from outbox import publish


def main(url: str) -> int:
    """Run the quickstart against ``url``."""
    outbox.upgrade(url)  # same as `outboxkit migrate --db URL`
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total TEXT)"))

    # 1. The order and its event commit together.
    with Session(engine) as session, session.begin():
        session.execute(sa.text("INSERT INTO orders VALUES ('o-1', '19.90')"))
        message_id = publish(session, "orders.placed", {"order_id": "o-1", "total": "19.90"}, key="o-1")
    print(f"committed order o-1 with event {message_id}")

    # 2. A transaction that rolls back leaves no event behind.
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO orders VALUES ('o-2', '5.00')"))
        publish(session, "orders.placed", {"order_id": "o-2"}, key="o-2")
        session.rollback()
    print("rolled back order o-2: no event")

    # 3. What the relay will forward.
    table = outbox.outbox_tables().outbox
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table).where(table.c.key.in_(["o-1", "o-2"])).order_by(table.c.id)
        ).all()
    for row in rows:
        print(
            json.dumps(
                {
                    "id": str(row.message_id),
                    "topic": row.topic,
                    "key": row.key,
                    "payload": json.loads(row.payload),
                }
            )
        )
    engine.dispose()
    assert [row.key for row in rows][-1:] == ["o-1"], "the rolled-back event must not exist"
    return 0


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{Path(tempfile.mkdtemp()) / 'quickstart.db'}"
    sys.exit(main(target))

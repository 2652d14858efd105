"""The SQL-table broker on PostgreSQL: entries of one stream become visible in id order."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from sqlalchemy import event

from brokers import OutgoingEntry, connect_publisher
from brokers.sql_table import SqlTablePublisher
from tests._relay_support import sql_broker_entries

_HOLD_S = 1.0


def test_sql_broker_concurrent_batches_of_one_stream_commit_in_id_order(pg_url: str) -> None:
    """A batch that took smaller ids and is slow to commit holds back a later batch of the same stream."""
    slow_engine = sa.create_engine(pg_url)
    inserted = threading.Event()

    @event.listens_for(slow_engine, "after_cursor_execute")
    def _hold(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO outboxkit_stream_entry"):
            inserted.set()
            time.sleep(_HOLD_S)  # inside the transaction: ids taken, not committed

    first = SqlTablePublisher(pg_url, engine=slow_engine)
    second = connect_publisher(pg_url)
    done: dict[str, float] = {}

    def publish_first() -> None:
        first.publish([OutgoingEntry("orders", {"id": "a", "data": "1"}, "k")])
        done["first"] = time.monotonic()

    thread = threading.Thread(target=publish_first)
    thread.start()
    assert inserted.wait(10)
    second.publish([OutgoingEntry("orders", {"id": "b", "data": "2"}, "k")])
    done["second"] = time.monotonic()
    thread.join(10)
    # The second batch could only commit after the first one: a reader never sees b without a.
    assert done["second"] >= done["first"]
    assert [e["id"] for e in sql_broker_entries(pg_url, "orders")] == ["a", "b"]
    first.close()
    second.close()
    slow_engine.dispose()

"""Broker positions stored with the inbox rows: Kafka's effectively-once pattern.

On a broker whose position in a stream is a plain offset (Kafka), the offset
after the last finished record is written to ``outboxkit_consumer_offset`` in
the same transaction as the inbox row and the handler's effects (or the dead
letter). A consumer killed after its database commit and before its commit to
the broker then resumes from the database's position on assignment, not from
the broker's older one, and does not even see the record again; the inbox
stays the guard for everything else (a rebalance, a position the broker lost).

Records of a batch finish out of order (a failing message is retried after
the other keys of the batch, issue #9), so the position written is the lowest
offset of the batch still unfinished, never just "this offset + 1": a record
retried later is never skipped by a restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from brokers import Delivery

from .tables import consumer_offset

__all__ = ["BatchPositions", "load_positions", "record_position"]


class BatchPositions:
    """Which records of one batch (one stream) are finished, and the position that makes safe."""

    def __init__(self, batch: Sequence[Delivery]) -> None:
        self.stream = batch[0].stream
        offsets = [int(d.entry_id) for d in batch]
        self._open = set(offsets)
        self._end = max(offsets) + 1

    def finish(self, entry_ids: Iterable[str]) -> None:
        """Mark records finished without a transaction of their own (ignored, acknowledged as duplicates)."""
        self._open.difference_update(int(e) for e in entry_ids)

    def after(self, entry_ids: Iterable[str]) -> int:
        """The position once ``entry_ids`` are finished too (marked by :meth:`finish` after the commit)."""
        done = {int(e) for e in entry_ids}
        return min(self._open - done, default=self._end)


def record_position(conn: Connection, consumer: str, stream: str, next_offset: int) -> None:
    """Upsert the position, never moving it back (a slower transaction of an older batch)."""
    now = dt.datetime.now(dt.UTC)
    values = {"consumer": consumer, "stream": stream, "next_offset": next_offset, "updated_at": now}
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(consumer_offset).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[consumer_offset.c.consumer, consumer_offset.c.stream],
        set_={"next_offset": statement.excluded.next_offset, "updated_at": statement.excluded.updated_at},
        where=consumer_offset.c.next_offset < statement.excluded.next_offset,
    )
    conn.execute(statement)


def load_positions(engine: Engine, consumer: str, streams: Iterable[str]) -> Mapping[str, int]:
    """The recorded next offsets of ``consumer`` on ``streams`` (streams never recorded are left out)."""
    names = list(streams)
    query = select(consumer_offset.c.stream, consumer_offset.c.next_offset).where(
        consumer_offset.c.consumer == consumer, consumer_offset.c.stream.in_(names)
    )
    with engine.connect() as conn:
        return {row.stream: int(row.next_offset) for row in conn.execute(query)}

"""The publish half of the SQL-table broker (the embedded default's broker).

A batch is one transaction in the broker database: advance the fences (an
``UPDATE ... WHERE epoch <= :epoch`` takes the fence row's lock, so two relays'
batches for one partition serialize and a stale one is refused), then one
multi-row ``INSERT`` into ``outboxkit_stream_entry``. The database keeps what
it committed, so there is no incarnation to watch.

The table does not grow forever: the subscribe half deletes the entries every
group has acknowledged, and with ``max_len`` (``--stream-maxlen``, as
``MAXLEN`` on Redis) each batch also trims its streams to their newest
``max_len`` entries, read or not (the same data-loss trade-off).

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from sqlalchemy import Connection, Delete, Engine, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Insert

from outbox import create_engine, is_missing_table, tables_missing
from outbox._redact import redact_url
from outbox._schema import use_schema
from outbox.errors import BrokerError, ConfigError, FencedError

from .._publisher import EntryOutcome, EntryStatus, Fence, OutgoingEntry, PublishResult
from .tables import stream_entry, stream_fence

__all__ = ["SqlTablePublisher"]


class SqlTablePublisher:
    """Publish batches into the SQL-table broker's tables at a SQLAlchemy URL."""

    def __init__(
        self, url: str, *, engine: Engine | None = None, max_len: int | None = None, schema: str | None = None
    ) -> None:
        """``max_len``: entries kept per stream at most; ``schema``: the tables' schema (PostgreSQL)."""
        if max_len is not None and max_len <= 0:
            msg = f"stream max length must be positive, got {max_len}"
            raise ConfigError(msg)
        self._max_len = max_len
        self._description = redact_url(url)
        # Pre-ping as before: the broker database restarts independently of the outbox's.
        self._engine = (
            use_schema(engine, schema) if engine else create_engine(url, schema=schema, pool_pre_ping=True)
        )
        self._owns_engine = engine is None

    @property
    def description(self) -> str:
        """The URL without its password."""
        return self._description

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        """Append the batch in one transaction (see the module docstring); no incarnation."""
        del incarnation
        now = dt.datetime.now(dt.UTC)
        rows = [
            {"stream": e.stream, "fields": json.dumps(dict(e.fields), ensure_ascii=False), "created_at": now}
            for e in entries
        ]
        try:
            with self._engine.begin() as conn:
                for fence in sorted(fences, key=lambda f: f.name):  # one lock order: no deadlocks
                    done = conn.execute(
                        update(stream_fence)
                        .where(stream_fence.c.name == fence.name, stream_fence.c.epoch <= fence.epoch)
                        .values(epoch=fence.epoch)
                    ).rowcount
                    if not done:
                        inserted = conn.execute(
                            _insert_ignore(conn.dialect.name).values(name=fence.name, epoch=fence.epoch)
                        ).rowcount
                        if not inserted:
                            msg = f"fence {fence.name} is past epoch {fence.epoch}: another relay took over"
                            raise FencedError(msg)
                if rows:
                    self._append(conn, rows)
        except DBAPIError as exc:
            if is_missing_table(exc):
                raise tables_missing("a table of the SQL-table broker", self._description) from None
            msg = f"SQL broker at {self._description} unavailable: {type(exc.orig).__name__}"
            raise BrokerError(msg) from None
        return PublishResult(outcomes=[EntryOutcome(EntryStatus.PUBLISHED) for _ in entries])

    def _append(self, conn: Connection, rows: list[dict[str, object]]) -> None:
        streams = sorted({str(r["stream"]) for r in rows})
        if conn.dialect.name == "postgresql":
            # Entry ids must become visible in id order within a
            # stream: consumers read `id > last_delivered_id`, so a
            # smaller id committing after a larger one would be
            # skipped. A transaction lock per stream (ids are taken
            # after it) makes commit order follow id order. SQLite
            # has one writer at a time and needs nothing.
            for stream in streams:
                key = func.hashtextextended(f"outboxkit:{stream}", 0)
                conn.execute(select(func.pg_advisory_xact_lock(key)))
        conn.execute(insert(stream_entry), rows)
        if self._max_len is not None:  # under the stream's lock: trims do not race
            for stream in streams:
                conn.execute(_trim_to(stream, self._max_len))

    def ping(self) -> None:
        """An empty batch: one transaction that writes nothing (see :meth:`brokers.Publisher.ping`)."""
        self.publish([])

    def close(self) -> None:
        """Dispose of the engine if this publisher created it."""
        if self._owns_engine:
            self._engine.dispose()


def _trim_to(stream: str, max_len: int) -> Delete:
    """Delete the entries of ``stream`` older than its newest ``max_len`` (exact, not ``~``)."""
    e = stream_entry
    cut = (
        select(e.c.id)
        .where(e.c.stream == stream)
        .order_by(e.c.id.desc())
        .limit(1)
        .offset(max_len)
        .scalar_subquery()
    )
    return delete(e).where(e.c.stream == stream, e.c.id <= cut)


def _insert_ignore(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(stream_fence).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(stream_fence).on_conflict_do_nothing()
    return insert(stream_fence).prefix_with("IGNORE")

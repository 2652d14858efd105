"""The publish half of the SQL-table broker (the embedded default's broker).

A batch is one transaction in the broker database: advance the fences (an
``UPDATE ... WHERE epoch <= :epoch`` takes the fence row's lock, so two relays'
batches for one partition serialize and a stale one is refused), then one
multi-row ``INSERT`` into ``outboxkit_stream_entry``. The database keeps what
it committed, so there is no incarnation to watch.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from sqlalchemy import Engine, create_engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.sql.expression import Insert

from outbox._redact import redact_url
from outbox.errors import MIGRATE_HINT, BrokerError, ConfigError, FencedError, SchemaMissingError

from ._publisher import EntryOutcome, Fence, Outcome, OutgoingEntry, PublishResult
from .sql_tables import stream_entry, stream_fence

__all__ = ["SqlTablePublisher"]


class SqlTablePublisher:
    """Publish batches into the SQL-table broker's tables at a SQLAlchemy URL."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self._description = redact_url(url)
        try:
            self._engine = engine or create_engine(url, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
            msg = f"invalid broker URL {self._description}: {type(exc).__name__}"
            raise ConfigError(msg) from None
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
                    if conn.dialect.name == "postgresql":
                        # Entry ids must become visible in id order within a
                        # stream: consumers read `id > last_delivered_id`, so a
                        # smaller id committing after a larger one would be
                        # skipped. A transaction lock per stream (ids are taken
                        # after it) makes commit order follow id order. SQLite
                        # has one writer at a time and needs nothing.
                        for stream in sorted({e.stream for e in entries}):
                            key = func.hashtextextended(f"outboxkit:{stream}", 0)
                            conn.execute(select(func.pg_advisory_xact_lock(key)))
                    conn.execute(insert(stream_entry), rows)
        except DBAPIError as exc:
            text = str(exc.orig).lower()
            if "no such table" in text or "does not exist" in text:
                msg = f"broker tables missing in {self._description}: {MIGRATE_HINT}"
                raise SchemaMissingError(msg) from None
            msg = f"SQL broker at {self._description} unavailable: {type(exc.orig).__name__}"
            raise BrokerError(msg) from None
        return PublishResult(outcomes=[EntryOutcome(Outcome.PUBLISHED) for _ in entries])

    def close(self) -> None:
        """Dispose of the engine if this publisher created it."""
        if self._owns_engine:
            self._engine.dispose()


def _insert_ignore(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(stream_fence).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(stream_fence).on_conflict_do_nothing()
    return insert(stream_fence).prefix_with("IGNORE")

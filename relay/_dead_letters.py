"""Dead letters: list, retry (back into the outbox under the original id), purge.

A retried message goes back with its original id, so it is relayed before the
later messages of its key that are still waiting. The dead-letter row stays,
stamped with ``retried_at``/``retried_by``; if the message fails again it
replaces that row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, exists, insert, literal, null, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from outbox.tables import OutboxTables

from ._db import storage_error

__all__ = ["DeadLetters", "OutboxDeadLetter"]


@dataclass(frozen=True, slots=True)
class OutboxDeadLetter:
    """An outbox row the relay gave up publishing, as ``outboxkit dead-letters list`` shows it.

    Not :class:`inbox.ConsumerDeadLetter`, a broker entry a consumer gave up handling.
    """

    id: int
    message_id: str
    topic: str
    key: str | None
    attempts: int
    last_error: str | None
    dead_lettered_at: dt.datetime
    retried_at: dt.datetime | None
    retried_by: str | None


_LISTED = ("id", "message_id", "topic", "key", "attempts", "last_error", "dead_lettered_at", "retried_at",
           "retried_by")  # fmt: skip


class DeadLetters:
    """Operations on the dead-letter table of one outbox."""

    def __init__(self, engine: Engine, tables: OutboxTables) -> None:
        self.engine = engine
        self.tables = tables

    def _filter(
        self, ids: Sequence[int] | None, topic: str | None, *, include_retried: bool
    ) -> list[ColumnElement[bool]]:
        dl = self.tables.dead_letter
        where: list[ColumnElement[bool]] = []
        if ids:
            where.append(dl.c.id.in_(list(ids)))
        if topic is not None:
            where.append(dl.c.topic == topic)
        if not include_retried:
            where.append(dl.c.retried_at.is_(None))
        return where

    def select(
        self, *, topic: str | None = None, limit: int = 100, include_retried: bool = False
    ) -> list[OutboxDeadLetter]:
        """Dead letters in id order."""
        dl = self.tables.dead_letter
        query = (
            select(*(dl.c[name] for name in _LISTED))
            .where(*self._filter(None, topic, include_retried=include_retried))
            .order_by(dl.c.id)
            .limit(limit)
        )
        try:
            with self.engine.connect() as conn:
                return [OutboxDeadLetter(r[0], str(r[1]), *r[2:]) for r in conn.execute(query)]
        except SQLAlchemyError as exc:
            raise storage_error(exc, self.engine) from None

    def retry(
        self, *, ids: Sequence[int] | None = None, topic: str | None = None, by: str, dry_run: bool = False
    ) -> list[int]:
        """Put dead letters back into the outbox under their original ids; return those ids."""
        try:
            with self.engine.connect() as conn:
                chosen = self._retryable(conn, ids, topic)
                if chosen and not dry_run:
                    self._reinsert(conn, chosen, by)
                    conn.commit()
                else:
                    conn.rollback()
                return chosen
        except SQLAlchemyError as exc:
            raise storage_error(exc, self.engine) from None

    def _retryable(self, conn: Connection, ids: Sequence[int] | None, topic: str | None) -> list[int]:
        o, dl = self.tables.outbox, self.tables.dead_letter
        query = (
            select(dl.c.id)
            .where(*self._filter(ids, topic, include_retried=False), ~exists().where(o.c.id == dl.c.id))
            .order_by(dl.c.id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return [int(i) for i in conn.execute(query).scalars()]

    def _reinsert(self, conn: Connection, chosen: list[int], by: str) -> None:
        o, dl = self.tables.outbox, self.tables.dead_letter
        now = dt.datetime.now(dt.UTC)
        copied = ["id", "message_id", "topic", "key", "key_hash", "type", "source", "headers", "payload",
                  "created_at"]  # fmt: skip
        source = select(
            *(dl.c[name] for name in copied),
            literal(now, o.c.available_at.type).label("available_at"),
            literal(0).label("attempts"),
            null().label("last_error"),
        ).where(dl.c.id.in_(chosen))
        conn.execute(insert(o).from_select([*copied, "available_at", "attempts", "last_error"], source))
        conn.execute(update(dl).where(dl.c.id.in_(chosen)).values(retried_at=now, retried_by=by[:255]))

    def purge(
        self,
        *,
        ids: Sequence[int] | None = None,
        topic: str | None = None,
        older_than: dt.timedelta | None = None,
        include_retried: bool = True,
        dry_run: bool = False,
    ) -> int:
        """Delete dead letters (all matching when no filter is given); return how many."""
        dl = self.tables.dead_letter
        where = self._filter(ids, topic, include_retried=include_retried)
        if older_than is not None:
            where.append(dl.c.dead_lettered_at < dt.datetime.now(dt.UTC) - older_than)
        try:
            with self.engine.connect() as conn:
                count = conn.execute(delete(dl).where(*where)).rowcount
                if dry_run:
                    conn.rollback()
                else:
                    conn.commit()
                return int(count)
        except SQLAlchemyError as exc:
            raise storage_error(exc, self.engine) from None

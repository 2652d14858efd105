"""The relay's statements on the outbox table: claim, complete, retry, dead-letter, retain.

There is no high-water mark: every row carries its own state
(``published_at``, ``next_attempt_at``), and a claim is "the oldest unpublished
rows that are due", so a transaction that commits late with a small id is
simply found by the next claim (no visibility gap).

Per-key order with retries: while a row of key K waits in backoff
(``next_attempt_at`` in the future), later rows of K are not claimable (the
``NOT EXISTS`` below, served by the partial index ``ix_<table>_retry``); rows of
every other key, in the same relay partition too, go on. With ``park_dead_letters``
(``on_dead_letter="park-key"``) a dead letter not yet retried parks its key the
same way, until ``outboxkit dead-letters retry`` or ``purge`` (issue #9).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from outbox.tables import OutboxTables

from .tables import relay_state

__all__ = ["RETENTION_BATCH", "ClaimedRow", "Failure", "OutboxStore"]

_MAX_LISTED_PARKED = 200
RETENTION_BATCH = 5000
"""Published rows retention deletes per statement (short transactions, bounded locks)."""


class ClaimedRow(NamedTuple):
    """One outbox row in a batch, with the stored JSON text of headers and payload.

    A named tuple rather than a dataclass: a batch builds hundreds of them per
    claim, and a tuple is several times cheaper to construct than a frozen
    dataclass (immutable and compared by value all the same).
    """

    id: int
    message_id: uuid.UUID
    topic: str
    key: str | None
    key_hash: int
    type: str
    source: str
    headers: str
    payload: str
    created_at: dt.datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A row the broker rejected, with its error and when to try it again."""

    row: ClaimedRow
    error: str
    next_attempt_at: dt.datetime


class OutboxStore:
    """Statements of the relay on one outbox table (and its dead-letter table)."""

    def __init__(self, tables: OutboxTables, *, partitions: int, park_dead_letters: bool = True) -> None:
        self.tables = tables
        self.partitions = partitions
        self.park_dead_letters = park_dead_letters
        o = tables.outbox
        self._columns = (
            o.c.id,
            o.c.message_id,
            o.c.topic,
            o.c.key,
            o.c.key_hash,
            o.c.type,
            o.c.source,
            # jsonb on PostgreSQL: read it back as text, never re-encode it.
            cast(o.c.headers, Text).label("headers"),
            cast(o.c.payload, Text).label("payload"),
            o.c.created_at,
            o.c.attempts,
        )

    def _due(
        self, now: dt.datetime, parked: Sequence[tuple[str, int, int]] | None
    ) -> list[ColumnElement[bool]]:
        """Conditions of a claimable row; ``parked`` = (key, key_hash, id) of rows in backoff."""
        o = self.tables.outbox
        due: list[ColumnElement[bool]] = [
            o.c.published_at.is_(None),
            o.c.available_at <= now,
            or_(o.c.next_attempt_at.is_(None), o.c.next_attempt_at <= now),
        ]
        if parked is None:  # too many parked keys to list: let the database anti-join
            due.append(~self._behind_parked_key(now))
        else:
            # Usually empty: then the claim is a plain index scan in id order.
            due += [~and_(o.c.key_hash == h, o.c.key == k, o.c.id > i) for k, h, i in parked]
        return due

    def _behind_parked_key(self, now: dt.datetime) -> ColumnElement[bool]:
        """The row waits for its key: an earlier row of it is in backoff (or dead-lettered, park-key).

        The one predicate behind the claim's anti-join and ``count_behind_parked``
        (what ``status`` reports as behind a parked key), so the two cannot drift.
        """
        o = self.tables.outbox
        parked = o.alias("parked")
        behind: ColumnElement[bool] = exists().where(
            parked.c.next_attempt_at > now,
            parked.c.published_at.is_(None),
            parked.c.key_hash == o.c.key_hash,
            parked.c.key == o.c.key,
            parked.c.id < o.c.id,
        )
        return or_(behind, self._behind_dead_letter()) if self.park_dead_letters else behind

    def _behind_dead_letter(self) -> ColumnElement[bool]:
        """The row has an earlier dead letter of its key, not retried yet (park-key)."""
        o, dl = self.tables.outbox, self.tables.dead_letter
        return exists().where(
            dl.c.retried_at.is_(None), dl.c.key_hash == o.c.key_hash, dl.c.key == o.c.key, dl.c.id < o.c.id
        )

    def parked_keys(self, conn: Connection, *, now: dt.datetime) -> list[tuple[str, int, int]] | None:
        """Keys with a row in backoff (or a dead letter, with park-key) and the smallest such id.

        ``None`` if more than a few hundred: the claim then anti-joins instead.
        """
        o = self.tables.outbox
        rows: list[tuple[str, int, int]] = [
            (str(k), int(h), int(i))
            for k, h, i in conn.execute(
                select(o.c.key, o.c.key_hash, func.min(o.c.id))
                .where(o.c.next_attempt_at > now, o.c.published_at.is_(None), o.c.key.is_not(None))
                .group_by(o.c.key, o.c.key_hash)
                .limit(_MAX_LISTED_PARKED + 1)
            )
        ]
        if self.park_dead_letters:
            rows += self.dead_lettered_keys(conn, limit=_MAX_LISTED_PARKED + 1)
        first: dict[tuple[str, int], int] = {}
        for k, h, i in rows:
            first[k, h] = min(i, first.get((k, h), i))
        if len(first) > _MAX_LISTED_PARKED:
            return None
        return [(k, h, i) for (k, h), i in first.items()]

    def dead_lettered_keys(self, conn: Connection, *, limit: int) -> list[tuple[str, int, int]]:
        """Keys with a dead letter not retried yet, with its smallest id: parked with park-key."""
        dl = self.tables.dead_letter
        rows = conn.execute(
            select(dl.c.key, dl.c.key_hash, func.min(dl.c.id))
            .where(dl.c.retried_at.is_(None), dl.c.key.is_not(None))
            .group_by(dl.c.key, dl.c.key_hash)
            .order_by(func.min(dl.c.id))
            .limit(limit)
        ).all()
        return [(str(k), int(h), int(i)) for k, h, i in rows]

    def _in_partitions(self, owned: Sequence[int] | None) -> list[ColumnElement[bool]]:
        if owned is None or len(owned) == self.partitions:
            return []
        return [(self.tables.outbox.c.key_hash % literal(self.partitions)).in_(sorted(owned))]

    def claim_batch(
        self, conn: Connection, *, owned: Sequence[int] | None, limit: int, now: dt.datetime
    ) -> list[ClaimedRow]:
        """The oldest due rows of the ``owned`` relay partitions (all when ``None``), in id order."""
        o = self.tables.outbox
        parked = self.parked_keys(conn, now=now)
        query = (
            select(*self._columns)
            .where(*self._due(now, parked), *self._in_partitions(owned))
            .order_by(o.c.id)
            .limit(limit)
        )
        make = ClaimedRow._make
        return [make(row) for row in conn.execute(query).all()]

    def has_due(self, conn: Connection, *, now: dt.datetime) -> bool:
        """Whether any row of any partition is due (``--once`` exits when none is)."""
        o = self.tables.outbox
        due = self._due(now, self.parked_keys(conn, now=now))
        return conn.execute(select(o.c.id).where(*due).limit(1)).first() is not None

    def complete(
        self,
        conn: Connection,
        published: Sequence[ClaimedRow],
        *,
        keep: bool,
        now: dt.datetime,
        incarnation: tuple[str, str] | None,
    ) -> int:
        """Delete the published rows, or stamp ``published_at`` when ``keep``; return rows done.

        With ``incarnation = (state name, token)`` the rows are only marked if the
        broker's incarnation recorded in the database is still ``token``: a
        batch that went into a broker which has since lost its data stays
        pending and is published again.
        """
        if not published:
            return 0
        o = self.tables.outbox
        where: list[ColumnElement[bool]] = [_id_in(o.c.id, [r.id for r in published], conn)]
        if incarnation is not None:
            name, token = incarnation
            where.append(exists().where(relay_state.c.name == name, relay_state.c.value == token))
        if keep:
            stmt = (
                update(o)
                .where(*where, o.c.published_at.is_(None))
                .values(published_at=now, next_attempt_at=None)
            )
            return conn.execute(stmt).rowcount
        return conn.execute(delete(o).where(*where)).rowcount

    def record_failures(
        self, conn: Connection, failures: Sequence[Failure], *, max_attempts: int, now: dt.datetime
    ) -> list[ClaimedRow]:
        """Count an attempt for each rejected row; move rows out of attempts to dead letters.

        Returns the rows that were dead-lettered.
        """
        o = self.tables.outbox
        dead: list[ClaimedRow] = []
        for failure in failures:
            if failure.row.attempts + 1 >= max_attempts:
                self._dead_letter(conn, failure, now)
                dead.append(failure.row)
                continue
            conn.execute(
                update(o)
                .where(o.c.id == failure.row.id)
                .values(
                    attempts=o.c.attempts + 1,
                    last_error=failure.error[:2000],
                    next_attempt_at=failure.next_attempt_at,
                )
            )
        return dead

    def _dead_letter(self, conn: Connection, failure: Failure, now: dt.datetime) -> None:
        o, dl = self.tables.outbox, self.tables.dead_letter
        names = [c.name for c in dl.columns if c.name in o.c and c.name not in ("attempts", "last_error")]
        source = select(
            *(o.c[n] for n in names),
            (o.c.attempts + 1).label("attempts"),
            literal(failure.error[:2000], Text).label("last_error"),
            literal(now, dl.c.dead_lettered_at.type).label("dead_lettered_at"),
        ).where(o.c.id == failure.row.id)
        # A message retried earlier and failing again replaces its old dead letter.
        conn.execute(delete(dl).where(dl.c.id == failure.row.id))
        conn.execute(insert(dl).from_select([*names, "attempts", "last_error", "dead_lettered_at"], source))
        conn.execute(delete(o).where(o.c.id == failure.row.id))

    def delete_expired(
        self, conn: Connection, *, older_than: dt.datetime, limit: int = RETENTION_BATCH
    ) -> int:
        """Retention: delete up to ``limit`` rows published before ``older_than``."""
        o = self.tables.outbox
        ids = (
            select(o.c.id)
            .where(o.c.published_at.is_not(None), o.c.published_at < older_than)
            .limit(limit)
            .scalar_subquery()
        )
        return conn.execute(delete(o).where(o.c.id.in_(ids))).rowcount

    def replay_since(self, conn: Connection, *, since: dt.datetime) -> int:
        """Make rows published at or after ``since`` pending again (the broker lost them)."""
        o = self.tables.outbox
        stmt = (
            update(o)
            .where(o.c.published_at.is_not(None), o.c.published_at >= since)
            .values(published_at=None)
        )
        return conn.execute(stmt).rowcount

    def oldest_due_since(self, conn: Connection, *, now: dt.datetime) -> dt.datetime | None:
        """When the longest-waiting claimable row became available (``None`` when nothing is due).

        Measured from ``available_at``, not ``created_at``: a delayed row is not late
        before its time, and an alert on this age must not fire for it.
        """
        o = self.tables.outbox
        value: dt.datetime | None = conn.execute(
            select(func.min(o.c.available_at)).where(*self._due(now, None))
        ).scalar_one()
        return value

    def count_behind_parked(self, conn: Connection, *, now: dt.datetime) -> int:
        """Rows waiting because an earlier row of their key is in backoff (or dead-lettered, park-key)."""
        o = self.tables.outbox
        query = select(func.count()).where(o.c.published_at.is_(None), self._behind_parked_key(now))
        return int(conn.execute(query).scalar_one())


def _id_in(column: ColumnElement[int], ids: list[int], conn: Connection) -> ColumnElement[bool]:
    """``id = ANY(:ids)`` on PostgreSQL (one array parameter, one cached plan), ``IN (...)`` elsewhere."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", ids, type_=postgresql.ARRAY(BigInteger())))
    return column.in_(ids)

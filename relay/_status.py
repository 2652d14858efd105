"""Backlog figures shared by ``outboxkit status`` and the relay's metrics."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select, text

from outbox.tables import OutboxTables

from .tables import relay_lease, relay_member

__all__ = ["OPEN_TX_AGE_S", "Backlog", "read_backlog", "read_dead_letters_by_topic", "read_open_transactions"]

OPEN_TX_AGE_S = 5
"""Transactions open longer than this are reported (status, metrics): their rows appear when they commit."""


@dataclass(slots=True)
class Backlog:
    """What is waiting, and why."""

    pending: int = 0
    oldest_age_s: float | None = None
    oldest_due_age_s: float | None = None
    due: int = 0
    delayed: int = 0
    in_backoff: int = 0
    behind_parked_key: int = 0
    kept_published: int = 0
    pending_by_topic: dict[str, int] = field(default_factory=dict)
    dead_letters_by_topic: dict[str, int] = field(default_factory=dict)
    relays: list[dict[str, object]] = field(default_factory=list)
    parked_keys: list[str] = field(default_factory=list)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive UTC
        return value.replace(tzinfo=dt.UTC)
    return value


def read_open_transactions(conn: Connection) -> tuple[int, float] | None:
    """Transactions open longer than :data:`OPEN_TX_AGE_S` in this database, and the oldest one's age.

    PostgreSQL only (``None`` elsewhere). Nothing waits behind them (rows are
    claimed by state, not by a high-water mark), but the rows such a transaction
    wrote stay invisible, so its own events are late. ``pg_stat_activity`` shows
    other roles' transactions only to superusers and ``pg_read_all_stats``.
    """
    if conn.dialect.name != "postgresql":
        return None
    row = conn.execute(
        text(
            "SELECT count(*), coalesce(extract(epoch FROM max(now() - xact_start)), 0) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND xact_start < now() - make_interval(secs => :age)"
        ),
        {"age": OPEN_TX_AGE_S},
    ).one()
    return int(row[0]), float(row[1])


def read_dead_letters_by_topic(conn: Connection, tables: OutboxTables) -> dict[str, int]:
    """Dead letters not retried yet, per topic (a purged one is gone from the table)."""
    dl = tables.dead_letter
    query = select(dl.c.topic, func.count()).where(dl.c.retried_at.is_(None)).group_by(dl.c.topic)
    return {t: int(n) for t, n in conn.execute(query)}


def read_backlog(conn: Connection, tables: OutboxTables, *, now: dt.datetime, detail: bool = True) -> Backlog:
    """Count pending rows and classify them; ``detail`` adds per-topic and relay figures."""
    o = tables.outbox
    pending = o.c.published_at.is_(None)
    row = conn.execute(
        select(
            func.count(),
            func.min(o.c.created_at),
            func.count().filter(o.c.available_at > now),
            func.count().filter(o.c.next_attempt_at > now),
        ).where(pending)
    ).one()
    backlog = Backlog(pending=int(row[0]), delayed=int(row[2]), in_backoff=int(row[3]))
    oldest = _aware(row[1])
    backlog.oldest_age_s = None if oldest is None else max((now - oldest).total_seconds(), 0.0)
    from ._store import OutboxStore  # noqa: PLC0415 - avoid an import cycle at module load

    backlog.behind_parked_key = OutboxStore(tables, partitions=1).count_behind_parked(conn, now=now)
    backlog.due = backlog.pending - backlog.delayed - backlog.in_backoff - backlog.behind_parked_key
    due_since = _aware(OutboxStore(tables, partitions=1).oldest_due_since(conn, now=now))
    backlog.oldest_due_age_s = None if due_since is None else max((now - due_since).total_seconds(), 0.0)
    backlog.dead_letters_by_topic = read_dead_letters_by_topic(conn, tables)
    if not detail:
        return backlog
    backlog.kept_published = int(
        conn.execute(select(func.count()).where(o.c.published_at.is_not(None))).scalar_one()
    )
    backlog.pending_by_topic = {
        t: int(n) for t, n in conn.execute(select(o.c.topic, func.count()).where(pending).group_by(o.c.topic))
    }
    # Keys parked behind a dead letter (relays with --on-dead-letter park-key), issue #9.
    backlog.parked_keys = [
        k for k, _, _ in OutboxStore(tables, partitions=1).dead_lettered_keys(conn, limit=50)
    ]
    scope = o.fullname
    owned: dict[str, int] = dict(
        conn.execute(
            select(relay_lease.c.owner, func.count())
            .where(
                relay_lease.c.scope == scope, relay_lease.c.owner.is_not(None), relay_lease.c.expires_at > now
            )
            .group_by(relay_lease.c.owner)
        ).all()
    )
    for m in conn.execute(
        select(relay_member).where(relay_member.c.scope == scope).order_by(relay_member.c.relay_id)
    ):
        expires = _aware(m.expires_at)
        backlog.relays.append(
            {
                "relay_id": m.relay_id,
                "host": m.host,
                "pid": m.pid,
                "alive": expires is not None and expires > now,
                "idle": bool(m.idle),
                "partitions": int(owned.get(m.relay_id, 0)),
                "heartbeat_at": _aware(m.heartbeat_at).isoformat() if m.heartbeat_at else None,  # type: ignore[union-attr]
            }
        )
    return backlog

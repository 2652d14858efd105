"""Dead letters for the pages: filtered lists and one message in full, relay side and consumer side.

Retry and purge go through the library (relay: :class:`relay._dead_letters.DeadLetters`,
the same code as ``outboxkit dead-letters``, so retry keeps per-key order;
consumer: ``inbox.retry_dead_letter`` / ``inbox.purge_dead_letters``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Table, exists, select

from inbox import ConsumerDeadLetter, inbox_dead_letter

from ._database import DashboardDatabase
from ._filters import LetterFilter

__all__ = [
    "LIST_LIMIT",
    "RelayLetter",
    "consumer_letter",
    "consumer_letters",
    "relay_letter",
    "relay_letters",
]

LIST_LIMIT = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayLetter:
    """One relay dead letter as the pages show it."""

    id: int
    message_id: str
    topic: str
    key: str | None
    type: str
    source: str
    attempts: int
    last_error: str | None
    created_at: dt.datetime
    dead_lettered_at: dt.datetime
    retried_at: dt.datetime | None
    retried_by: str | None
    headers: str
    payload: str
    in_outbox: bool  # a row with this id is back in the outbox (retried, not relayed yet or kept)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


def _pretty(value: object) -> str:
    """JSON text for display (escaped by the template, never interpreted)."""
    loaded = json.loads(value) if isinstance(value, str) else value
    return json.dumps(loaded, indent=2, ensure_ascii=False, sort_keys=True)


def _where(
    table: Table, when: str, error: str, f: LetterFilter, now: dt.datetime
) -> list[ColumnElement[bool]]:
    c = table.c
    where: list[ColumnElement[bool]] = []
    if f.topic is not None:
        where.append(c.topic == f.topic)
    if f.key is not None:
        where.append(c.key == f.key)
    if f.error is not None:
        where.append(c[error].icontains(f.error, autoescape=True))
    if f.older_than is not None:
        where.append(c[when] < now - f.older_than)
    if f.newer_than is not None:
        where.append(c[when] >= now - f.newer_than)
    if not f.include_retried:
        where.append(c.retried_at.is_(None))
    return where


def _relay_letter(row: object) -> RelayLetter:
    m = row._mapping  # type: ignore[attr-defined]  # noqa: SLF001 - SQLAlchemy's public row API
    return RelayLetter(
        id=int(m["id"]), message_id=str(m["message_id"]), topic=m["topic"], key=m["key"], type=m["type"],
        source=m["source"], attempts=int(m["attempts"]), last_error=m["last_error"],
        created_at=_aware(m["created_at"]), dead_lettered_at=_aware(m["dead_lettered_at"]),  # type: ignore[arg-type]
        retried_at=_aware(m["retried_at"]), retried_by=m["retried_by"],
        headers=_pretty(m["headers"]), payload=_pretty(m["payload"]), in_outbox=bool(m["in_outbox"]),
    )  # fmt: skip


def _relay_query(db: DashboardDatabase):  # type: ignore[no-untyped-def]  # noqa: ANN202 - a Select of many columns
    dl, o = db.tables.dead_letter, db.tables.outbox
    return select(dl, exists().where(o.c.id == dl.c.id).label("in_outbox"))


def relay_letters(conn: Connection, db: DashboardDatabase, f: LetterFilter) -> list[RelayLetter]:
    """Relay dead letters matching ``f``, oldest id first (at most :data:`LIST_LIMIT`)."""
    dl = db.tables.dead_letter
    where = _where(dl, "dead_lettered_at", "last_error", f, dt.datetime.now(dt.UTC))
    query = _relay_query(db).where(*where).order_by(dl.c.id).limit(LIST_LIMIT)
    return [_relay_letter(r) for r in conn.execute(query)]


def relay_letter(conn: Connection, db: DashboardDatabase, letter_id: int) -> RelayLetter | None:
    """One relay dead letter, or ``None``."""
    row = conn.execute(_relay_query(db).where(db.tables.dead_letter.c.id == letter_id)).first()
    return None if row is None else _relay_letter(row)


def relay_letters_by_id(conn: Connection, db: DashboardDatabase, ids: list[int]) -> list[RelayLetter]:
    """The relay dead letters with these ids (those that exist)."""
    dl = db.tables.dead_letter
    return [
        _relay_letter(r) for r in conn.execute(_relay_query(db).where(dl.c.id.in_(ids)).order_by(dl.c.id))
    ]


def _consumer_letter(row: object) -> ConsumerDeadLetter:
    values = dict(row._mapping)  # type: ignore[attr-defined]  # noqa: SLF001 - SQLAlchemy's public row API
    values["fields"] = json.loads(str(values["fields"]))
    for name in ("dead_lettered_at", "retried_at"):
        values[name] = _aware(values[name])
    return ConsumerDeadLetter(**values)


def consumer_letters(conn: Connection, f: LetterFilter) -> list[ConsumerDeadLetter]:
    """Consumer dead letters matching ``f`` (``group`` is the consumer), oldest first."""
    d = inbox_dead_letter
    where = _where(d, "dead_lettered_at", "error", f, dt.datetime.now(dt.UTC))
    if f.group is not None:
        where.append(d.c.consumer == f.group)
    query = select(d).where(*where).order_by(d.c.id).limit(LIST_LIMIT)
    return [_consumer_letter(r) for r in conn.execute(query)]


def consumer_letter(conn: Connection, letter_id: int) -> ConsumerDeadLetter | None:
    """One consumer dead letter, or ``None``."""
    row = conn.execute(select(inbox_dead_letter).where(inbox_dead_letter.c.id == letter_id)).first()
    return None if row is None else _consumer_letter(row)


def consumer_letters_by_id(conn: Connection, ids: list[int]) -> list[ConsumerDeadLetter]:
    """The consumer dead letters with these ids (those that exist)."""
    d = inbox_dead_letter
    return [_consumer_letter(r) for r in conn.execute(select(d).where(d.c.id.in_(ids)).order_by(d.c.id))]


def pretty_fields(letter: ConsumerDeadLetter) -> tuple[str, str]:
    """The entry's headers and payload as display text (the raw fields when they are not JSON)."""
    fields = dict(letter.fields)
    payload = fields.pop("data", None) or fields.pop("payload", None) or ""
    try:
        shown = _pretty(payload)
    except ValueError:
        shown = payload
    return json.dumps(fields, indent=2, ensure_ascii=False, sort_keys=True), shown

"""Consumer-side dead letters: entries set aside with their error, in the consumer's database.

A table rather than a dead-letter stream: recording it is one insert in the
consumer's own database (no second broker write that could fail after the
first), it survives a broker restart, and listing, retrying and purging are
plain queries. Recording is idempotent (unique per consumer, stream and entry):
a consumer killed between recording and acknowledging records it once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, RowMapping, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from brokers import Delivery
from outbox import Envelope, StorageError, decode_entry

from ._dedup import ProcessResult, process
from ._registry import Registry
from .tables import inbox_dead_letter

__all__ = [
    "ConsumerDeadLetter",
    "count_dead_letters",
    "insert_dead_letter",
    "purge_dead_letters",
    "raw_fields",
    "retry_dead_letter",
    "select_dead_letters",
]

_MAX_ERROR = 4000


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerDeadLetter:
    """A broker entry a consumer gave up handling, as stored (``outboxkit consumer-dead-letters``).

    Not the relay's ``OutboxDeadLetter``, an outbox row it gave up publishing.

    .. versionadded:: 0.1
    """

    id: int
    consumer: str
    stream: str
    entry_id: str
    message_id: str | None
    topic: str | None
    type: str | None
    key: str | None
    fields: dict[str, str]
    error: str
    deliveries: int
    dead_lettered_at: dt.datetime
    retried_at: dt.datetime | None


def raw_fields(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """The entry as text: bytes that are not UTF-8 become backslash escapes."""

    def text(value: bytes | str) -> str:
        return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)

    return {text(k): text(v) for k, v in fields.items()}


def insert_dead_letter(
    conn: Connection,
    *,
    consumer: str,
    delivery: Delivery,
    message: Envelope | None,
    error: str,
    deliveries: int,
) -> bool:
    """Record a dead letter in the caller's transaction; False if this entry was already recorded."""
    row = {
        "consumer": consumer,
        "stream": delivery.stream,
        "entry_id": delivery.entry_id,
        "message_id": None if message is None else str(message.id),
        "topic": None if message is None else message.topic,
        "type": None if message is None else message.type,
        "key": None if message is None else message.key,
        "fields": json.dumps(raw_fields(delivery.fields), ensure_ascii=False),
        "error": error[:_MAX_ERROR],
        "deliveries": deliveries,
        "dead_lettered_at": dt.datetime.now(dt.UTC),
    }
    target = ["consumer", "stream", "entry_id"]
    stmt: postgresql.Insert | sqlite.Insert
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(inbox_dead_letter).values(row).on_conflict_do_nothing(index_elements=target)
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(inbox_dead_letter).values(row).on_conflict_do_nothing(index_elements=target)
    else:
        try:
            with conn.begin_nested():
                conn.execute(insert(inbox_dead_letter), [row])
        except IntegrityError:
            return False
        return True
    # RETURNING, not rowcount: psycopg reports -1 for some upserts.
    return conn.execute(stmt.returning(inbox_dead_letter.c.id)).first() is not None


def _to_dead_letter(row: RowMapping) -> ConsumerDeadLetter:
    values = dict(row)
    values["fields"] = json.loads(str(values["fields"]))
    for name in ("dead_lettered_at", "retried_at"):
        when = values[name]
        if isinstance(when, dt.datetime) and when.tzinfo is None:
            values[name] = when.replace(tzinfo=dt.UTC)
    return ConsumerDeadLetter(**values)


def select_dead_letters(
    engine: Engine, *, consumer: str | None = None, limit: int = 100, include_retried: bool = False
) -> list[ConsumerDeadLetter]:
    """The oldest dead letters not retried yet (or all, retried ones too), of one consumer or all.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``include_retried``.
    """
    d = inbox_dead_letter
    query = select(d).order_by(d.c.id).limit(limit)
    if not include_retried:
        query = query.where(d.c.retried_at.is_(None))
    if consumer is not None:
        query = query.where(d.c.consumer == consumer)
    with engine.connect() as conn:
        return [_to_dead_letter(r._mapping) for r in conn.execute(query)]  # noqa: SLF001 - SQLAlchemy's public row API


def purge_dead_letters(engine: Engine, *, consumer: str | None = None, ids: list[int] | None = None) -> int:
    """Delete dead letters (of one consumer, or the given ids); return how many.

    .. versionadded:: 0.1
    """
    d = inbox_dead_letter
    stmt = delete(d)
    if consumer is not None:
        stmt = stmt.where(d.c.consumer == consumer)
    if ids is not None:
        stmt = stmt.where(d.c.id.in_(ids))
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount


def retry_dead_letter(engine: Engine, registry: Registry, dead_letter_id: int) -> ProcessResult:
    """Run a dead letter's sync handler again, idempotently, and mark it retried on success.

    The handler runs through the inbox like any delivery, in one transaction
    with the ``retried_at`` update: if it raises, nothing changes and the error
    propagates.

    .. versionadded:: 0.1
    """
    d = inbox_dead_letter
    with Session(engine) as session, session.begin():
        row = session.execute(select(d).where(d.c.id == dead_letter_id).with_for_update()).first()
        if row is None:
            msg = f"no dead letter with id {dead_letter_id}"
            raise StorageError(msg)
        letter = _to_dead_letter(row._mapping)  # noqa: SLF001 - SQLAlchemy's public row API
        message = decode_entry(dict(letter.fields.items()))
        spec = registry.match(message)
        if spec is None or spec.is_async:
            msg = f"no sync handler for topic {message.topic!r} type {message.type!r}"
            raise StorageError(msg)
        outcome = process(session, letter.consumer, message, spec.func, attempts=letter.deliveries + 1)  # type: ignore[arg-type]
        session.execute(update(d).where(d.c.id == dead_letter_id).values(retried_at=dt.datetime.now(dt.UTC)))
        return outcome


def count_dead_letters(conn: Connection) -> dict[str, int]:
    """Dead letters not retried yet, per consumer (parked entries are shown as parked, not counted).

    .. versionadded:: 0.1
    """
    from ._parking import PARKED_ERROR  # noqa: PLC0415 - _parking imports this module

    d = inbox_dead_letter
    rows = conn.execute(
        select(d.c.consumer, func.count())
        .where(d.c.retried_at.is_(None), d.c.error != PARKED_ERROR)
        .group_by(d.c.consumer)
    )
    return {consumer: int(n) for consumer, n in rows}

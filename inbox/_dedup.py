"""Idempotent handling: the inbox record joins the handler's transaction.

The one primitive is :func:`record_message`: ``INSERT ... ON CONFLICT DO
NOTHING`` of the ``(consumer, message_id)`` row, in the caller's transaction.
One row inserted means the message is new; none means another transaction
already committed it. On PostgreSQL a second transaction racing on the same id
blocks on the first one's uncommitted row, then sees the conflict (or inserts,
if the first rolled back), so exactly one of them commits its effects and the
other gets a duplicate outcome, with no error. SQLite serializes writers.

Nothing here commits or rolls back: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from sqlalchemy import Connection, Executable, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox import (
    Envelope,
    StorageError,
    ValidationError,
    is_missing_table,
    tables_missing,
)
from outbox._dberrors import driver_reason

from ._guard import call_sync, guarded
from .tables import inbox

__all__ = [
    "AsyncHandler",
    "ProcessResult",
    "SyncHandler",
    "process",
    "process_async",
    "record_message",
    "record_message_async",
    "record_messages",
    "record_messages_async",
]

SyncHandler: TypeAlias = Callable[[Envelope, Session], None]
"""A handler run with a synchronous :class:`~sqlalchemy.orm.Session`."""
AsyncHandler: TypeAlias = Callable[[Envelope, AsyncSession], Awaitable[None]]
"""An ``async def`` handler run with an :class:`~sqlalchemy.ext.asyncio.AsyncSession`."""

_MAX_ID_LENGTH = 255
SyncTarget: TypeAlias = Session | Connection
AsyncTarget: TypeAlias = AsyncSession | AsyncConnection


class ProcessResult(enum.StrEnum):
    """What :func:`process` did with one message for one consumer: ran its handler, or found a duplicate.

    .. versionadded:: 0.1
    """

    PROCESSED = "processed"
    """New for this consumer: the handler ran and its effects join the transaction."""
    DUPLICATE = "duplicate"
    """Already processed by this consumer: the handler did not run."""


def _row(consumer: str, message_id: str | uuid.UUID, topic: str | None, attempts: int) -> dict[str, Any]:
    if not isinstance(consumer, str) or not consumer or len(consumer) > _MAX_ID_LENGTH:
        msg = f"consumer must be a non-empty str of at most {_MAX_ID_LENGTH} characters"
        raise ValidationError(msg)
    text = str(message_id) if isinstance(message_id, uuid.UUID) else message_id
    if not isinstance(text, str) or not text or len(text) > _MAX_ID_LENGTH:
        msg = f"message_id must be a UUID or a non-empty str of at most {_MAX_ID_LENGTH} characters"
        raise ValidationError(msg)
    if not isinstance(attempts, int) or attempts < 1:
        msg = f"attempts must be a positive integer, got {attempts!r}"
        raise ValidationError(msg)
    return {
        "consumer": consumer,
        "message_id": text,
        "topic": topic,
        "processed_at": dt.datetime.now(dt.UTC),
        "attempts": attempts,
    }


@functools.lru_cache(maxsize=8)
def _upsert(dialect_name: str) -> Executable | None:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING message_id``; None if unsupported.

    Built once and executed with parameters, so SQLAlchemy's statement cache
    and insertmanyvalues batching apply (a ``.values(rows)`` statement would be
    compiled again for every call).
    """
    stmt: postgresql.Insert | sqlite.Insert
    if dialect_name == "postgresql":
        stmt = postgresql.insert(inbox).on_conflict_do_nothing(index_elements=["consumer", "message_id"])
    elif dialect_name == "sqlite":
        stmt = sqlite.insert(inbox).on_conflict_do_nothing(index_elements=["consumer", "message_id"])
    else:
        return None
    return stmt.returning(inbox.c.message_id)


def _dialect(target: SyncTarget | AsyncTarget) -> Dialect:
    if isinstance(target, Session):
        return target.get_bind().dialect
    if isinstance(target, AsyncSession):
        return target.sync_session.get_bind().dialect
    return target.dialect


def _storage_error(exc: DBAPIError) -> StorageError:
    if is_missing_table(exc):
        return tables_missing("inbox table 'outboxkit_inbox'")
    return StorageError(f"could not write to the inbox: {driver_reason(exc)}")


def record_messages(
    target: SyncTarget,
    consumer: str,
    message_ids: Sequence[tuple[str | uuid.UUID, str | None]],
    *,
    attempts: int = 1,
) -> set[str]:
    """Record several messages as processed by ``consumer``; return the ids that were new.

    One multi-row ``INSERT ... ON CONFLICT DO NOTHING`` in the caller's
    transaction. ``message_ids`` holds ``(message_id, topic)`` pairs.

    .. versionadded:: 0.1
    """
    rows = [_row(consumer, mid, topic, attempts) for mid, topic in message_ids]
    if not rows:
        return set()
    stmt = _upsert(_dialect(target).name)
    try:
        if stmt is None:
            return {row["message_id"] for row in rows if _insert_fallback(target, row)}
        return {str(r[0]) for r in target.execute(stmt, rows[0] if len(rows) == 1 else rows)}
    except DBAPIError as exc:
        raise _storage_error(exc) from exc


def _insert_fallback(target: SyncTarget, row: dict[str, Any]) -> bool:
    # Databases without ON CONFLICT: a savepoint keeps the conflict from
    # aborting the caller's transaction.
    try:
        with target.begin_nested():
            target.execute(insert(inbox), [row])
    except IntegrityError:
        return False
    return True


def record_message(
    target: SyncTarget,
    consumer: str,
    message_id: str | uuid.UUID,
    *,
    topic: str | None = None,
    attempts: int = 1,
) -> bool:
    """Record ``message_id`` as processed by ``consumer`` in the caller's transaction.

    Returns:
        True if this is the first time (do the work, then commit); False if
        the message was already processed (skip it). A concurrent transaction
        recording the same id makes this call wait until it ends.

    Example::

        with Session(engine) as session, session.begin():
            if inbox.record_message(session, "billing", webhook_delivery_id):
                charge(session, ...)

    .. versionadded:: 0.1
    """
    key = str(message_id) if isinstance(message_id, uuid.UUID) else message_id
    return key in record_messages(target, consumer, [(key, topic)], attempts=attempts)


async def record_messages_async(
    target: AsyncTarget,
    consumer: str,
    message_ids: Sequence[tuple[str | uuid.UUID, str | None]],
    *,
    attempts: int = 1,
) -> set[str]:
    """Async form of :func:`record_messages` for ``AsyncSession``/``AsyncConnection``.

    .. versionadded:: 0.1
    """
    rows = [_row(consumer, mid, topic, attempts) for mid, topic in message_ids]
    if not rows:
        return set()
    stmt = _upsert(_dialect(target).name)
    try:
        if stmt is None:
            return {row["message_id"] for row in rows if await _insert_fallback_async(target, row)}
        return {str(r[0]) for r in await target.execute(stmt, rows[0] if len(rows) == 1 else rows)}
    except DBAPIError as exc:
        raise _storage_error(exc) from exc


async def _insert_fallback_async(target: AsyncTarget, row: dict[str, Any]) -> bool:
    try:
        async with target.begin_nested():
            await target.execute(insert(inbox), [row])
    except IntegrityError:
        return False
    return True


async def record_message_async(
    target: AsyncTarget,
    consumer: str,
    message_id: str | uuid.UUID,
    *,
    topic: str | None = None,
    attempts: int = 1,
) -> bool:
    """Async form of :func:`record_message`.

    .. versionadded:: 0.1
    """
    key = str(message_id) if isinstance(message_id, uuid.UUID) else message_id
    return key in await record_messages_async(target, consumer, [(key, topic)], attempts=attempts)


def process(
    session: Session, consumer: str, message: Envelope, handler: SyncHandler, *, attempts: int = 1
) -> ProcessResult:
    """Run ``handler(message, session)`` unless ``consumer`` already processed ``message``.

    The inbox row and the handler's effects (including messages it publishes
    through the outbox) are in the caller's transaction: commit it to make
    both durable, roll it back if this raises. Nothing here commits.

    Returns:
        :attr:`ProcessResult.PROCESSED` or :attr:`ProcessResult.DUPLICATE`.

    Raises:
        Whatever the handler raises; the caller must roll back.

    .. versionadded:: 0.1
    """
    if not record_message(session, consumer, message.id, topic=message.topic, attempts=attempts):
        return ProcessResult.DUPLICATE
    with guarded(session.info):
        call_sync(handler, message, session, getattr(handler, "__qualname__", repr(handler)))
    return ProcessResult.PROCESSED


async def process_async(
    session: AsyncSession, consumer: str, message: Envelope, handler: AsyncHandler, *, attempts: int = 1
) -> ProcessResult:
    """Async form of :func:`process`: ``await handler(message, session)`` unless a duplicate.

    .. versionadded:: 0.1
    """
    if not await record_message_async(session, consumer, message.id, topic=message.topic, attempts=attempts):
        return ProcessResult.DUPLICATE
    with guarded(session.info):
        await handler(message, session)
    return ProcessResult.PROCESSED

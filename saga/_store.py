"""The orchestrator's statements on the saga tables, in the caller's transaction.

Every write goes through the caller's ``Session``; nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from outbox import (
    OutboxConfig,
    StorageError,
    default_serializer,
    is_missing_table,
    outbox_tables,
    tables_missing,
)
from outbox._dberrors import driver_reason

from ._definition import SagaData
from ._model import SagaInstance, SagaState, StepLogEntry, StepLogKind
from .tables import saga_instance, saga_step_log, saga_timer

__all__ = [
    "as_utc",
    "delete_timers",
    "insert_instance",
    "insert_log",
    "insert_timer",
    "instance_from_row",
    "log_entry_from_row",
    "select_instance",
    "select_timer",
    "storage_error",
    "update_instance",
]


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes that are UTC; make every datetime aware."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _maybe_utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else as_utc(value)


def _load_data(value: object) -> SagaData:
    # jsonb comes back parsed from psycopg, text from SQLite.
    loaded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(loaded, dict):
        msg = "saga data in the database is not a JSON object"
        raise StorageError(msg)
    return loaded


def instance_from_row(m: RowMapping) -> SagaInstance:
    """Build a :class:`SagaInstance` from a row of ``outboxkit_saga``."""
    return SagaInstance(
        id=m["id"],
        type=m["type"],
        state=SagaState(m["state"]),
        step=m["step"],
        attempt=m["attempt"],
        data=_load_data(m["data"]),
        version=m["version"],
        correlation_id=m["correlation_id"],
        error=m["error"],
        deadline_at=_maybe_utc(m["deadline_at"]),
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
    )


def log_entry_from_row(m: RowMapping) -> StepLogEntry:
    """Build a :class:`StepLogEntry` from a row of ``outboxkit_saga_step_log``."""
    return StepLogEntry(
        id=m["id"],
        saga_id=m["saga_id"],
        step=m["step"],
        step_name=m["step_name"],
        attempt=m["attempt"],
        kind=StepLogKind(m["kind"]),
        message_id=m["message_id"],
        detail=m["detail"],
        error=m["error"],
        created_at=as_utc(m["created_at"]),
    )


def storage_error(exc: DBAPIError, what: str) -> StorageError:
    """The toolkit error for a driver error, naming a missing table as such."""
    if is_missing_table(exc):
        return tables_missing("a saga table")
    return StorageError(f"could not {what}: {driver_reason(exc)}")


def select_instance(session: Session, saga_id: uuid.UUID, *, lock: bool) -> SagaInstance | None:
    """The saga, locked ``FOR UPDATE`` when ``lock`` (a no-op on SQLite, which locks the database)."""
    query = select(saga_instance).where(saga_instance.c.id == saga_id)
    if lock:
        query = query.with_for_update()
    row = session.execute(query).mappings().first()
    return None if row is None else instance_from_row(row)


def insert_instance(session: Session, instance: SagaInstance) -> None:
    """Insert a new saga row."""
    session.execute(
        insert(saga_instance).values(
            id=instance.id,
            type=instance.type,
            state=instance.state.value,
            step=instance.step,
            attempt=instance.attempt,
            data=default_serializer(instance.data),
            version=instance.version,
            correlation_id=instance.correlation_id,
            error=instance.error,
            deadline_at=instance.deadline_at,
            created_at=instance.created_at,
            updated_at=instance.updated_at,
        )
    )


def update_instance(session: Session, instance: SagaInstance, *, expected_version: int) -> bool:
    """Write ``instance`` if the stored version is still ``expected_version``; ``False`` if not."""
    result = session.connection().execute(
        update(saga_instance)
        .where(saga_instance.c.id == instance.id, saga_instance.c.version == expected_version)
        .values(
            state=instance.state.value,
            step=instance.step,
            attempt=instance.attempt,
            data=default_serializer(instance.data),
            version=instance.version,
            error=instance.error,
            deadline_at=instance.deadline_at,
            updated_at=instance.updated_at,
        )
    )
    return result.rowcount == 1


def insert_log(session: Session, rows: Sequence[dict[str, object]]) -> None:
    """Append rows to the step log."""
    if rows:
        session.execute(insert(saga_step_log), list(rows))


def select_timer(session: Session, saga_id: uuid.UUID, name: str) -> uuid.UUID | None:
    """The outbox message id of the saga's pending timer ``name``, if it is pending."""
    query = select(saga_timer.c.message_id).where(saga_timer.c.saga_id == saga_id, saga_timer.c.name == name)
    value: uuid.UUID | None = session.execute(query).scalar_one_or_none()
    return value


def insert_timer(session: Session, values: dict[str, object]) -> None:
    """Record a pending timer (unique per saga and name)."""
    session.execute(insert(saga_timer).values(**values))


def delete_timers(
    session: Session, saga_id: uuid.UUID, config: OutboxConfig | None, *, keep: Collection[str] = ()
) -> int:
    """Cancel the saga's pending timers but ``keep``: their rows, and their messages while unpublished.

    A timer message the relay has already taken is left alone; when it
    arrives its row is gone and :meth:`Orchestrator.handle_timer` ignores it.
    """
    which = [saga_timer.c.saga_id == saga_id]
    if keep:
        which.append(saga_timer.c.name.not_in(list(keep)))
    message_ids = list(session.execute(select(saga_timer.c.message_id).where(*which)).scalars())
    if not message_ids:
        return 0
    session.execute(delete(saga_timer).where(*which))
    outbox = outbox_tables(config).outbox
    session.execute(
        delete(outbox).where(outbox.c.message_id.in_(message_ids), outbox.c.published_at.is_(None))
    )
    return len(message_ids)

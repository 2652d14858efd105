"""Read-only views for operators: counts by type and state, one saga and its step log.

``outboxkit status`` and ``outboxkit saga show`` use these; they take a
``Session`` or a ``Connection`` and only read.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ._model import SagaInstance, SagaState, StepLogEntry
from ._store import as_utc, instance_from_row, log_entry_from_row, storage_error
from ._transition import DEADLINE_TIMER
from .tables import saga_instance, saga_step_log, saga_timer

__all__ = ["SagaCount", "count_sagas", "select_saga", "select_saga_deadline", "select_step_log"]
__all__ = [
    "DEFAULT_SAGA_LIST_LIMIT",
    "SagaCount",
    "count_sagas",
    "select_saga",
    "select_sagas",
    "select_step_log",
]

DEFAULT_SAGA_LIST_LIMIT = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaCount:
    """How many sagas of one type are in one state.

    .. versionadded:: 0.1
    """

    type: str
    state: SagaState
    count: int


def count_sagas(target: Session | Connection) -> list[SagaCount]:
    """Sagas by type and state, sorted by type then state (for ``outboxkit status``).

    Raises:
        SchemaMissingError: the saga tables do not exist.

    .. versionadded:: 0.1
    """
    s = saga_instance
    query = (
        select(s.c.type, s.c.state, func.count()).group_by(s.c.type, s.c.state).order_by(s.c.type, s.c.state)
    )
    try:
        rows = target.execute(query).all()
    except DBAPIError as exc:
        raise storage_error(exc, "count sagas") from exc
    return [SagaCount(type=row[0], state=SagaState(row[1]), count=int(row[2])) for row in rows]


def select_saga(target: Session | Connection, saga_id: uuid.UUID) -> SagaInstance | None:
    """One saga as stored, or ``None``.

    .. versionadded:: 0.1
    """
    try:
        row = target.execute(select(saga_instance).where(saga_instance.c.id == saga_id)).mappings().first()
    except DBAPIError as exc:
        raise storage_error(exc, "read the saga") from exc
    return None if row is None else instance_from_row(row)


def select_step_log(target: Session | Connection, saga_id: uuid.UUID) -> list[StepLogEntry]:
    """One saga's step log, oldest first (for ``outboxkit saga show``).

    .. versionadded:: 0.1
    """
    log = saga_step_log
    query = select(log).where(log.c.saga_id == saga_id).order_by(log.c.id)
    try:
        rows = target.execute(query).mappings().all()
    except DBAPIError as exc:
        raise storage_error(exc, "read the saga step log") from exc
    return [log_entry_from_row(row) for row in rows]


def select_saga_deadline(target: Session | Connection, saga_id: uuid.UUID) -> dt.datetime | None:
    """When the saga's overall deadline passes, while it is pending (``SagaDefinition.deadline``).

    ``None`` for a saga without a deadline, one that ended, or one whose deadline already fired.

    .. versionadded:: 0.1
    """
    t = saga_timer
    query = select(t.c.fires_at).where(t.c.saga_id == saga_id, t.c.name == DEADLINE_TIMER)
    try:
        value = target.execute(query).scalar()
    except DBAPIError as exc:
        raise storage_error(exc, "read the saga deadline") from exc
    return None if value is None else as_utc(value)


def select_sagas(
    target: Session | Connection,
    *,
    saga_type: str | None = None,
    state: SagaState | None = None,
    older_than: dt.timedelta | None = None,
    limit: int = DEFAULT_SAGA_LIST_LIMIT,
    now: dt.datetime | None = None,
) -> list[SagaInstance]:
    """Sagas, newest first: of one type, in one state, started longer than ``older_than`` ago.

    For ``outboxkit saga list`` and the dashboard; only reads.

    .. versionadded:: 0.1
    """
    s = saga_instance
    query = select(s).order_by(s.c.created_at.desc(), s.c.id).limit(max(limit, 0))
    if saga_type is not None:
        query = query.where(s.c.type == saga_type)
    if state is not None:
        query = query.where(s.c.state == state.value)
    if older_than is not None:
        query = query.where(s.c.created_at < (now or dt.datetime.now(dt.UTC)) - older_than)
    try:
        rows = target.execute(query).mappings().all()
    except DBAPIError as exc:
        raise storage_error(exc, "list sagas") from exc
    return [instance_from_row(row) for row in rows]

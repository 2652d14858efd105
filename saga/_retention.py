"""Retention: delete finished sagas and their step logs after a while.

The step log is an audit trail while a saga runs and shortly after; kept for
ever it grows without bound. Only final sagas (``completed``, ``compensated``)
are ever deleted; running and compensating ones are never touched.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ._model import SagaState
from ._store import storage_error
from .tables import saga_instance, saga_step_log, saga_timer

__all__ = ["DEFAULT_PURGE_BATCH", "purge_sagas"]

DEFAULT_PURGE_BATCH = 1000
"""Sagas deleted per call: one bounded transaction, run it again until it returns 0."""
_FINAL = [SagaState.COMPLETED.value, SagaState.COMPENSATED.value]


def purge_sagas(session: Session, *, finished_before: dt.datetime, limit: int = DEFAULT_PURGE_BATCH) -> int:
    """Delete up to ``limit`` final sagas last changed before ``finished_before``; return how many.

    Step log and timer rows go with them (explicitly: SQLite does not enforce
    ``ON DELETE CASCADE`` unless foreign keys are switched on). Runs in the
    caller's transaction and never commits.

    .. versionadded:: 0.1
    """
    if finished_before.tzinfo is None:
        msg = "finished_before must be timezone-aware"
        raise ValueError(msg)
    s = saga_instance
    try:
        ids = list(
            session.execute(
                select(s.c.id)
                .where(s.c.state.in_(_FINAL), s.c.updated_at < finished_before)
                .order_by(s.c.updated_at)
                .limit(limit)
            ).scalars()
        )
        if ids:
            session.execute(delete(saga_step_log).where(saga_step_log.c.saga_id.in_(ids)))
            session.execute(delete(saga_timer).where(saga_timer.c.saga_id.in_(ids)))
            session.execute(delete(s).where(s.c.id.in_(ids)))
    except DBAPIError as exc:
        raise storage_error(exc, "purge finished sagas") from exc
    return len(ids)

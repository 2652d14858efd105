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
from .tables import saga_instance, saga_participant, saga_step_log, saga_timer

__all__ = ["DEFAULT_PURGE_BATCH", "purge_participant_decisions", "purge_sagas"]

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


def purge_participant_decisions(
    session: Session, *, older_than: dt.datetime, limit: int = DEFAULT_PURGE_BATCH
) -> int:
    """Delete up to ``limit`` participant decisions last changed before ``older_than``; return how many.

    Keep decisions for longer than any command can still arrive (the
    orchestrator's longest timeout and backoff, plus broker retention): a
    command for a purged step would be decided afresh.

    .. versionadded:: 0.1
    """
    if older_than.tzinfo is None:
        msg = "older_than must be timezone-aware"
        raise ValueError(msg)
    t = saga_participant
    try:
        keys = session.execute(
            select(t.c.saga_id, t.c.step)
            .where(t.c.updated_at < older_than)
            .order_by(t.c.updated_at)
            .limit(limit)
        ).all()
        for saga_id, step in keys:
            session.execute(delete(t).where(t.c.saga_id == saga_id, t.c.step == step))
    except DBAPIError as exc:
        raise storage_error(exc, "purge participant decisions") from exc
    return len(keys)

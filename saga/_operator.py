"""Operator actions on one saga: retry the current step now, or abort (compensate now).

The process that asks (``outboxkit saga retry|abort``, the dashboard) does not
have the saga definitions; the orchestrator does. So a request is a timer: in
the caller's transaction it cancels the saga's pending timers, records who
asked in the step log, and publishes an immediate timer message to the
orchestrator's timer topic. The orchestrator then acts on it like on any
timer, under its usual rules: a request that no longer matches the saga's
position (a reply moved it meanwhile) is ignored, and a request is refused
here up front when it could never apply (the saga is final, or an abort of a
saga already compensating).

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from outbox import OutboxConfig, publish

from ._errors import SagaActionRefusedError, SagaConflictError, SagaNotFoundError
from ._headers import CORRELATION_ID, SAGA_TYPE, Coordinates, Phase
from ._model import SagaInstance, SagaState, StepLogKind
from ._store import delete_timers, insert_log, insert_timer, select_instance, storage_error
from ._transition import DEADLINE_TIMER, TIMER_TYPE
from .tables import saga_instance

__all__ = ["OPERATOR_ABORT_TIMER", "OPERATOR_RETRY_TIMER", "OperatorAction", "request_abort", "request_retry"]

OPERATOR_RETRY_TIMER = "operator_retry"
"""The timer an operator's retry request sends: the orchestrator tries the current step again."""
OPERATOR_ABORT_TIMER = "operator_abort"
"""The timer an operator's abort request sends: the orchestrator compensates now."""
_MAX_BY = 200  # who asked, as recorded; a long --by is cut, not refused


class OperatorAction(StrEnum):
    """What an operator can ask of a saga.

    .. versionadded:: 0.1
    """

    RETRY = "retry"
    ABORT = "abort"


def request_retry(
    session: Session,
    saga_id: uuid.UUID,
    *,
    by: str,
    timer_topic: str,
    outbox_config: OutboxConfig | None = None,
) -> uuid.UUID:
    """Ask the orchestrator to try the saga's current step (or compensation) again now.

    Returns the id of the request's timer message.

    Raises:
        SagaNotFoundError: no such saga.
        SagaActionRefusedError: the saga is completed or compensated.
        SagaConflictError: another transaction moved the saga meanwhile.

    .. versionadded:: 0.1
    """
    return _request(session, saga_id, OperatorAction.RETRY, by, timer_topic, outbox_config)


def request_abort(
    session: Session,
    saga_id: uuid.UUID,
    *,
    by: str,
    timer_topic: str,
    outbox_config: OutboxConfig | None = None,
) -> uuid.UUID:
    """Ask the orchestrator to compensate the running saga now, from its current step down.

    Returns the id of the request's timer message.

    Raises:
        SagaNotFoundError: no such saga.
        SagaActionRefusedError: the saga is final, or compensating already (retry that instead).
        SagaConflictError: another transaction moved the saga meanwhile.

    .. versionadded:: 0.1
    """
    return _request(session, saga_id, OperatorAction.ABORT, by, timer_topic, outbox_config)


def refusal(instance: SagaInstance, action: OperatorAction) -> str | None:
    """Why ``action`` does not apply to the saga as stored, or ``None`` when it does."""
    if instance.state.final:
        return f"saga {instance.id} is {instance.state.value}: nothing to {action.value}"
    if action is OperatorAction.ABORT and instance.state is SagaState.COMPENSATING:
        return f"saga {instance.id} is compensating already: retry the compensation instead"
    return None


def _request(
    session: Session,
    saga_id: uuid.UUID,
    action: OperatorAction,
    by: str,
    timer_topic: str,
    outbox_config: OutboxConfig | None,
) -> uuid.UUID:
    try:
        instance = select_instance(session, saga_id, lock=True)
        if instance is None:
            raise SagaNotFoundError(f"no saga {saga_id}")
        why = refusal(instance, action)
        if why is not None:
            raise SagaActionRefusedError(why)
        _bump_version(session, instance)
        # The saga's overall deadline still applies after an operator's request.
        delete_timers(session, saga_id, outbox_config, keep=(DEADLINE_TIMER,))
        return _send(session, instance, action, by[:_MAX_BY], timer_topic, outbox_config)
    except DBAPIError as exc:
        raise storage_error(exc, f"{action.value} the saga") from exc


def _bump_version(session: Session, instance: SagaInstance) -> None:
    """Serialise with the orchestrator's transitions: one of two concurrent writers loses."""
    result = session.connection().execute(
        update(saga_instance)
        .where(saga_instance.c.id == instance.id, saga_instance.c.version == instance.version)
        .values(version=instance.version + 1, updated_at=dt.datetime.now(dt.UTC))
    )
    if result.rowcount != 1:
        raise SagaConflictError(f"saga {instance.id} changed meanwhile (version {instance.version})")


def _send(
    session: Session,
    instance: SagaInstance,
    action: OperatorAction,
    by: str,
    timer_topic: str,
    outbox_config: OutboxConfig | None,
) -> uuid.UUID:
    phase = Phase.ACTION if instance.state is SagaState.RUNNING else Phase.COMPENSATION
    coords = Coordinates(saga_id=instance.id, step=instance.step, attempt=instance.attempt, phase=phase)
    headers = coords.headers() | {SAGA_TYPE: instance.type, CORRELATION_ID: instance.correlation_id}
    name = OPERATOR_RETRY_TIMER if action is OperatorAction.RETRY else OPERATOR_ABORT_TIMER
    message_id = publish(
        session,
        timer_topic,
        {"timer": name, "by": by},
        key=str(instance.id),
        type=TIMER_TYPE,
        headers=headers,
        config=outbox_config,
    )
    now = dt.datetime.now(dt.UTC)
    insert_timer(
        session,
        {
            "saga_id": instance.id,
            "name": name,
            "message_id": message_id,
            "step": instance.step,
            "attempt": instance.attempt,
            "fires_at": now,
            "created_at": now,
        },
    )
    kind = StepLogKind.RETRY_REQUESTED if action is OperatorAction.RETRY else StepLogKind.ABORT_REQUESTED
    insert_log(
        session,
        [
            {
                "saga_id": instance.id,
                "step": instance.step,
                "step_name": None,
                "attempt": instance.attempt,
                "kind": kind.value,
                "message_id": message_id,
                "detail": f"by {by}",
                "error": None,
                "created_at": now,
            }
        ],
    )
    return message_id

"""What a saga looks like from outside: states, step log kinds, instances, outcomes."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum

from ._definition import SagaData

__all__ = ["HandlingResult", "SagaInstance", "SagaState", "StepLogEntry", "StepLogKind"]


class SagaState(StrEnum):
    """Where a saga is; ``completed`` and ``compensated`` are final.

    .. versionadded:: 0.1
    """

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"

    @property
    def final(self) -> bool:
        """Whether nothing will happen to the saga any more."""
        return self in {SagaState.COMPLETED, SagaState.COMPENSATED}


class StepLogKind(StrEnum):
    """What a step log row records.

    .. versionadded:: 0.1
    """

    STARTED = "started"
    COMMAND_SENT = "command_sent"
    REPLY_RECEIVED = "reply_received"
    LOCAL_DONE = "local_done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RETRIED = "retried"
    COMPENSATING = "compensating"
    COMPENSATION_SENT = "compensation_sent"
    COMPENSATED = "compensated"
    COMPLETED = "completed"
    SAGA_COMPENSATED = "saga_compensated"
    # An operator asked for a retry or an abort (``outboxkit saga retry|abort``, the dashboard);
    # ``detail`` says who. The orchestrator acts on it when the request's timer message arrives.
    RETRY_REQUESTED = "retry_requested"
    ABORT_REQUESTED = "abort_requested"


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaInstance:
    """One saga as stored.

    Attributes:
        id: the saga id.
        type: the definition's name.
        state: see :class:`SagaState`.
        step: the step being run, or compensated while compensating.
        attempt: the try of that step's action or compensation, from 1.
        data: the saga's data.
        version: bumped by every transition (optimistic concurrency).
        correlation_id: copied onto every message the saga sends.
        error: why the saga is compensating, if it is or was.
        deadline_at: when the pending timer fires, if one is pending.
        created_at: when the saga started.
        updated_at: when the last transition committed.

    .. versionadded:: 0.1
    """

    id: uuid.UUID
    type: str
    state: SagaState
    step: int
    attempt: int
    data: SagaData
    version: int
    correlation_id: str
    error: str | None
    deadline_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class StepLogEntry:
    """One row of a saga's step log.

    .. versionadded:: 0.1
    """

    id: int
    saga_id: uuid.UUID
    step: int | None
    step_name: str | None
    attempt: int | None
    kind: StepLogKind
    message_id: uuid.UUID | None
    detail: str | None
    error: str | None
    created_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class HandlingResult:
    """What an orchestrator's handling of one reply or timer did to its saga.

    Attributes:
        saga_id: the saga the message belongs to.
        applied: ``True`` when the saga moved; ``False`` when the message was
            ignored (duplicate, late, stale timer, unknown saga) and nothing changed.
        state: the saga's state afterwards (``None`` for an unknown saga).
        reason: why the message was ignored.

    .. versionadded:: 0.1
    """

    saga_id: uuid.UUID
    applied: bool
    state: SagaState | None
    reason: str | None = None

"""Sagas on top of the outbox and the inbox.

Definitions, persisted instances, compensation in reverse order, and timeouts
without a scheduler.

See ``docs/sagas.md``.

.. versionadded:: 0.1
"""

from __future__ import annotations

from inbox import follow_up_headers

from . import tables
from ._choreography import EVENT_TYPE_PATTERN, check_event_type, new_flow_headers
from ._definition import (
    DEFAULT_BACKOFF,
    DEFAULT_COMPENSATION_TIMEOUT,
    DEFAULT_MAX_BACKOFF,
    Command,
    Local,
    RetryPolicy,
    SagaContext,
    SagaData,
    SagaDefinition,
    Step,
)
from ._errors import (
    SagaActionRefusedError,
    SagaConflictError,
    SagaDefinitionError,
    SagaError,
    SagaExistsError,
    SagaMessageError,
    SagaNotFoundError,
    StepFailed,
)
from ._headers import Phase
from ._inspect import (
    DEFAULT_SAGA_LIST_LIMIT,
    SagaCount,
    count_sagas,
    select_saga,
    select_saga_deadline,
    select_sagas,
    select_step_log,
)
from ._metrics import DEFAULT_STUCK_AFTER, SagaGauges
from ._model import HandlingResult, SagaInstance, SagaState, StepLogEntry, StepLogKind
from ._operator import (
    OPERATOR_ABORT_TIMER,
    OPERATOR_RETRY_TIMER,
    OperatorAction,
    refusal,
    request_abort,
    request_retry,
)
from ._orchestrator import DEFAULT_REPLY_TOPIC, DEFAULT_TIMER_TOPIC, Orchestrator
from ._participant import Decision, StepHandler, participate
from ._reply import REPLY_TYPE, reply
from ._retention import DEFAULT_PURGE_BATCH, purge_participant_decisions, purge_sagas
from ._transition import DEADLINE_TIMER, RETRY_TIMER, TIMEOUT_TIMER, TIMER_TYPE
from ._wiring import HandlerRegistry, SagaHandler, register

__all__ = [
    "DEADLINE_TIMER",
    "DEFAULT_BACKOFF",
    "DEFAULT_COMPENSATION_TIMEOUT",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_PURGE_BATCH",
    "DEFAULT_REPLY_TOPIC",
    "DEFAULT_SAGA_LIST_LIMIT",
    "DEFAULT_STUCK_AFTER",
    "DEFAULT_TIMER_TOPIC",
    "EVENT_TYPE_PATTERN",
    "OPERATOR_ABORT_TIMER",
    "OPERATOR_RETRY_TIMER",
    "REPLY_TYPE",
    "RETRY_TIMER",
    "TIMEOUT_TIMER",
    "TIMER_TYPE",
    "Command",
    "Decision",
    "HandlerRegistry",
    "HandlingResult",
    "Local",
    "OperatorAction",
    "Orchestrator",
    "Phase",
    "RetryPolicy",
    "SagaActionRefusedError",
    "SagaConflictError",
    "SagaContext",
    "SagaCount",
    "SagaData",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaError",
    "SagaExistsError",
    "SagaGauges",
    "SagaHandler",
    "SagaInstance",
    "SagaMessageError",
    "SagaNotFoundError",
    "SagaState",
    "Step",
    "StepFailed",
    "StepHandler",
    "StepLogEntry",
    "StepLogKind",
    "check_event_type",
    "count_sagas",
    "follow_up_headers",
    "new_flow_headers",
    "participate",
    "purge_participant_decisions",
    "purge_sagas",
    "refusal",
    "register",
    "reply",
    "request_abort",
    "request_retry",
    "select_saga",
    "select_saga_deadline",
    "select_sagas",
    "select_step_log",
    "tables",
]

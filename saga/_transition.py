"""One transition of one saga: run steps forward or compensate backward.

A :class:`Run` starts from the stored instance (already claimed by a version
bump), walks the definition as far as it can without waiting (local steps run
at once, a command stops the walk until its reply), and writes everything it
decides in the caller's transaction: outbox messages, step log rows, timers,
and finally the instance with a version check. Nothing here commits.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from sqlalchemy.orm import Session

from outbox import JSONValue, OutboxConfig, publish
from outbox._crashpoints import crash_point

from ._definition import Command, Local, SagaContext, SagaDefinition, Step
from ._errors import SagaConflictError, StepFailed
from ._headers import CAUSATION_ID, CORRELATION_ID, REPLY_TO, SAGA_TYPE, Coordinates, Phase
from ._metrics import observe_finished
from ._model import SagaInstance, SagaState, StepLogKind
from ._store import delete_timers, insert_log, insert_timer, update_instance
from ._tracing import annotate

__all__ = ["DEADLINE_TIMER", "RETRY_TIMER", "TIMEOUT_TIMER", "TIMER_TYPE", "Run", "Topics"]

log = structlog.get_logger(__name__)

TIMEOUT_TIMER = "timeout"
"""Fires when a command's reply is overdue."""
RETRY_TIMER = "retry"
"""Fires when a failed local action or compensation is due to be tried again."""
DEADLINE_TIMER = "deadline"
"""Fires when a saga's overall deadline (``SagaDefinition.deadline``) passes; kept across transitions."""
TIMER_TYPE = "saga.timer"


@dataclass(frozen=True, kw_only=True, slots=True)
class Topics:
    """Where the orchestrator's replies and timers arrive, and the outbox it writes to."""

    reply_topic: str
    timer_topic: str
    outbox_config: OutboxConfig | None


class Run:
    """The working copy of one saga during one transition."""

    def __init__(
        self,
        session: Session,
        definition: SagaDefinition,
        instance: SagaInstance,
        topics: Topics,
        *,
        cause: uuid.UUID | None,
    ) -> None:
        self.session = session
        self.definition = definition
        self.topics = topics
        self.cause = cause
        self.now = dt.datetime.now(dt.UTC)
        self.expected_version = instance.version
        self.state_before = instance.state
        self.inst = dataclasses.replace(
            instance, data=dict(instance.data), deadline_at=None, updated_at=self.now
        )
        self.log_rows: list[dict[str, object]] = []
        self.log = log.bind(saga_id=str(instance.id), correlation_id=instance.correlation_id)

    # -- bookkeeping ---------------------------------------------------------

    def _set(self, **changes: object) -> None:
        self.inst = dataclasses.replace(self.inst, **changes)  # type: ignore[arg-type]

    def record(
        self,
        kind: StepLogKind,
        *,
        step: int | None = None,
        message_id: uuid.UUID | None = None,
        detail: str | None = None,
        error: str | None = None,
    ) -> None:
        """Append a step log row (written by :meth:`finish`)."""
        self.log_rows.append(
            {
                "saga_id": self.inst.id,
                "step": step,
                "step_name": None if step is None else self.definition.steps[step].name,
                "attempt": None if step is None else self.inst.attempt,
                "kind": kind.value,
                "message_id": message_id,
                "detail": detail,
                "error": error,
                "created_at": self.now,
            }
        )

    def merge(self, data: object) -> None:
        """Merge a reply's or local function's mapping into the saga data."""
        if isinstance(data, Mapping):
            self._set(data={**self.inst.data, **data})

    def context(self) -> SagaContext:
        """What payload builders and local functions see."""
        return SagaContext(
            saga_id=self.inst.id,
            saga_type=self.inst.type,
            step=self.inst.step,
            attempt=self.inst.attempt,
            data=copy.deepcopy(self.inst.data),
        )

    def finish(self) -> SagaInstance:
        """Write the log rows and the instance; raise if the version moved meanwhile."""
        self._set(version=self.expected_version, updated_at=self.now)
        if not update_instance(self.session, self.inst, expected_version=self.expected_version):
            raise SagaConflictError
        if self.inst.state.final:  # the overall deadline's timer outlives transitions, not the saga
            delete_timers(self.session, self.inst.id, self.topics.outbox_config)
        insert_log(self.session, self.log_rows)
        observe_finished(self.session, self.state_before, self.inst)
        annotate(self.state_before, self.inst)
        crash_point("saga.after_transition")
        return self.inst

    # -- forward -------------------------------------------------------------

    def enter_action(self, index: int, attempt: int, *, delay: dt.timedelta | None = None) -> None:
        """Run steps from ``index`` until one waits for a reply or a retry, or the saga ends."""
        while index < len(self.definition.steps):
            step = self.definition.steps[index]
            self._set(state=SagaState.RUNNING, step=index, attempt=attempt)
            if isinstance(step.action, Command):
                self._send(step, step.action, Phase.ACTION, delay, step.timeout)
                return
            if not self._local_action(step, step.action):
                return
            index, attempt, delay = index + 1, 1, None
        self._set(state=SagaState.COMPLETED, error=None)
        self.record(StepLogKind.COMPLETED)
        self.log.info("saga.completed", saga_type=self.inst.type)

    def _local_action(self, step: Step, local: Local) -> bool:
        index, attempt = self.inst.step, self.inst.attempt
        error = self._run_local(local)
        if error is None:
            self.record(StepLogKind.LOCAL_DONE, step=index)
            return True
        self.record(StepLogKind.FAILED, step=index, error=_describe(error))
        if isinstance(error, StepFailed) or attempt >= step.retry.max_attempts:
            self.begin_compensation(index - 1, f"step {step.name!r} failed: {_describe(error)}")
        else:
            self._set_timer(RETRY_TIMER, step.retry.delay(attempt), Phase.ACTION)
        return False

    def action_replied(self, ok: bool, data: JSONValue, reason: str | None, message_id: uuid.UUID) -> None:
        """The participant answered the current action command."""
        index = self.inst.step
        step = self.definition.steps[index]
        self.record(
            StepLogKind.REPLY_RECEIVED, step=index, message_id=message_id, error=None if ok else reason
        )
        if ok:
            self.merge(data)
            self.enter_action(index + 1, 1)
        else:
            self.begin_compensation(index - 1, f"step {step.name!r} failed: {reason or 'no reason given'}")

    def action_timed_out(self) -> None:
        """The current action's reply is overdue: send it again, or compensate."""
        index, attempt = self.inst.step, self.inst.attempt
        step = self.definition.steps[index]
        self.record(StepLogKind.TIMED_OUT, step=index)
        self.log.warning("saga.timed_out", step=index, attempt=attempt, phase=Phase.ACTION.value)
        if attempt < step.retry.max_attempts:
            self._set(attempt=attempt + 1)
            self.record(StepLogKind.RETRIED, step=index)
            self.enter_action(index, attempt + 1, delay=step.retry.delay(attempt))
        else:
            # The participant may have done the step and its reply be lost:
            # compensate it too (compensations tolerate "never happened").
            self.begin_compensation(index, f"step {step.name!r} timed out after {attempt} attempt(s)")

    # -- backward ------------------------------------------------------------

    def begin_compensation(self, index: int, reason: str) -> None:
        """Start undoing steps ``index`` down to 0."""
        self._set(state=SagaState.COMPENSATING, error=reason)
        self.record(StepLogKind.COMPENSATING, error=reason)
        self.log.warning("saga.compensating", step=index, reason=reason)
        self.enter_compensation(index, 1)

    def enter_compensation(self, index: int, attempt: int, *, delay: dt.timedelta | None = None) -> None:
        """Compensate from ``index`` down until one waits for a reply or a retry, or all are undone."""
        while index >= 0:
            step = self.definition.steps[index]
            if step.compensation is None:
                index, attempt, delay = index - 1, 1, None
                continue
            self._set(state=SagaState.COMPENSATING, step=index, attempt=attempt)
            if isinstance(step.compensation, Command):
                timeout = step.compensation_timeout()
                self._send(step, step.compensation, Phase.COMPENSATION, delay, timeout)
                return
            error = self._run_local(step.compensation)
            crash_point("saga.during_compensation")
            if error is not None:
                self.record(StepLogKind.FAILED, step=index, error=_describe(error))
                self.log.warning(
                    "saga.compensation_failed", step=index, attempt=attempt, reason=_describe(error)
                )
                self._set_timer(RETRY_TIMER, step.retry.delay(attempt), Phase.COMPENSATION)
                return
            self.record(StepLogKind.COMPENSATED, step=index)
            index, attempt, delay = index - 1, 1, None
        self._set(state=SagaState.COMPENSATED)
        self.record(StepLogKind.SAGA_COMPENSATED, error=self.inst.error)
        self.log.info("saga.compensated", saga_type=self.inst.type, reason=self.inst.error)

    def compensation_replied(
        self, ok: bool, data: JSONValue, reason: str | None, message_id: uuid.UUID
    ) -> None:
        """The participant answered the current compensation command."""
        index, attempt = self.inst.step, self.inst.attempt
        step = self.definition.steps[index]
        if ok:
            self.merge(data)
            self.record(StepLogKind.COMPENSATED, step=index, message_id=message_id)
            self.enter_compensation(index - 1, 1)
            return
        self.record(StepLogKind.REPLY_RECEIVED, step=index, message_id=message_id, error=reason)
        self.log.warning("saga.compensation_failed", step=index, attempt=attempt, reason=reason)
        self._retry_compensation(step, index, attempt)

    def compensation_timed_out(self) -> None:
        """The current compensation's reply is overdue: send it again."""
        index, attempt = self.inst.step, self.inst.attempt
        self.record(StepLogKind.TIMED_OUT, step=index)
        self.log.warning("saga.timed_out", step=index, attempt=attempt, phase=Phase.COMPENSATION.value)
        self._retry_compensation(self.definition.steps[index], index, attempt)

    def _retry_compensation(self, step: Step, index: int, attempt: int) -> None:
        self._set(attempt=attempt + 1)
        self.record(StepLogKind.RETRIED, step=index)
        self.enter_compensation(index, attempt + 1, delay=step.retry.delay(attempt))

    def retry_due(self) -> None:
        """A retry timer fired: try the current local action or compensation again."""
        index, attempt = self.inst.step, self.inst.attempt
        self._set(attempt=attempt + 1)
        self.record(StepLogKind.RETRIED, step=index)
        if self.inst.state is SagaState.RUNNING:
            self.enter_action(index, attempt + 1)
        else:
            self.enter_compensation(index, attempt + 1)

    def start_deadline(self) -> None:
        """Set the overall deadline's timer (at start, when the definition has a ``deadline``)."""
        if self.definition.deadline is not None:
            self._set_timer(DEADLINE_TIMER, self.definition.deadline, Phase.ACTION)

    def deadline_passed(self) -> None:
        """The saga ran past its overall deadline: compensate, including the step in flight."""
        index = self.inst.step
        step = self.definition.steps[index]
        deadline = self.definition.deadline or dt.timedelta(0)
        reason = f"saga deadline of {deadline.total_seconds():g}s passed at step {step.name!r}"
        self.record(StepLogKind.TIMED_OUT, detail="saga deadline", error=reason)
        self.log.warning("saga.deadline_passed", saga_type=self.inst.type, step=index, reason=reason)
        # A command in flight may have been done with its reply lost: compensate it too,
        # as after a step timeout. A local step that is waiting for a retry did not happen.
        self.begin_compensation(index if isinstance(step.action, Command) else index - 1, reason)

    # -- operator requests ---------------------------------------------------

    def retry_now(self, by: str) -> None:
        """An operator asked: send the current command again, or run the local step again, now."""
        index, attempt = self.inst.step, self.inst.attempt
        self._set(attempt=attempt + 1)
        self.record(StepLogKind.RETRIED, step=index, detail=f"requested by {by}")
        self.log.warning("saga.operator_retried", step=index, attempt=attempt + 1, by=by)
        if self.inst.state is SagaState.RUNNING:
            self.enter_action(index, attempt + 1)
        else:
            self.enter_compensation(index, attempt + 1)

    def abort_now(self, by: str) -> None:
        """An operator asked: compensate now, the current step too if it sent a command.

        A command may have been carried out with its reply still on the way, so
        it is compensated like a timed-out one (compensations tolerate "never
        happened"); a local step that failed left nothing behind.
        """
        index = self.inst.step
        sent = isinstance(self.definition.steps[index].action, Command)
        self.begin_compensation(index if sent else index - 1, f"aborted by {by}")

    # -- effects -------------------------------------------------------------

    def _run_local(self, local: Local) -> Exception | None:
        # A savepoint, so a failed local function leaves no partial effects
        # while the transition itself (log, timers, state) still commits.
        try:
            with self.session.begin_nested():
                result: object = local.function(self.session, self.context())
                if result is not None and not isinstance(result, Mapping):
                    msg = f"a local function must return a mapping or None, not {type(result).__name__}"
                    raise TypeError(msg)  # noqa: TRY301 - rolls the savepoint back like any failure
        except Exception as exc:  # noqa: BLE001 - any failure of user code is a failed try
            return exc
        self.merge(result)
        return None

    def _headers(self, phase: Phase) -> dict[str, str]:
        coords = Coordinates(
            saga_id=self.inst.id, step=self.inst.step, attempt=self.inst.attempt, phase=phase
        )
        headers = coords.headers()
        headers[SAGA_TYPE] = self.inst.type
        headers[CORRELATION_ID] = self.inst.correlation_id
        if self.cause is not None:
            headers[CAUSATION_ID] = str(self.cause)
        return headers

    def _send(
        self,
        step: Step,
        command: Command,
        phase: Phase,
        delay: dt.timedelta | None,
        timeout: dt.timedelta | None,
    ) -> None:
        headers = self._headers(phase)
        headers[REPLY_TO] = self.topics.reply_topic
        message_id = publish(
            self.session,
            command.topic,
            command.payload(self.context()),
            key=str(self.inst.id),
            type=command.type,
            headers=headers,
            delay=delay,
            config=self.topics.outbox_config,
        )
        if phase is Phase.COMPENSATION:
            crash_point("saga.during_compensation")
        kind = StepLogKind.COMMAND_SENT if phase is Phase.ACTION else StepLogKind.COMPENSATION_SENT
        self.record(
            kind, step=self.inst.step, message_id=message_id, detail=f"{command.topic} {command.type}"
        )
        self.log.info(
            "saga.step_command_sent",
            step=self.inst.step,
            step_name=step.name,
            attempt=self.inst.attempt,
            phase=phase.value,
            topic=command.topic,
            message_id=str(message_id),
        )
        if timeout is not None:
            self._set_timer(TIMEOUT_TIMER, (delay or dt.timedelta(0)) + timeout, phase)

    def _set_timer(self, name: str, after: dt.timedelta, phase: Phase) -> None:
        message_id = publish(
            self.session,
            self.topics.timer_topic,
            {"timer": name},
            key=str(self.inst.id),
            type=TIMER_TYPE,
            headers=self._headers(phase),
            delay=after,
            config=self.topics.outbox_config,
        )
        fires_at = self.now + after
        insert_timer(
            self.session,
            {
                "saga_id": self.inst.id,
                "name": name,
                "message_id": message_id,
                "step": self.inst.step,
                "attempt": self.inst.attempt,
                "fires_at": fires_at,
                "created_at": self.now,
            },
        )
        self._set(deadline_at=fires_at)


def _describe(error: BaseException) -> str:
    if isinstance(error, StepFailed):
        return error.reason
    return f"{type(error).__name__}: {error}"

"""The orchestrator: start sagas, and move them on replies and timers.

Each public method performs one transition inside the caller's transaction
and never commits: the saga row (version-checked), the step log rows, the
commands and timers it sends through the outbox all commit together, or none
of them does. An exception means "roll back": the message is then redelivered
and evaluated again against the stored state, which is how a crash at any
point resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping

import structlog
import uuid_utils.compat as uuid_utils
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from outbox import TOPIC_PATTERN, Envelope, JSONValue, OutboxConfig

from ._definition import Command, SagaDefinition
from ._errors import SagaConflictError, SagaDefinitionError, SagaExistsError, SagaMessageError
from ._headers import Coordinates, Phase, envelope_label, parse_coordinates
from ._model import HandlingResult, SagaInstance, SagaState, StepLogKind
from ._operator import OPERATOR_ABORT_TIMER, OPERATOR_RETRY_TIMER
from ._reply import parse_reply
from ._store import delete_timers, insert_instance, select_instance, select_timer, storage_error
from ._tracing import transition_span
from ._transition import DEADLINE_TIMER, RETRY_TIMER, TIMEOUT_TIMER, Run, Topics
from .tables import saga_instance

__all__ = ["DEFAULT_REPLY_TOPIC", "DEFAULT_TIMER_TOPIC", "Orchestrator"]

log = structlog.get_logger(__name__)

DEFAULT_REPLY_TOPIC = "saga.replies"
DEFAULT_TIMER_TOPIC = "saga.timers"
_TOPIC = re.compile(TOPIC_PATTERN)


class Orchestrator:
    """Runs sagas of the given definitions, with state in the caller's database.

    Args:
        definitions: the saga types this orchestrator runs (unique names).
        reply_topic: where participants send replies (the ``reply_to`` header).
        timer_topic: where the orchestrator's delayed timer messages arrive.
        outbox_config: the outbox the commands and timers are written to.

    Wire it to an inbox consumer with :func:`saga.register`, or call
    :meth:`handle_reply` / :meth:`handle_timer` from your own handlers.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        definitions: Iterable[SagaDefinition],
        *,
        reply_topic: str = DEFAULT_REPLY_TOPIC,
        timer_topic: str = DEFAULT_TIMER_TOPIC,
        outbox_config: OutboxConfig | None = None,
    ) -> None:
        self._definitions: dict[str, SagaDefinition] = {}
        for candidate in definitions:
            definition: object = candidate  # runtime checks for untyped callers
            if not isinstance(definition, SagaDefinition):
                msg = f"expected SagaDefinition, got {type(definition).__name__}"
                raise SagaDefinitionError(msg)
            if definition.name in self._definitions:
                msg = f"two saga definitions are named {definition.name!r}"
                raise SagaDefinitionError(msg)
            self._definitions[definition.name] = definition
        for name, topic in (("reply_topic", reply_topic), ("timer_topic", timer_topic)):
            if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
                msg = f"{name} {topic!r:.80} does not match {TOPIC_PATTERN}"
                raise SagaDefinitionError(msg)
        if reply_topic == timer_topic:
            msg = "reply_topic and timer_topic must differ"
            raise SagaDefinitionError(msg)
        self._topics = Topics(reply_topic=reply_topic, timer_topic=timer_topic, outbox_config=outbox_config)

    @property
    def reply_topic(self) -> str:
        """The topic participants reply on."""
        return self._topics.reply_topic

    @property
    def timer_topic(self) -> str:
        """The topic the orchestrator's timers arrive on."""
        return self._topics.timer_topic

    @property
    def definitions(self) -> Mapping[str, SagaDefinition]:
        """The saga definitions by name."""
        return dict(self._definitions)

    def definition(self, saga_type: str) -> SagaDefinition:
        """The definition named ``saga_type``.

        Raises:
            SagaDefinitionError: this orchestrator has no such saga type.
        """
        try:
            return self._definitions[saga_type]
        except KeyError:
            msg = f"unknown saga type {saga_type!r}; known: {', '.join(sorted(self._definitions)) or 'none'}"
            raise SagaDefinitionError(msg) from None

    def start(
        self,
        session: Session,
        saga_type: str,
        data: Mapping[str, JSONValue],
        *,
        saga_id: uuid.UUID | None = None,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
    ) -> uuid.UUID:
        """Create a saga and run it up to its first command, in the caller's transaction.

        Args:
            session: the caller's session; the saga starts when it commits.
            saga_type: the name of a definition of this orchestrator.
            data: the saga's initial data (a JSON object).
            saga_id: the id to use (e.g. the order id); a new UUIDv7 otherwise.
            cause: the message that starts the saga, if any (its id becomes the
                commands' ``causation_id``, its ``correlation_id`` theirs).
            correlation_id: the business flow's id; default the cause's, else the saga id.

        Returns:
            The saga id.

        Raises:
            SagaExistsError: a saga with ``saga_id`` exists already.
            SagaDefinitionError: unknown ``saga_type``.
            StorageError: the database refused (``SchemaMissingError``: not migrated).
        """
        with _storage_errors("start the saga"), transition_span("start"):
            return self._start(
                session, saga_type, data, saga_id=saga_id, cause=cause, correlation_id=correlation_id
            )

    def _start(
        self,
        session: Session,
        saga_type: str,
        data: Mapping[str, JSONValue],
        *,
        saga_id: uuid.UUID | None = None,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
    ) -> uuid.UUID:
        definition = self.definition(saga_type)
        given: object = data
        if not isinstance(given, Mapping):
            msg = f"saga data must be a mapping, got {type(data).__name__}"
            raise SagaDefinitionError(msg)
        sid = saga_id if saga_id is not None else uuid_utils.uuid7()
        if select_instance(session, sid, lock=False) is not None:
            raise SagaExistsError(f"saga {sid} already exists")
        now = dt.datetime.now(dt.UTC)
        correlation = correlation_id or (cause.correlation_id if cause is not None else None) or str(sid)
        instance = SagaInstance(
            id=sid,
            type=definition.name,
            state=SagaState.RUNNING,
            step=0,
            attempt=1,
            data=dict(data),
            version=1,
            correlation_id=correlation,
            error=None,
            deadline_at=None,
            created_at=now,
            updated_at=now,
        )
        try:
            insert_instance(session, instance)
        except IntegrityError as exc:  # a concurrent start with the same id won
            raise SagaExistsError(f"saga {sid} already exists") from exc
        run = Run(session, definition, instance, self._topics, cause=None if cause is None else cause.id)
        run.record(StepLogKind.STARTED, detail=definition.name)
        log.info("saga.started", saga_id=str(sid), saga_type=definition.name, correlation_id=correlation)
        run.start_deadline()  # first: a step's timer then names the next pending deadline
        run.enter_action(0, 1)
        run.finish()
        return sid

    def handle_reply(self, session: Session, envelope: Envelope) -> HandlingResult:
        """Apply a participant's reply; a duplicate, late or unexpected reply changes nothing.

        Raises:
            SagaMessageError: the message is not a saga reply (dead-letter it).
            SagaConflictError: another transaction moved the saga meanwhile: roll back.
            StorageError: the database refused.
        """
        with _storage_errors("handle the saga reply"), transition_span("reply"):
            return self._handle_reply(session, envelope)

    def _handle_reply(self, session: Session, envelope: Envelope) -> HandlingResult:
        coords = parse_coordinates(envelope.headers, envelope_label(envelope))
        ok, data, reason = parse_reply(envelope)
        instance = select_instance(session, coords.saga_id, lock=True)
        why = self._mismatch(instance, coords, needs_command=True)
        if instance is None or why is not None:
            return self._ignored("saga.reply_ignored", coords, instance, why or "unknown saga", envelope)
        run = self._claim(session, instance, envelope)
        if coords.phase is Phase.ACTION:
            run.action_replied(ok, data, reason, envelope.id)
        else:
            run.compensation_replied(ok, data, reason, envelope.id)
        state = run.finish().state
        return HandlingResult(saga_id=coords.saga_id, applied=True, state=state)

    def handle_timer(self, session: Session, envelope: Envelope) -> HandlingResult:
        """Fire a timer; one that was cancelled or is stale changes nothing.

        Raises:
            SagaMessageError: the message is not a saga timer.
            SagaConflictError: another transaction moved the saga meanwhile: roll back.
            StorageError: the database refused.
        """
        with _storage_errors("handle the saga timer"), transition_span("timer"):
            return self._handle_timer(session, envelope)

    def _handle_timer(self, session: Session, envelope: Envelope) -> HandlingResult:
        coords = parse_coordinates(envelope.headers, envelope_label(envelope))
        name = _timer_name(envelope)
        instance = select_instance(session, coords.saga_id, lock=True)
        if name == DEADLINE_TIMER:  # about the whole saga, not a step: no position to match
            why = _deadline_mismatch(instance)
        else:
            why = self._mismatch(instance, coords, needs_command=name == TIMEOUT_TIMER)
        if why is None and select_timer(session, coords.saga_id, name) != envelope.id:
            why = "timer cancelled"
        if instance is None or why is not None:
            return self._ignored("saga.timer_ignored", coords, instance, why or "unknown saga", envelope)
        run = self._claim(session, instance, envelope, timer=name)
        if name == DEADLINE_TIMER:
            run.deadline_passed()
        elif name in _OPERATOR_TIMERS:
            _operator_request(run, name, envelope)
        elif name == RETRY_TIMER:
            run.retry_due()
        elif coords.phase is Phase.ACTION:
            run.action_timed_out()
        else:
            run.compensation_timed_out()
        state = run.finish().state
        return HandlingResult(saga_id=coords.saga_id, applied=True, state=state)

    # -- internals -----------------------------------------------------------

    def _mismatch(
        self, instance: SagaInstance | None, coords: Coordinates, *, needs_command: bool
    ) -> str | None:
        """Why the message does not match what the saga awaits, or ``None`` when it does."""
        if instance is None:
            return "unknown saga"
        why = _position_mismatch(instance, coords)
        if why is None and needs_command:
            step = self._definition_of(instance).steps[instance.step]
            action = step.action if coords.phase is Phase.ACTION else step.compensation
            if not isinstance(action, Command):
                why = "the step sends no command"
        return why

    def _claim(
        self, session: Session, instance: SagaInstance, envelope: Envelope, *, timer: str | None = None
    ) -> Run:
        """Bump the version (``WHERE version = :expected``) and cancel the saga's pending step timers.

        The overall deadline's timer stays (until it fires, ``timer``, or the saga ends).
        """
        result = session.connection().execute(
            update(saga_instance)
            .where(saga_instance.c.id == instance.id, saga_instance.c.version == instance.version)
            .values(version=instance.version + 1)
        )
        if result.rowcount != 1:
            raise SagaConflictError(f"saga {instance.id} changed meanwhile (version {instance.version})")
        keep = () if timer == DEADLINE_TIMER else (DEADLINE_TIMER,)
        delete_timers(session, instance.id, self._topics.outbox_config, keep=keep)
        claimed = dataclasses.replace(instance, version=instance.version + 1)
        definition = self._definition_of(instance)
        return Run(session, definition, claimed, self._topics, cause=envelope.id)

    def _definition_of(self, instance: SagaInstance) -> SagaDefinition:
        definition = self.definition(instance.type)
        if instance.step >= len(definition.steps):
            # A definition lost steps while sagas were in flight: refuse rather
            # than guess. Deploy changed definitions under a new saga type name.
            msg = (
                f"saga {instance.id} is at step {instance.step} but {instance.type!r}"
                f" has {len(definition.steps)} steps now"
            )
            raise SagaDefinitionError(msg)
        return definition

    def _ignored(
        self, event: str, coords: Coordinates, instance: SagaInstance | None, why: str, envelope: Envelope
    ) -> HandlingResult:
        log.info(
            event,
            saga_id=str(coords.saga_id),
            step=coords.step,
            attempt=coords.attempt,
            phase=coords.phase.value,
            reason=why,
            message_id=str(envelope.id),
            correlation_id=envelope.correlation_id,
        )
        state = None if instance is None else instance.state
        return HandlingResult(saga_id=coords.saga_id, applied=False, state=state, reason=why)


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        raise storage_error(exc, what) from exc


def _position_mismatch(instance: SagaInstance, coords: Coordinates) -> str | None:
    if instance.state.final:
        return f"saga already {instance.state.value}"
    expected = Phase.ACTION if instance.state is SagaState.RUNNING else Phase.COMPENSATION
    if coords.phase is not expected:
        return f"saga is {instance.state.value}, message is for the {coords.phase.value}"
    if coords.step != instance.step:
        return f"saga is at step {instance.step}, message is for step {coords.step}"
    if coords.attempt != instance.attempt:
        return f"saga is at attempt {instance.attempt}, message is for attempt {coords.attempt}"
    return None


def _deadline_mismatch(instance: SagaInstance | None) -> str | None:
    if instance is None:
        return "unknown saga"
    if instance.state is not SagaState.RUNNING:  # compensating already: let it finish
        return f"saga already {instance.state.value}"
    return None


_OPERATOR_TIMERS = frozenset({OPERATOR_RETRY_TIMER, OPERATOR_ABORT_TIMER})


def _operator_request(run: Run, name: str, envelope: Envelope) -> None:
    """An operator's retry or abort (``saga.request_retry|request_abort``) arrived and still applies."""
    payload = envelope.payload
    by = str(payload.get("by") or "an operator") if isinstance(payload, Mapping) else "an operator"
    if name == OPERATOR_RETRY_TIMER:
        run.retry_now(by)
    elif run.inst.state is SagaState.RUNNING:  # an abort of a compensating saga is refused at request time
        run.abort_now(by)


def _timer_name(envelope: Envelope) -> str:
    payload = envelope.payload
    name = payload.get("timer") if isinstance(payload, Mapping) else None
    if name not in {TIMEOUT_TIMER, RETRY_TIMER, DEADLINE_TIMER, *_OPERATOR_TIMERS}:
        raise SagaMessageError(f"{envelope_label(envelope)} is not a saga timer")
    return str(name)

"""Saga definitions: a saga type is an ordered list of steps, validated up front.

A step has an *action* and, optionally, a *compensation*; each is either a
:class:`Command` (a message to a participant, answered by a reply) or a
:class:`Local` function (run in the orchestrator's own transaction). Timeouts
and retries are per step.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from outbox import TOPIC_PATTERN, JSONValue, RetryWait

from ._errors import SagaDefinitionError

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_COMPENSATION_TIMEOUT",
    "DEFAULT_MAX_BACKOFF",
    "Command",
    "Local",
    "RetryPolicy",
    "SagaContext",
    "SagaData",
    "SagaDefinition",
    "Step",
]

SagaData = dict[str, JSONValue]
"""The saga's data: a JSON object, stored with the instance and merged with reply data."""

DEFAULT_BACKOFF = dt.timedelta(seconds=1)
DEFAULT_MAX_BACKOFF = dt.timedelta(minutes=5)
DEFAULT_COMPENSATION_TIMEOUT = dt.timedelta(minutes=1)
"""How long a compensation command waits for its reply before it is sent again,
when the step sets no ``timeout``: compensations are retried until they succeed,
so one that is never answered must time out."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")
_TOPIC = re.compile(TOPIC_PATTERN)
_MAX_TYPE_LENGTH = 255


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaContext:
    """What payload builders and local functions see of the saga.

    Attributes:
        saga_id: the saga's id (also the key of every message it sends).
        saga_type: the definition's name.
        step: the index of the step being run or compensated.
        attempt: 1 for the first try of this action or compensation.
        data: the saga's data (a copy: return changes, do not mutate it).

    .. versionadded:: 0.1
    """

    saga_id: uuid.UUID
    saga_type: str
    step: int
    attempt: int
    data: Mapping[str, JSONValue]


PayloadBuilder = Callable[[SagaContext], JSONValue]
LocalFunction = Callable[[Session, SagaContext], Mapping[str, JSONValue] | None]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often a step's action is tried, and how long to wait between tries.

    ``max_attempts`` bounds the tries of an *action* (after a timeout, or a
    local action raising anything but :class:`~saga.StepFailed`); then the saga
    compensates. Compensations are tried without bound, with the same backoff.
    The wait before try ``n + 1`` is ``backoff * multiplier ** (n - 1)``, at
    most ``max_backoff``.

    .. versionadded:: 0.1
    """

    max_attempts: int = 1
    backoff: dt.timedelta = DEFAULT_BACKOFF
    multiplier: float = 2.0
    max_backoff: dt.timedelta = DEFAULT_MAX_BACKOFF

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            msg = f"max_attempts must be an integer >= 1, got {self.max_attempts!r}"
            raise SagaDefinitionError(msg)
        if not isinstance(self.backoff, dt.timedelta) or self.backoff < dt.timedelta(0):
            msg = "backoff must be a non-negative timedelta"
            raise SagaDefinitionError(msg)
        if not isinstance(self.multiplier, int | float) or self.multiplier < 1:
            msg = f"multiplier must be >= 1, got {self.multiplier!r}"
            raise SagaDefinitionError(msg)
        if not isinstance(self.max_backoff, dt.timedelta) or self.max_backoff < self.backoff:
            msg = "max_backoff must be a timedelta no shorter than backoff"
            raise SagaDefinitionError(msg)

    def delay(self, attempt: int) -> dt.timedelta:
        """The wait after failed try number ``attempt`` (1-based) before the next one."""
        # No jitter: the delay becomes a timer row, and the docstring promises the exact figure.
        return RetryWait(
            base=self.backoff, cap=self.max_backoff, multiplier=self.multiplier, jitter=False
        ).delay(attempt)


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    """A message to a participant, built from the saga; the participant answers with :func:`saga.reply`.

    Attributes:
        topic: the participant's command topic.
        type: the command type, e.g. ``"ChargeCustomer"``.
        payload: builds the message payload from the :class:`SagaContext`.

    .. versionadded:: 0.1
    """

    topic: str
    type: str
    payload: PayloadBuilder


@dataclass(frozen=True, slots=True)
class Local:
    """A function run in the orchestrator's transaction, inside a savepoint.

    It gets ``(session, context)`` and may return a mapping merged into the
    saga's data. Raising :class:`~saga.StepFailed` fails the step for good;
    any other exception rolls back its savepoint and counts as a failed try.

    .. versionadded:: 0.1
    """

    function: LocalFunction


Action = Command | Local


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """One step of a saga.

    Attributes:
        name: unique within the saga (shown in logs and ``outboxkit saga show``).
        action: what the step does.
        compensation: what undoes it; ``None`` for a step with nothing to undo.
        timeout: how long a command (action or compensation) waits for its reply.
        retry: tries and backoff; see :class:`RetryPolicy`.

    .. versionadded:: 0.1
    """

    name: str
    action: Action
    compensation: Action | None = None
    timeout: dt.timedelta | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def compensation_timeout(self) -> dt.timedelta:
        """The reply timeout of a compensation command."""
        return self.timeout or DEFAULT_COMPENSATION_TIMEOUT


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaDefinition:
    """A saga type: a name and its ordered steps, checked when created.

    ``deadline`` bounds the whole saga, besides each step's ``timeout``: a saga
    still running that long after it started compensates (the step in flight
    too, as after a step timeout). Compensation itself is not cut short.

    Raises:
        SagaDefinitionError: a name, topic, timeout or policy is invalid.

    .. versionadded:: 0.1
    """

    name: str
    steps: Sequence[Step]
    deadline: dt.timedelta | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "saga name")
        if self.deadline is not None and (
            not isinstance(self.deadline, dt.timedelta) or self.deadline <= dt.timedelta(0)
        ):
            msg = f"saga {self.name!r}: deadline must be a positive timedelta"
            raise SagaDefinitionError(msg)
        steps: object = self.steps
        if not isinstance(steps, Sequence) or isinstance(steps, str) or not steps:
            msg = f"saga {self.name!r} needs a non-empty sequence of steps"
            raise SagaDefinitionError(msg)
        object.__setattr__(self, "steps", tuple(self.steps))
        seen: set[str] = set()
        for step in self.steps:
            _check_step(step, self.name)
            if step.name in seen:
                msg = f"saga {self.name!r} has two steps named {step.name!r}"
                raise SagaDefinitionError(msg)
            seen.add(step.name)


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        msg = f"{what} {name!r:.80} must match {_NAME.pattern}"
        raise SagaDefinitionError(msg)


def _check_step(step: object, saga: str) -> None:
    if not isinstance(step, Step):
        msg = f"saga {saga!r}: steps must be Step objects, got {type(step).__name__}"
        raise SagaDefinitionError(msg)
    _check_name(step.name, f"saga {saga!r}: step name")
    where = f"saga {saga!r}, step {step.name!r}"
    _check_action(step.action, f"{where}: action")
    if step.compensation is not None:
        _check_action(step.compensation, f"{where}: compensation")
    if step.timeout is not None:
        if not isinstance(step.timeout, dt.timedelta) or step.timeout <= dt.timedelta(0):
            msg = f"{where}: timeout must be a positive timedelta"
            raise SagaDefinitionError(msg)
        if not isinstance(step.action, Command) and not isinstance(step.compensation, Command):
            msg = f"{where}: a timeout applies to commands only, and this step sends none"
            raise SagaDefinitionError(msg)
    retry: object = step.retry  # runtime checks for untyped callers
    if not isinstance(retry, RetryPolicy):
        msg = f"{where}: retry must be a RetryPolicy"
        raise SagaDefinitionError(msg)
    if isinstance(step.action, Command) and step.timeout is None and retry.max_attempts > 1:
        # A command is tried again only when its reply is overdue.
        msg = f"{where}: retry.max_attempts > 1 needs a timeout (a command is resent on timeout)"
        raise SagaDefinitionError(msg)


def _check_action(action: object, where: str) -> None:
    if isinstance(action, Command):
        topic: object = action.topic  # runtime checks for untyped callers
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            msg = f"{where}: topic {topic!r:.80} does not match {TOPIC_PATTERN}"
            raise SagaDefinitionError(msg)
        type_: object = action.type
        if not isinstance(type_, str) or not 0 < len(type_) <= _MAX_TYPE_LENGTH:
            msg = f"{where}: type must be a non-empty str of at most {_MAX_TYPE_LENGTH} characters"
            raise SagaDefinitionError(msg)
        payload: object = action.payload
        if not callable(payload):
            msg = f"{where}: payload must be a callable building the payload from the SagaContext"
            raise SagaDefinitionError(msg)
    elif isinstance(action, Local):
        function: object = action.function
        if not callable(function):
            msg = f"{where}: Local needs a callable (session, context) -> mapping | None"
            raise SagaDefinitionError(msg)
    else:
        msg = f"{where}: must be a Command or a Local, got {type(action).__name__}"
        raise SagaDefinitionError(msg)

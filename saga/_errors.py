"""The saga errors, all under :class:`outbox.errors.SagaError`.

::

    SagaError                           (outbox.errors)
    ├── SagaDefinitionError(ValueError) a saga definition or orchestrator set-up is invalid
    ├── SagaMessageError(ValueError)    a reply or timer message lacks the saga headers or payload
    ├── SagaNotFoundError(LookupError)  no saga with that id
    ├── SagaExistsError                 start() with the id of an existing saga
    ├── SagaConflictError               another transaction changed the saga first (version check)
    └── SagaActionRefusedError          an operator's retry or abort would break the saga's rules

:class:`StepFailed` is not an error of the toolkit but control flow: a local
action raises it to fail its step for good (the saga compensates at once).

.. versionadded:: 0.1
"""

from __future__ import annotations

from outbox.errors import SagaError

__all__ = [
    "SagaActionRefusedError",
    "SagaConflictError",
    "SagaDefinitionError",
    "SagaError",
    "SagaExistsError",
    "SagaMessageError",
    "SagaNotFoundError",
    "StepFailed",
]


class SagaDefinitionError(SagaError, ValueError):
    """Invalid saga definition: fix the steps before starting sagas."""


class SagaMessageError(SagaError, ValueError):
    """The message is not a saga reply or timer (missing or malformed saga headers)."""


class SagaNotFoundError(SagaError, LookupError):
    """No saga with that id."""


class SagaExistsError(SagaError):
    """A saga with that id already exists."""


class SagaConflictError(SagaError):
    """Another transaction changed the saga first: roll back; the redelivered message is re-evaluated."""


class StepFailed(Exception):  # noqa: N818 - control flow, named for what it says
    """Raised by a local action to fail its step for good (no retry): the saga compensates.

    Any other exception from a local action is treated as transient and retried
    under the step's :class:`~saga.RetryPolicy`.

    .. versionadded:: 0.1
    """

    def __init__(self, reason: str = "step failed") -> None:
        super().__init__(reason)
        self.reason = reason


class SagaActionRefusedError(SagaError):
    """The operator action does not apply to the saga as it is now (final, already compensating, ...).

    .. versionadded:: 0.1
    """

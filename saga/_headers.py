"""The saga headers on commands, replies and timers, and parsing them strictly.

Every message a saga sends carries its coordinates, so a reply can be matched
to exactly one outstanding command and anything else recognised as stale:

======================  =========================================================
``saga_id``             the saga instance (also the message key)
``saga_type``           the saga definition's name
``saga_step``           index of the step (0-based)
``saga_attempt``        1 for the first try of that action or compensation
``saga_phase``          ``action`` or ``compensation``
``reply_to``            topic the participant answers on (commands only)
``correlation_id``      the business flow, copied unchanged from message to message
``causation_id``        id of the message that caused this one
======================  =========================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from outbox import Envelope

from ._errors import SagaMessageError

__all__ = [
    "ATTEMPT",
    "CAUSATION_ID",
    "CORRELATION_ID",
    "PHASE",
    "REPLY_TO",
    "SAGA_ID",
    "SAGA_TYPE",
    "STEP",
    "Coordinates",
    "Phase",
    "parse_coordinates",
]

SAGA_ID = "saga_id"
SAGA_TYPE = "saga_type"
STEP = "saga_step"
ATTEMPT = "saga_attempt"
PHASE = "saga_phase"
REPLY_TO = "reply_to"
CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"


class Phase(StrEnum):
    """Whether a command does a step's action or undoes it.

    .. versionadded:: 0.1
    """

    ACTION = "action"
    COMPENSATION = "compensation"


@dataclass(frozen=True, kw_only=True, slots=True)
class Coordinates:
    """Where in which saga a message belongs."""

    saga_id: uuid.UUID
    step: int
    attempt: int
    phase: Phase

    def headers(self) -> dict[str, str]:
        """The coordinates as message headers."""
        return {
            SAGA_ID: str(self.saga_id),
            STEP: str(self.step),
            ATTEMPT: str(self.attempt),
            PHASE: self.phase.value,
        }


def parse_coordinates(headers: Mapping[str, str], what: str) -> Coordinates:
    """Read the saga coordinates from message headers.

    Raises:
        SagaMessageError: a header is missing or malformed.
    """
    try:
        saga_id = uuid.UUID(headers[SAGA_ID])
        step = int(headers[STEP])
        attempt = int(headers[ATTEMPT])
        phase = Phase(headers[PHASE])
    except KeyError as exc:
        raise SagaMessageError(f"{what} lacks the {exc.args[0]!r} header") from None
    except (ValueError, TypeError) as exc:
        raise SagaMessageError(f"{what} has a malformed saga header: {exc}") from None
    if step < 0 or attempt < 1:
        msg = f"{what} has out-of-range saga headers (step {step}, attempt {attempt})"
        raise SagaMessageError(msg)
    return Coordinates(saga_id=saga_id, step=step, attempt=attempt, phase=phase)


def envelope_label(envelope: Envelope) -> str:
    """A short description of a message for errors: ``topic message <id>``."""
    return f"{envelope.topic} message {envelope.id}"

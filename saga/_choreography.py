"""Choreography helpers: carry correlation and causation from message to message.

In a choreographed saga no orchestrator holds the state; each service reacts
to the others' events and publishes its own. What keeps the flow traceable is
two headers on every event:

* ``correlation_id`` names the business flow (one order) and is copied
  unchanged from the event that caused an event to the event itself;
* ``causation_id`` is the id of the message that caused this one.

Event naming convention (docs/sagas.md): topics are ``<service>.events``; event
types are ``<Aggregate><PastTenseVerb>`` (``OrderCreated``, ``PaymentCharged``,
``PaymentDeclined``); a compensating event names what it undid
(``PaymentRefunded``, ``StockReleased``, ``OrderCancelled``); the key is the
id of the flow's aggregate (the order id), so one flow's events stay in order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from outbox import Envelope, ValidationError

from ._headers import CAUSATION_ID, CORRELATION_ID

__all__ = ["EVENT_TYPE_PATTERN", "follow_up_headers", "new_flow_headers"]

EVENT_TYPE_PATTERN = r"[A-Z][A-Za-z0-9]*"
"""Event types are PascalCase: ``<Aggregate><PastTenseVerb>``, e.g. ``PaymentDeclined``."""
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)


def new_flow_headers(correlation_id: str | None = None) -> dict[str, str]:
    """Headers for the first event of a flow: a new ``correlation_id`` unless one is given.

    .. versionadded:: 0.1
    """
    return {CORRELATION_ID: correlation_id or str(uuid.uuid4())}


def follow_up_headers(
    cause: Envelope, extra: Mapping[str, str] | None = None, *, event_type: str | None = None
) -> dict[str, str]:
    """Headers for a message caused by ``cause``: its correlation id, and its id as causation id.

    A cause without a ``correlation_id`` starts the flow: its own id becomes
    the correlation id. ``event_type``, when given, is checked against
    :data:`EVENT_TYPE_PATTERN` so a team's events follow one convention.

    Example::

        @registry.handler("orders.events", types="OrderCreated")
        def charge(message: Envelope, session: Session) -> None:
            ...
            publish(session, "payments.events", {...}, key=message.key,
                    type="PaymentCharged", headers=follow_up_headers(message))

    .. versionadded:: 0.1
    """
    if event_type is not None and not _EVENT_TYPE.fullmatch(event_type):
        msg = f"event type {event_type!r:.80} must be PascalCase <Aggregate><PastTenseVerb>"
        raise ValidationError(msg)
    headers = dict(extra or {})
    headers[CORRELATION_ID] = cause.correlation_id or str(cause.id)
    headers[CAUSATION_ID] = str(cause.id)
    return headers
